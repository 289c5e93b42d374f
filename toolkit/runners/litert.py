"""TFLite models on the LiteRT interpreter (``ai_edge_litert``), loaded from bytes.

Loading from bytes (``model_content=``) rather than a path matters: given a truncated file
by path, the interpreter can crash the whole process. We also check the FlatBuffer
identifier ("TFL3" at offset 4) before handing the bytes over.

The interpreter is not thread-safe: one runner instance must be used from one thread at a
time (``infer`` holds ``_lock`` around the call, so a shared instance is still safe, merely serialised).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from toolkit._quiet import quiet_stderr
from toolkit.errors import DataError
from toolkit.runners import RUNTIMES, Runtime
from toolkit.runners.base import Runner, TensorSpec

TFLITE_IDENTIFIER = b"TFL3"


def _spec(detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = detail["dtype"] in (np.int8, np.uint8, np.int16) and scale
    return TensorSpec(
        name=detail["name"],
        shape=tuple(int(s) for s in detail.get("shape_signature", detail["shape"])),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )


class LiteRTRunner(Runner):
    name = "litert"

    def __init__(self, content: bytes, path: Path | None = None, threads: int | None = None,
                 use_xnnpack: bool = True, resolver: str | None = None):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if len(content) < 8 or content[4:8] != TFLITE_IDENTIFIER:
            raise DataError(f"{path or 'model'} is not a TFLite FlatBuffer (no 'TFL3' identifier)")
        # AUTO: builtin kernels with the XNNPACK delegate; the others for runtimes that compare against it
        resolver = resolver or ("AUTO" if use_xnnpack else "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
        self.resolver = resolver
        resolver = OpResolverType[resolver]
        try:
            with quiet_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate" is noise
                self.interpreter = Interpreter(
                    model_content=content, num_threads=threads, experimental_op_resolver_type=resolver
                )
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise DataError(f"{path or 'model'} cannot be loaded by LiteRT: {exc}") from None
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise DataError(f"{path}: expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        self.input_spec, self.output_spec = _spec(self._in), _spec(self._out)
        self.threads = threads
        self.content = content
        self.use_xnnpack = use_xnnpack
        self._batch = None
        self._lock = threading.Lock()  # a file whose batch is fixed: fed in pieces by infer (Runner.fixed_batch);
        # run_raw (what bench times) takes only that size

    @classmethod
    def load(cls, path: Path, **kwargs) -> LiteRTRunner:
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror}") from None
        return cls(content, path=path, **kwargs)

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self.interpreter.resize_tensor_input(self._in["index"], [batch, *self._in["shape"][1:]])
            self.interpreter.allocate_tensors()
            self._batch = batch

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """Float images -> the model's input dtype (quantized with the tensor's own params)."""
        if self.input_spec.scale is None:
            return np.ascontiguousarray(self.arrange(images), dtype=self.input_spec.dtype)
        return super().prepare(images)

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """One invoke on an input already in the model's dtype; returns the raw output (bench)."""
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            raise DataError(f"this file's batch is fixed at {self.fixed_batch} (its input shape "
                            f"{list(self.input_spec.shape)}): it cannot run a batch of {x.shape[0]} in one invoke")
        self._resize(x.shape[0])
        self.interpreter.set_tensor(self._in["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out["index"])

    @property
    def providers(self) -> list[str]:
        """["XNNPACK"] when the delegate took the graph (a DELEGATE node), else the kernels that ran."""
        if self.resolver == "AUTO":
            delegated = "DELEGATE" in {op["op_name"] for op in self.interpreter._get_ops_details()}
            return ["XNNPACK"] if delegated else ["builtin kernels"]
        return {"BUILTIN_REF": ["reference kernels"]}.get(self.resolver, ["builtin kernels"])

    def op_names(self) -> list[str]:
        """Operator names as written in the model (without the XNNPACK delegate's rewrite)."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        plain = Interpreter(
            model_content=self.content,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        return [op["op_name"] for op in plain._get_ops_details()]

    def tensor_dtypes(self) -> dict[str, str]:
        return {t["name"]: np.dtype(t["dtype"]).name for t in self.interpreter.get_tensor_details()}


def _open(path: Path, *, device: str = "cpu", threads: int | None = None, **kwargs) -> LiteRTRunner:
    return LiteRTRunner.load(path, threads=threads, **kwargs)


RUNTIMES.register(Runtime(
    name="litert",
    linestyle="-",
    formats=("tflite",),
    devices=("cpu",),
    summary="the LiteRT interpreter (ai-edge-litert) with the XNNPACK delegate",
    open=_open,
    default_for=("tflite",),
    other_devices="the ai-edge-litert wheel ships no GPU delegate for Linux",
    timed_call="set_tensor + invoke + get_tensor",
    order=10,
))
