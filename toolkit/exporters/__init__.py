"""Formats as plugins: one module (or package) per artifact format in this package, each declaring
its ``Format`` and registering its variants (``Exporter``) next to its code, found by scanning the
package. Adding a format is adding a module: the CLI's choices, footprint, the report, accuracy
control and ``--diagnose`` read what the format declares here (tests/test_exporters.py fails when any
other file of the package names a format or variant).

An exporter turns the Keras model into one artifact file. Order in the registry is the order of export
and of every table: formats by their ``order``, then each format's variants as it registers them (float
before quantized).

The formats' registry is ``FORMATS`` (a ``toolkit.plugins.Registry``, as runtimes and dataset sources have):
``FORMATS.register(Format(...))`` in a format's module, ``FORMATS.get(name)``, ``names()`` and ``load_all()``
elsewhere; loading it also fills ``REGISTRY``, the variants in export order. The callables a plugin hands over
(``Exporter.build``, ``OpCheck.run``, ``Format.footprint``) have their signatures as Protocols here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from toolkit.errors import UsageError
from toolkit.plugins import Registry

ENTRY_POINT_GROUP = "toolkit.formats"  # formats other distributions provide (as toolkit.runtimes for runtimes)


class Build(Protocol):
    """``Exporter.build``: write the variant's artifact to ``path``; return the extra fields of its manifest
    entry. Raises ConversionError when the conversion fails."""

    def __call__(self, ctx: ExportContext, path: Path, /) -> dict: ...


class RunOpCheck(Protocol):
    """``OpCheck.run``: None when the format's converter takes every op of ``ctx.model``, else a
    ConversionError naming the unsupported ones."""

    def __call__(self, ctx: ExportContext, /) -> None: ...


class Footprint(Protocol):
    """``Format.footprint``: the footprint row's fields (model_bytes, ops, arena_bytes, or a ``note`` where no
    microcontroller arena is measured) for an int8 variant's manifest ``entry`` and verified file ``path``."""

    def __call__(self, entry: dict, path: Path, /) -> dict: ...


@dataclass(frozen=True)
class Format:
    """What the rest of the toolkit needs to know about an artifact format."""

    name: str  # "tflite", "onnx", ...: the manifest's ``format`` and --format's choice
    summary: str  # one line for --help
    order: int  # position in the registry: export order and every table
    extra: str | None = None  # the pip extra that installs what it needs (None: in the base install)
    lists_ops: bool = False  # manifest entries list the operators the runtime resolved (runner.op_names())
    footprint: Footprint | None = None  # the footprint row of its int8 variants
    # the module beside it whose backend() registers its accuracy-control Backend (toolkit/accuracy_control.py),
    # imported on first use
    control: str | None = None
    # the module beside it whose diagnose(d: toolkit.diagnose.Diagnosis) gives `parity --diagnose`'s per-layer errors
    diagnose: str | None = None
    diagnose_instead: str | None = None  # the variant to diagnose instead (the same model bytes elsewhere)


@dataclass(frozen=True)
class Exporter:
    variant: str  # e.g. "tflite-int8": the artifact's name everywhere
    format: str  # "tflite" or "onnx": selects the runner
    quantization: str  # "none", "fp16", "dynamic" or "int8"
    suffix: str  # file extension
    build: Build
    default: bool  # made when --quantize is not given
    available: Callable[[], bool] = lambda: True  # optional dependency installed?
    in_all: bool = True  # part of --format all (when available)
    reproducible: bool = True  # the same model, data and settings give the same bytes (verify --rebuild)
    controllable: bool = False  # --max-accuracy-drop / --recipe search a mixed-precision model for it
    # what the report's advice says of it: "integer-only" (int8 in and out: microcontrollers, NPUs),
    # "closest-float" (the float export closest to the trained model)
    roles: tuple[str, ...] = ()
    style: tuple[str, str] | None = None  # (colour, marker) in every plot (toolkit/style.py), else from its name
    # int8 weights: the grid's levels each side of zero (per channel, symmetric: step = the channel's largest
    # magnitude / weight_levels), the grid learned rounding puts the weights on (toolkit/quantize/rounding.py)
    weight_levels: int = 127

    @property
    def calibrated(self) -> bool:
        return self.quantization == "int8"


@dataclass(frozen=True)
class OpCheck:
    format: str
    what: str  # what is checked, for the table
    run: RunOpCheck


_EXPORTERS: dict[str, Exporter] = {}  # variant -> exporter, as registered
OP_CHECKS: dict[str, OpCheck] = {}  # format -> its op-support check, run before any variant is built
QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")
REGISTRY: dict[str, Exporter] = {}  # variant -> exporter, in export order, filled when FORMATS is loaded


