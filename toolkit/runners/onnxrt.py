"""ONNX models on onnxruntime.

The model is checked with ``onnx.checker`` before a session is made (an empty file parses as
an empty model), and loaded from bytes after its external data (if any) has been confirmed to
live inside the model's directory. onnxruntime falls back from CUDA to CPU silently; we ask
for the providers explicitly and report the ones the session actually uses.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from toolkit.errors import DataError, DeviceUnavailableError, first_line, whole_message
from toolkit.runners import RUNTIMES, Runtime
from toolkit.runners.base import Runner, TensorSpec

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
}


def check_onnx_file(path: Path):
    """Parse and fully check an ONNX file; return the ModelProto. Raises DataError."""
    import onnx

    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    try:
        model = onnx.load_from_string(content)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise DataError(f"{path} is not a valid ONNX protobuf ({type(exc).__name__})") from None
    if not model.graph.node:
        raise DataError(f"{path} holds no ONNX graph (empty or not an ONNX file)")
    root = path.parent.resolve()
    external = False
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                external = True
                target = (root / entry.value).resolve()
                if root != target.parent and root not in target.parents:
                    raise DataError(f"{path}: external data {entry.value!r} lies outside {root}")
    try:
        # a model with its weights beside it (torch.onnx.export writes NAME.onnx.data): checked from its path, so
        # the checker finds them, and returned with them loaded
        onnx.checker.check_model(str(path) if external else model, full_check=True)
        if external:
            model = onnx.load(str(path))
    except Exception as exc:
        raise DataError(f"{path} fails onnx.checker: {first_line(exc)}", detail=whole_message(exc)) from None
    return model


# Ops onnxruntime itself places on the CPU next to a GPU provider: they compute on shapes (a few
# integers), not on the images. Any other op on the CPU means the model did not run on the GPU.
SHAPE_OPS = frozenset({"Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Reshape",
                       "ConstantOfShape", "Range", "Identity", "Constant"})
_PLACED = re.compile(r"(All nodes|Node\(s\)) placed on \[(\w+)\]\. Number of nodes: (\d+)")
_NODE = re.compile(r"(?:^|VerifyEachNodeIsAssignedToAnEp\])\s{2,}([\w.]+) \((.*)\)\s*$")


def node_placement(log: str) -> dict[str, dict]:
    """{provider: {"nodes": N, "op_types": {op: count}}} from onnxruntime's verbose "Node placements"
    log (with one provider it names no op types)."""
    placement: dict[str, dict] = {}
    current = None
    for line in log.splitlines():
        found = _PLACED.search(line)
        if found:
            current = placement.setdefault(found.group(2), {"nodes": int(found.group(3)), "op_types": {}})
            continue
        node = _NODE.search(line) if current is not None else None
        if node:
            current["op_types"][node.group(1)] = current["op_types"].get(node.group(1), 0) + 1
        elif current is not None and line.strip():
            current = None
    return placement


def _placement_of(model_bytes: bytes, opts_factory, requested: list[str]) -> dict[str, dict]:
    """Where onnxruntime puts each node for these providers: a throw-away session with verbose logging
    (the timed session logs at error level only, so its runs are not slowed by logging)."""
    import onnxruntime as ort

    from toolkit._quiet import captured_stderr

    opts = opts_factory()
    opts.log_severity_level = 0
    with captured_stderr() as captured:
        ort.InferenceSession(model_bytes, sess_options=opts, providers=requested)
    return node_placement(captured["text"])


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int | None = None,
                 allow_fallback: bool = False, optimization: str = "all", strict_device: bool = False,
                 tf32: bool = False):
        import onnxruntime as ort

        model = check_onnx_file(path)

        def options():
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.graph_optimization_level = {
                "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            }[optimization]
            if threads:
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
            return opts

        opts = options()
        requested = providers or ["CPUExecutionProvider"]
        missing = [p for p in requested if p not in ort.get_available_providers()]
        if missing and not allow_fallback:
            raise DeviceUnavailableError(
                f"onnxruntime execution provider(s) {', '.join(missing)} not available "
                f"(available: {', '.join(ort.get_available_providers())})",
                hint="install onnxruntime-gpu on a CUDA machine, or pass --allow-fallback",
            )
        if missing:
            requested = [p for p in requested if p not in missing] or ["CPUExecutionProvider"]
        content = model.SerializeToString()
        # CUDA's float32 convolutions and matrix products use TF32 tensor cores unless told not to
        # (onnxruntime's use_tf32, on by default): pinned, and recorded, either way
        self.precision = None
        if "CUDAExecutionProvider" in requested:
            self.precision = "tf32" if tf32 else "fp32"
            requested = [(p, {"use_tf32": "1" if tf32 else "0"}) if p == "CUDAExecutionProvider" else p
                         for p in requested]
        try:
            self.placement = _placement_of(content, options, requested) if strict_device else None
            self.session = ort.InferenceSession(content, sess_options=opts, providers=requested)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise DataError(f"onnxruntime cannot load {path}: {first_line(exc)}", detail=whole_message(exc)) from None
        requested = [p[0] if isinstance(p, tuple) else p for p in requested]
        self.requested_providers = requested
        self._providers = self.session.get_providers()
        if not allow_fallback and requested[0] not in self._providers:
            raise DeviceUnavailableError(
                f"onnxruntime did not use {requested[0]} (session providers: {self._providers})"
            )
        if strict_device and self.cpu_compute_ops():
            raise DeviceUnavailableError(
                f"onnxruntime put compute nodes of {path.name} on the CPU beside {requested[0]}: "
                + ", ".join(f"{op} x{n}" for op, n in sorted(self.cpu_compute_ops().items()))
            )
        self.threads = threads
        self.optimization = optimization
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise DataError(f"{path}: expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}")
        self._in_name, self._out_name = inputs[0].name, outputs[0].name
        self.input_spec = TensorSpec(inputs[0].name, tuple(_dim(d) for d in inputs[0].shape),
                                     _DTYPES.get(inputs[0].type, inputs[0].type))
        self.output_spec = TensorSpec(outputs[0].name, tuple(_dim(d) for d in outputs[0].shape),
                                      _DTYPES.get(outputs[0].type, outputs[0].type))

    @classmethod
    def load(cls, path: Path, **kwargs) -> OnnxRuntimeRunner:
        return cls(Path(path), **kwargs)

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self._out_name], {self._in_name: x})[0]

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really has (onnxruntime may drop a requested one)."""
        return list(self._providers)

    def cpu_compute_ops(self) -> dict[str, int]:
        """Op types onnxruntime placed on its CPU provider that compute on data, not shapes."""
        cpu = (self.placement or {}).get("CPUExecutionProvider", {})
        if cpu and not cpu["op_types"]:  # "All nodes placed on [CPUExecutionProvider]"
            return {"(every node)": cpu["nodes"]}
        return {op: n for op, n in cpu.get("op_types", {}).items() if op not in SHAPE_OPS}

    def bench_fields(self) -> dict:
        import onnxruntime as ort

        return {"graph_optimization": self.optimization, "onnxruntime_version": ort.__version__,
                **({"inference_precision": self.precision} if self.precision else {}),
                **({"node_placement": self.placement} if self.placement is not None else {})}

    def used_device(self) -> str:
        gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
        on_gpu = self._providers and self._providers[0] in gpu and not self.cpu_compute_ops()
        return "cuda" if on_gpu else "cpu"


