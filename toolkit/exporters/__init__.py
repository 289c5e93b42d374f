"""Exporters, registered by variant name next to their code (see tflite.py, onnx.py).

An exporter turns the trained Keras model into one artifact file. Order in the registry is
the order of export and of every table (float before quantized, TFLite before ONNX).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import UsageError


@dataclass(frozen=True)
class Exporter:
    variant: str  # e.g. "tflite-int8": the artifact's name everywhere
    format: str  # "tflite" or "onnx": selects the runner
    quantization: str  # "none", "fp16", "dynamic" or "int8"
    suffix: str  # file extension
    build: Callable  # build(ctx, path) -> dict of extra manifest fields
    default: bool  # made when --quantize is not given
    available: Callable[[], bool] = lambda: True  # optional dependency installed?
    in_all: bool = True  # part of --format all (when available)
    reproducible: bool = True  # the same model, data and settings give the same bytes (verify --rebuild)

    @property
    def calibrated(self) -> bool:
        return self.quantization == "int8"


@dataclass(frozen=True)
class OpCheck:
    format: str
    what: str  # what is checked, for the table
    run: Callable  # run(ctx) -> None; raises ConversionError naming the unsupported ops


REGISTRY: dict[str, Exporter] = {}
OP_CHECKS: dict[str, OpCheck] = {}  # format -> its op-support check, run before any variant is built
_MODULES = ("toolkit.exporters.tflite", "toolkit.exporters.onnx", "toolkit.exporters.micro",
            "toolkit.exporters.openvino")
FORMATS = ("tflite", "onnx", "tflite-micro", "openvino")
QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")


def register(variant: str, *, format: str, quantization: str, suffix: str, default: bool,
             available: Callable[[], bool] = lambda: True, reproducible: bool = True):
    def wrap(fn: Callable) -> Callable:
        REGISTRY[variant] = Exporter(variant, format, quantization, suffix, fn, default, available,
                                     reproducible=reproducible)
        return fn

    return wrap


def op_check(fmt: str, what: str):
    """Register a format's op-support check (next to the format's exporter)."""

    def wrap(fn: Callable) -> Callable:
        OP_CHECKS[fmt] = OpCheck(fmt, what, fn)
        return fn

    return wrap


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def by_variant(names: tuple[str, ...]) -> list[Exporter]:
    """The exporters of these variant names (as a config records them), in registry order."""
    _load_all()
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise UsageError(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(REGISTRY)})")
    return [e for e in REGISTRY.values() if e.variant in names]


def select(fmt: str | tuple[str, ...], quantize: tuple[str, ...] | None) -> list[Exporter]:
    """Variants for ``--format FMT [FMT ...] [--quantize MODE ...]`` (a quantization mode must exist in
    at least one of the formats)."""
    _load_all()
    asked = (fmt,) if isinstance(fmt, str) else tuple(fmt)
    unknown = [f for f in asked if f not in (*FORMATS, "all")]
    if unknown or not asked:
        raise UsageError(f"--format must be among {', '.join((*FORMATS, 'all'))}, got {' '.join(unknown) or 'none'}")
    fmt = "all" if "all" in asked else " ".join(asked)
    formats = FORMATS if fmt == "all" else asked
    chosen = []
    for exp in REGISTRY.values():
        if exp.format not in formats:
            continue
        if fmt == "all" and not exp.available():
            continue  # optional formats join `all` only when their dependency is installed
        if quantize is None:
            if exp.default or fmt == "all":
                chosen.append(exp)
        elif exp.quantization in quantize:
            chosen.append(exp)
    for exp in chosen:
        if not exp.available():
            from toolkit.errors import DeviceUnavailableError

            extra = {"tflite-micro": "micro"}.get(exp.format, exp.format)
            raise DeviceUnavailableError(f"--format {exp.format}: its runtime is not installed",
                                         hint=f"install it with `pip install -e '.[{extra}]'`")
    if quantize:
        for mode in quantize:
            if mode not in QUANTIZE_MODES:
                raise UsageError(f"--quantize must be among {', '.join(QUANTIZE_MODES)}, got {mode!r}")
            if not any(e.quantization == mode for e in chosen):
                raise UsageError(f"--format {fmt} has no {mode!r} variant "
                                 f"(available: {', '.join(e.variant for e in REGISTRY.values() if e.format in formats)})")
    return chosen


def plain_companion(path: Path, plain: bytes) -> dict:
    """The plain int8 model written beside an accuracy-controlled one (a companion of the artifact),
    for parity's side-by-side test figures."""
    from toolkit.artifacts import atomic_write_bytes
    from toolkit.provenance import sha256_bytes

    plain_path = path.with_name(path.stem + ".plain" + path.suffix)
    atomic_write_bytes(plain_path, plain)
    return {"path": plain_path.name, "bytes": len(plain), "sha256": sha256_bytes(plain), "role": "plain-int8"}


@dataclass
class ExportContext:
    """What exporters share: the model, calibration data and a scratch directory. Conversions
    are made once and shared by the variants that need them (failures too: ``failures``)."""

    model: object  # keras.Model
    model_path: Path
    workdir: Path
    calibration_images: object  # float32 (N, *model input shape), preprocessed as the manifest says
    calibration_method: str
    opset: int
    _saved_model: Path | None = None
    _float_onnx: Path | None = None
    tflite_bytes: dict = field(default_factory=dict)  # quantization mode -> converted model
    openvino_model: object = None  # ov.Model, converted once
    failures: dict = field(default_factory=dict)  # conversion key -> ConversionError
    timings: dict = field(default_factory=dict)  # conversion key -> seconds it took
    _charged: set = field(default_factory=set)
    # accuracy-controlled int8 (toolkit/accuracy_control.py): settings, the validation split
    # (loaded on first use), per-format caches and the results shared by variants
    control: object = None  # ControlSettings or None
    validation: object = None  # () -> accuracy_control.Validation
    log: object = print  # (str) -> None: progress lines
    control_cache: dict = field(default_factory=dict)
    control_results: dict = field(default_factory=dict)

    def charge(self, key: str) -> float:
        """The seconds of a shared conversion, counted once: for the first variant that uses it
        (the op checks run conversions before any variant is built)."""
        if key in self._charged or key not in self.timings:
            return 0.0
        self._charged.add(key)
        return self.timings[key]

    def saved_model(self) -> Path:
        """The model as a TF SavedModel (what the TFLite converter reads), made once."""
        if self._saved_model is None:
            from toolkit._quiet import quiet_stderr

            path = self.workdir / "saved_model"
            with quiet_stderr():
                self.model.export(str(path), format="tf_saved_model", verbose=False)
            self._saved_model = path
        return self._saved_model