def _order_variants() -> None:
    """Once the formats are scanned: every variant names a declared format; REGISTRY in export order (formats by
    their order, each format's variants as registered)."""
    formats = FORMATS.load_all()
    for exp in _EXPORTERS.values():
        if exp.format not in formats:
            raise ValueError(f"variant {exp.variant} names format {exp.format!r}, which no module declares")
    REGISTRY.clear()
    REGISTRY.update(sorted(_EXPORTERS.items(), key=lambda kv: formats[kv[1].format].order))


FORMATS: Registry[Format] = Registry("format", __name__, key=lambda f: f.name, order=lambda f: f.order,
                                     group=ENTRY_POINT_GROUP, on_load=_order_variants)
# the registry's methods under the names callers and third-party formats have used
register_format, get_format, load_all = FORMATS.register, FORMATS.get, FORMATS.load_all


def register(variant: str, *, format: str, quantization: str, suffix: str, default: bool,
             available: Callable[[], bool] = lambda: True, reproducible: bool = True, controllable: bool = False,
             roles: tuple[str, ...] = (), style: tuple[str, str] | None = None,
             weight_levels: int = 127) -> Callable[[Build], Build]:
    """Register the decorated ``build`` as the exporter of ``variant`` (a variant of a declared format)."""
    if quantization not in QUANTIZE_MODES:
        raise ValueError(f"{variant}: quantization {quantization!r} is not one of {QUANTIZE_MODES}")

    def wrap(fn: Build) -> Build:
        _EXPORTERS[variant] = Exporter(variant, format, quantization, suffix, fn, default, available,
                                       reproducible=reproducible, controllable=controllable, roles=roles,
                                       style=style, weight_levels=weight_levels)
        return fn

    return wrap


def op_check(fmt: str, what: str) -> Callable[[RunOpCheck], RunOpCheck]:
    """Register a format's op-support check (next to the format's exporter)."""

    def wrap(fn: RunOpCheck) -> RunOpCheck:
        OP_CHECKS[fmt] = OpCheck(fmt, what, fn)
        return fn

    return wrap


def formats() -> tuple[str, ...]:
    """The format names, in order (--format's choices, with "all")."""
    return tuple(FORMATS.names())


def variants_with(role: str) -> list[str]:
    """The variants that declare a report role, in registry order."""
    FORMATS.load_all()
    return [e.variant for e in REGISTRY.values() if role in e.roles]


def require_controllable(chosen: list[Exporter]) -> None:
    """A usage error unless a variant accuracy control can search for is among those being exported."""
    if any(e.controllable for e in chosen):
        return
    controllable = [e for e in REGISTRY.values() if e.controllable]
    formats = list(dict.fromkeys(e.format for e in controllable))
    raise UsageError(f"accuracy control applies to {', '.join(e.variant for e in controllable)}; none of them is "
                     "being exported", hint=f"add --format {', '.join(formats[:-1])} or {formats[-1]} (with int8)")


def format_help() -> str:
    """--format's help, from what each format declares."""
    parts = []
    for name, fmt in FORMATS.load_all().items():
        made = [e.variant for e in REGISTRY.values() if e.format == name and e.default]
        parts.append(f"{name} -> {', '.join(made)} ({fmt.summary}"
                     + (f"; needs [{fmt.extra}])" if fmt.extra else ")"))
    return (f"what to export, one or more of {', '.join(FORMATS.load_all())}, all (default: all). Without --quantize: "
            + "; ".join(parts) + "; all -> every variant of every format whose dependency is installed")


def quantize_help() -> str:
    """--quantize's help: each mode with the formats that have it."""
    what = {"none": "float32", "fp16": "float16 weights", "dynamic": "dynamic-range int8 weights",
            "int8": "full-integer, calibrated"}
    parts = []
    for mode in QUANTIZE_MODES:
        having = list(dict.fromkeys(e.format for e in REGISTRY.values() if e.quantization == mode))
        parts.append(f"{mode} ({what[mode]}; {', '.join(having)})")
    return "only these quantizations: " + ", ".join(parts)


def by_variant(names: tuple[str, ...]) -> list[Exporter]:
    """The exporters of these variant names (as a config records them), in registry order."""
    FORMATS.load_all()
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise UsageError(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(REGISTRY)})")
    return [e for e in REGISTRY.values() if e.variant in names]


