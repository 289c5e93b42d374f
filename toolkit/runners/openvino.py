"""OpenVINO on the CPU (the ``[openvino]`` extra): runs the exported ``.onnx`` and ``.tflite``
files (OpenVINO reads both) and its own IR (``.xml`` + ``.bin``, the ``openvino`` variants).

Two runtimes, because OpenVINO's CPU plugin does not compute what the model says by default: on
CPUs with AVX512_BF16 or AMX it runs float models in bf16 (2.4 ms vs 5.1 ms at f32 for the seed
CNN at batch 32 on this project's machines). ``openvino`` pins ``INFERENCE_PRECISION_HINT=f32``;
``openvino-bf16`` asks for bf16 (what a user of OpenVINO's defaults gets there), is judged by the
reduced-precision gates, exists only where the CPU has bf16, and is in bench's default plan there. Every row records the precision the compiled model reports, and parity checks
each runtime under exactly the settings bench times.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from toolkit.errors import DataError, NotReadableHere, first_line, whole_message
from toolkit.runners import RUNTIMES, Runtime
from toolkit.runners.base import Runner, TensorSpec

INSTALL_HINT = "install it with `pip install -e '.[openvino]'`"
_DTYPES = {"f32": "float32", "f16": "float16", "i8": "int8", "u8": "uint8", "i64": "int64"}


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _core():
    import openvino as ov

    return ov.Core()


@functools.cache
def cpu_has_bf16() -> bool:
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _read(path: Path):
    """Read an artifact with the same checks the format's own runtime applies first."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from toolkit.runners.onnxrt import check_onnx_file

        check_onnx_file(path)
    elif suffix == ".tflite":
        from toolkit.runners.litert import TFLITE_IDENTIFIER

        head = path.read_bytes()[:8]
        if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
            raise DataError(f"{path} is not a TFLite FlatBuffer (no 'TFL3' identifier)")
    elif suffix == ".xml":
        if not path.with_suffix(".bin").is_file():
            raise DataError(f"{path}: its weights {path.with_suffix('.bin').name} are missing")
    else:
        raise DataError(f"{path}: OpenVINO runs .onnx, .tflite and .xml (IR) files here, not {suffix or 'this'}")
    try:
        return _core().read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError with its own text
        # an ONNX or TFLite file that passed its format's checks above: OpenVINO's reader for it lacks something
        kind = DataError if suffix == ".xml" else NotReadableHere
        raise kind(f"OpenVINO cannot read {path}: {first_line(exc)}", detail=whole_message(exc)) from None


def _tflite_quantization(path: Path) -> tuple[TensorSpec | None, TensorSpec | None]:
    """The int8 input/output scale and zero point of a TFLite model (OpenVINO keeps the int8
    tensors but not their parameters in its API): read from the file with LiteRT."""
    from toolkit.runners.litert import LiteRTRunner

    runner = LiteRTRunner.load(path, use_xnnpack=False)
    return runner.input_spec, runner.output_spec


class OpenVINORunner(Runner):
    name = "openvino"

    def __init__(self, path: Path, threads: int | None = None, precision: str = "f32"):
        path = Path(path)
        model = _read(path)
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = _core().compile_model(model, "CPU", config)
        except Exception as exc:
            raise DataError(f"OpenVINO cannot compile {path} ({precision}): {first_line(exc)}",
                            detail=whole_message(exc)) from None
        if len(self.compiled.inputs) != 1 or len(self.compiled.outputs) != 1:
            raise DataError(f"{path}: expected 1 input and 1 output, got {len(self.compiled.inputs)} and "
                            f"{len(self.compiled.outputs)}")
        self.request = self.compiled.create_infer_request()
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # what the compiled model will compute in
        self.precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.threads = threads
        self._out = self.compiled.outputs[0]
        self.input_spec = self._spec(self.compiled.inputs[0])
        self.output_spec = self._spec(self._out)
        if path.suffix.lower() == ".tflite" and "int8" in (self.input_spec.dtype, self.output_spec.dtype):
            self.input_spec, self.output_spec = _tflite_quantization(path)
        self._lock = threading.Lock()

    @staticmethod
    def _spec(port) -> TensorSpec:
        shape = tuple(None if d.is_dynamic else d.get_length() for d in port.get_partial_shape())
        element = port.get_element_type().get_type_name()
        names = port.get_names()
        return TensorSpec(sorted(names)[0] if names else "", shape, _DTYPES.get(element, element))

    @classmethod
    def load(cls, path: Path, **kwargs) -> OpenVINORunner:
        return cls(Path(path), **kwargs)

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer({0: x})[self._out]

    @property
    def providers(self) -> list[str]:
        return [f"OpenVINO CPU ({self.precision})"]

    def bench_fields(self) -> dict:
        import openvino as ov

        return {"inference_precision": self.precision, "openvino": ov.get_version()}


def _unavailable(device: str) -> str | None:
    return None if available() else f"OpenVINO is not installed ({INSTALL_HINT})"


def _unavailable_bf16(device: str) -> str | None:
    if not available():
        return _unavailable(device)
    if not cpu_has_bf16():
        return "this CPU has no bf16 support (OpenVINO's OPTIMIZATION_CAPABILITIES lacks BF16): it would run f32"
    return None


def _open(path: Path, *, device: str = "cpu", threads: int | None = None) -> OpenVINORunner:
    return OpenVINORunner(path, threads=threads, precision="f32")


def _open_bf16(path: Path, *, device: str = "cpu", threads: int | None = None) -> OpenVINORunner:
    return OpenVINORunner(path, threads=threads, precision="bf16")


FORMATS = ("openvino", "onnx", "tflite")
OTHER_DEVICES = "the openvino wheel's GPU plugin is for Intel GPUs, not CUDA"

RUNTIMES.register(Runtime(
    name="openvino",
    linestyle="-.",
    formats=FORMATS,
    devices=("cpu",),
    summary="OpenVINO's CPU plugin at f32 (INFERENCE_PRECISION_HINT=f32), on IR, ONNX and TFLite files",
    open=_open,
    unavailable=_unavailable,
    default_for=("openvino",),
    other_devices=OTHER_DEVICES,
    timed_call="infer_request.infer",
    order=50,
))

RUNTIMES.register(Runtime(
    name="openvino-bf16",
    linestyle=(0, (3, 1, 1, 1, 1, 1)),
    formats=FORMATS,
    devices=("cpu",),
    summary="OpenVINO's CPU plugin in bf16, its default configuration on CPUs with AVX512_BF16/AMX",
    open=_open_bf16,
    unavailable=_unavailable_bf16,
    in_default_set=False,  # parity checks it when asked (--runtimes); bench measures it by default where it exists
    default_where_available=True,
    reduced_precision="bf16",
    other_devices=OTHER_DEVICES,
    timed_call="infer_request.infer",
    order=51,
))
