"""ONNX models on onnxruntime.

The model is checked with ``onnx.checker`` before a session is made (an empty file parses as
an empty model), and loaded from bytes after its external data (if any) has been confirmed to
live inside the model's directory. onnxruntime falls back from CUDA to CPU silently; we ask
for the providers explicitly and report the ones the session actually uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.errors import DataError, DeviceUnavailableError
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
        self.providers = self.session.get_providers()
        if not allow_fallback and requested[0] not in self.providers:
            raise DeviceUnavailableError(
                f"onnxruntime did not use {requested[0]} (session providers: {self.providers})"
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

    def _infer(self, images: np.ndarray) -> np.ndarray:
        return self.run_raw(images).astype(np.float32, copy=False)


def _dim(d):
    return d if isinstance(d, int) else None