def select(fmt: str | tuple[str, ...], quantize: tuple[str, ...] | None) -> list[Exporter]:
    """Variants for ``--format FMT [FMT ...] [--quantize MODE ...]`` (a quantization mode must exist in
    at least one of the formats)."""
    known = formats()
    asked = (fmt,) if isinstance(fmt, str) else tuple(fmt)
    unknown = [f for f in asked if f not in (*known, "all")]
    if unknown or not asked:
        raise UsageError(f"--format must be among {', '.join((*known, 'all'))}, got {' '.join(unknown) or 'none'}")
    fmt = "all" if "all" in asked else " ".join(asked)
    chosen_formats = known if fmt == "all" else asked
    chosen = []
    for exp in REGISTRY.values():
        if exp.format not in chosen_formats:
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

            extra = FORMATS.get(exp.format).extra or exp.format
            raise DeviceUnavailableError(f"--format {exp.format}: its runtime is not installed",
                                         hint=f"install it with `pip install -e '.[{extra}]'`")
    if quantize:
        for mode in quantize:
            if mode not in QUANTIZE_MODES:
                raise UsageError(f"--quantize must be among {', '.join(QUANTIZE_MODES)}, got {mode!r}")
            if not any(e.quantization == mode for e in chosen):
                raise UsageError(f"--format {fmt} has no {mode!r} variant (available: "
                                 f"{', '.join(e.variant for e in REGISTRY.values() if e.format in chosen_formats)})")
    return chosen


def plain_companion(path: Path, plain: bytes) -> dict:
    """The plain int8 model written beside an accuracy-controlled one (a companion of the artifact),
    for parity's side-by-side test figures."""
    from toolkit.artifacts import atomic_write_bytes
    from toolkit.provenance import sha256_bytes

    plain_path = path.with_name(path.stem + ".plain" + path.suffix)
    atomic_write_bytes(plain_path, plain)
    return {"path": plain_path.name, "bytes": len(plain), "sha256": sha256_bytes(plain), "role": "plain-int8"}


S = TypeVar("S")


@dataclass
class ExportContext:
    """What every format needs: the model, calibration data and a scratch directory; conversions made once
    and shared by the variants that need them (failures too: ``failures``). What one format keeps for itself
    (its converted bytes, its range statistics, its accuracy-control graph) is its own typed state, asked for
    with ``ctx.state(ItsState)``: no field here that only one format uses, no string-keyed cache."""

    model: object  # keras.Model; None when the model comes from another framework (``reference``)
    model_path: Path
    workdir: Path
    calibration_images: object  # float32 (N, *model input shape), preprocessed as the manifest says
    calibration_method: str
    opset: int
    _saved_model: Path | None = None  # what the TFLite, ONNX and OpenVINO conversions read
    failures: dict = field(default_factory=dict)  # conversion key -> ConversionError
    timings: dict = field(default_factory=dict)  # conversion key -> seconds it took
    _charged: set = field(default_factory=set)
    # accuracy-controlled int8 (toolkit/accuracy_control.py): settings, the validation split
    # (loaded on first use) and the results shared by variants (tflite-int8 and tflite-micro: the same bytes)
    control: object = None  # ControlSettings or None
    validation: object = None  # () -> accuracy_control.Validation
    log: object = print  # (str) -> None: progress lines
    control_results: dict = field(default_factory=dict)
    _states: dict = field(default_factory=dict)  # a format's state class -> its instance for this export
    reference: object = None  # toolkit.references.Reference: the model in its own framework (None: ``model``)

    @property
    def framework(self):
        """The framework the model comes from (toolkit/references/): its ``to_onnx`` and ``to_openvino`` say how
        the formats are made from a non-Keras model."""
        if self.reference is None:
            from toolkit.references import FRAMEWORKS

            return FRAMEWORKS.get("keras")
        return self.reference.framework

    def state(self, kind: type[S]) -> S:
        """A format's own state for this export (a dataclass with defaults, defined beside its format), made
        on first use."""
        if kind not in self._states:
            self._states[kind] = kind()
        return self._states[kind]

    def in_model_layout(self, images):
        """The toolkit's (N, H, W, C) images in the model's own layout: channels first for a model that takes them
        so (a PyTorch model, most ONNX classifiers), as its ONNX and TFLite files keep it."""
        info = getattr(self.reference, "info", None)
        if info is not None and info.data_format == "channels_first":
            from toolkit.runners.base import to_channels_first

            return to_channels_first(images)
        return images

    def derived(self, **changes) -> ExportContext:
        """A context for another model (fine-tuning's): the same settings and data, none of the conversions,
        failures, timings or states of this one."""
        import dataclasses

        fresh = {f.name: f.default_factory() for f in dataclasses.fields(self) if f.default_factory
                 is not dataclasses.MISSING}
        return dataclasses.replace(self, _saved_model=None, **fresh, **changes)

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

            if self.model is None:
                from toolkit.errors import ConversionError

                raise ConversionError(
                    f"the TFLite converter reads TensorFlow models; no converter from {self.framework.name} to TFLite "
                    "is installed beside this TensorFlow (onnx2tf pins an older one): use the ONNX and OpenVINO files")

            path = self.workdir / "saved_model"
            with quiet_stderr():
                self.model.export(str(path), format="tf_saved_model", verbose=False)
            self._saved_model = path
        return self._saved_model