def _dim(d):
    return d if isinstance(d, int) else None


@functools.cache
def _missing_provider(wanted: str) -> str | None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if wanted not in available:
        return f"onnxruntime offers no {wanted} (available: {', '.join(available)}; install onnxruntime-gpu)"
    return None


def _tensorrt_reason(device: str) -> str | None:
    missing = _missing_provider("TensorrtExecutionProvider")
    if missing:
        return missing
    import ctypes

    try:  # onnxruntime lists the provider it was built with, then drops it silently if TensorRT is absent
        ctypes.CDLL("libnvinfer.so.10")
    except OSError:
        return ("onnxruntime offers TensorrtExecutionProvider, but TensorRT's libnvinfer.so.10 cannot be loaded "
                "(install TensorRT 10, e.g. pip install tensorrt-cu13, and put its libraries on LD_LIBRARY_PATH)")
    return None


def _open(path: Path, *, device: str = "cpu", threads: int | None = None, **kwargs) -> OnnxRuntimeRunner:
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    # on the GPU a compute node placed on the CPU fails the session, not run there unseen (onnxruntime's
    # own session.disable_cpu_ep_fallback also refuses the shape nodes it puts on the CPU by design)
    return OnnxRuntimeRunner(Path(path), providers=providers, threads=threads, strict_device=device == "cuda",
                             **kwargs)


def _open_tf32(path: Path, *, device: str = "cuda", threads: int | None = None) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(Path(path), providers=["CUDAExecutionProvider"], threads=threads, strict_device=True,
                             tf32=True)


def _open_trt(path: Path, *, device: str = "cuda", threads: int | None = None) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(Path(path), providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                             threads=threads, strict_device=True)


RUNTIMES.register(Runtime(
    name="onnxruntime",
    linestyle="--",
    formats=("onnx",),
    devices=("cpu", "cuda"),
    summary="onnxruntime: the CPU execution provider, or CUDA with --device cuda",
    open=_open,
    unavailable=lambda device: _missing_provider("CUDAExecutionProvider") if device == "cuda" else None,
    default_for=("onnx",),
    timed_call="session.run",
    order=20,
))

RUNTIMES.register(Runtime(
    name="onnxruntime-tf32",
    linestyle=(0, (3, 1)),
    formats=("onnx",),
    devices=("cuda",),
    summary="onnxruntime CUDA with TF32 tensor cores for float32 convolutions and matrix products (use_tf32=1)",
    open=_open_tf32,
    unavailable=lambda device: _missing_provider("CUDAExecutionProvider"),
    other_devices="TF32 is a CUDA tensor-core mode",
    reduced_precision="tf32",
    timed_call="session.run",
    order=22,
))

RUNTIMES.register(Runtime(
    name="onnxruntime-trt",
    linestyle=(0, (5, 1)),
    formats=("onnx",),
    devices=("cuda",),
    summary="onnxruntime with the TensorRT execution provider (CUDA only)",
    open=_open_trt,
    unavailable=_tensorrt_reason,
    other_devices="TensorRT runs only with --device cuda",
    timed_call="session.run",
    order=21,
))
