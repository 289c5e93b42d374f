"""ONNX models on onnxruntime.

The model is checked with ``onnx.checker`` before a session is made (an empty file parses as
an empty model), and loaded from bytes after its external data (if any) has been confirmed to
live inside the model's directory. onnxruntime falls back from CUDA to CPU silently; we ask
for the providers explicitly and report the ones the session actually uses.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from toolkit.errors import DataError, DeviceUnavailableError
from toolkit.runners import Runtime, register
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
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                target = (root / entry.value).resolve()
                if root != target.parent and root not in target.parents:
                    raise DataError(f"{path}: external data {entry.value!r} lies outside {root}")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise DataError(f"{path} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    return model


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int | None = None,
                 allow_fallback: bool = False, optimization: str = "all", strict_device: bool = False):
        import onnxruntime as ort

        model = check_onnx_file(path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        if strict_device:
            # A node without a kernel on the requested EP must fail the session, not move to CPU.
            opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
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
        try:
            self.session = ort.InferenceSession(
                model.SerializeToString(), sess_options=opts, providers=requested
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise DataError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None
        self.requested_providers = requested
        self._providers = self.session.get_providers()
        if not allow_fallback and requested[0] not in self._providers:
            raise DeviceUnavailableError(
                f"onnxruntime did not use {requested[0]} (session providers: {self._providers})"
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

    def bench_fields(self) -> dict:
        return {"graph_optimization": self.optimization}

    def used_device(self) -> str:
        gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
        return "cuda" if self._providers and self._providers[0] in gpu else "cpu"

    def _infer(self, images: np.ndarray) -> np.ndarray:
        return self.run_raw(images).astype(np.float32, copy=False)


def _dim(d):
    return d if isinstance(d, int) else None


@functools.cache
def _missing_provider(wanted: str) -> str | None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if wanted not in available:
        return f"onnxruntime offers no {wanted} (available: {', '.join(available)}; install onnxruntime-gpu)"
    return None


def _open(path: Path, *, device: str = "cpu", threads: int | None = None, **kwargs) -> OnnxRuntimeRunner:
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    # on the GPU a node without a CUDA kernel must fail the session, not run on the CPU unseen
    return OnnxRuntimeRunner(Path(path), providers=providers, threads=threads, strict_device=device == "cuda",
                             **kwargs)


def _open_trt(path: Path, *, device: str = "cuda", threads: int | None = None) -> OnnxRuntimeRunner:
    runner = OnnxRuntimeRunner(Path(path), providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                               threads=threads, strict_device=True)
    runner.name = "onnxruntime-trt"
    return runner


register(Runtime(
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

register(Runtime(
    name="onnxruntime-trt",
    linestyle=(0, (5, 1)),
    formats=("onnx",),
    devices=("cuda",),
    summary="onnxruntime with the TensorRT execution provider (CUDA only)",
    open=_open_trt,
    unavailable=lambda device: _missing_provider("TensorrtExecutionProvider"),
    other_devices="TensorRT runs only with --device cuda",
    timed_call="session.run",
    order=21,
))
