"""Frozen settings built once at the CLI edge. Library code takes these, never argparse."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.exportdir import ExportDir


@dataclass(frozen=True)
class PreprocessOptions:
    """The preprocessing flags as given; ``auto``/None are decided from the model and the data
    (toolkit/preprocess.py)."""

    scale: str = "auto"  # auto, unit, symmetric, raw, standard
    color_mode: str = "auto"  # auto, grayscale, rgb
    resize: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, int] | None = None  # (H, W) for a model that takes any height and width

    @property
    def given(self) -> bool:
        return self != PreprocessOptions()


@dataclass(frozen=True)
class TrainConfig:
    out: Path = Path("exports")
    data_dir: Path | None = None
    arch: str = "cnn"
    epochs: int = 5
    batch_size: int = 100
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # "constant" or "cosine" (decays to 0 over all steps)
    jit_compile: bool = False  # XLA-compile the training step
    precision: str = "float32"  # training compute precision: float32 or bf16 (the saved model is float32)
    seed: int = 0
    train_limit: int | None = None
    dropout: float | None = 0.5  # None: the architecture has no dropout layer
    dataset: str | None = None  # None: mnist
    dataset_options: tuple = ()  # the source's own options (toolkit/datasets: SourceOption) as (dest, value) pairs
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    verbose: bool = True

    @classmethod
    def for_arch(cls, arch: str = "cnn", **overrides) -> TrainConfig:
        """The architecture's default settings, with ``overrides`` (None values ignored)."""
        from toolkit.errors import UsageError
        from toolkit.model import ARCHITECTURES

        if arch not in ARCHITECTURES:
            raise UsageError(f"--arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
        a = ARCHITECTURES[arch]
        settings = {"arch": arch, "epochs": a.epochs, "batch_size": a.batch_size,
                    "learning_rate": a.learning_rate, "lr_schedule": a.lr_schedule,
                    "jit_compile": a.jit_compile, "dropout": a.dropout, "precision": a.precision}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**settings)


def _own_export_dir(cfg, *fields: str) -> None:
    """A frozen config's export directories as ExportDirs (a config takes a path or an ExportDir)."""
    from toolkit.exportdir import ExportDir

    for name in fields:
        object.__setattr__(cfg, name, ExportDir.of(getattr(cfg, name)))


@dataclass(frozen=True)
class ExportConfig:
    exports: ExportDir = Path("exports")
    variants: tuple[str, ...] = ()
    model: Path | None = None
    data_dir: Path | None = None
    dataset: str | None = None  # None: the model's training dataset (train.json beside it), else mnist
    dataset_options: tuple = ()  # the source's own options (toolkit/datasets: SourceOption) as (dest, value) pairs
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    calibration_samples: int = 500
    calibration_method: str = "auto"  # toolkit/ranges.py: minmax, mean-minmax, tail-aware, chosen on validation
    calibration_seed: int = 0
    opset: int = 17
    force: bool = False
    check_samples: int = 256
    max_accuracy_drop: float | None = None  # accuracy control: budget in points (validation split)
    max_fallback_layers: int = 5
    min_agreement: float | None = None  # accuracy control: also agree with Keras on this % of validation images
    max_slowdown: float | None = None  # accuracy control: no step clearly slower than this times plain int8 (batch 1)
    recipe: Path | None = None  # accuracy control: replay this quantization-recipe.json
    fine_tune: bool = False  # int8 variants from weights fine-tuned toward the model (toolkit/quantize/)
    fine_tune_epochs: int | None = None  # None: toolkit/quantize/finetune.py's default
    fine_tune_images: int | None = None
    learned_rounding: bool = False  # int8 variants from weights whose rounding was learned (toolkit/quantize/)
    npu: tuple[str, ...] = ()  # NPU configurations the int8 files are for (toolkit/targets)
    verbose: bool = True

    def __post_init__(self):
        _own_export_dir(self, "exports")

    def check(self, exporters=None) -> None:
        """Every usage error of these settings (exit 2), found before any file is read: the one place the CLI
        (`export`, `run`) and the API (`toolkit.export.export`) check them. ``exporters``: the chosen variants,
        which accuracy control and fine-tuning need one of theirs among."""
        from toolkit.errors import UsageError

        if self.opset < 17:
            raise UsageError(f"--opset must be 17 or newer, got {self.opset}")
        if self.calibration_samples < 1:
            raise UsageError(f"--calibration-samples must be at least 1, got {self.calibration_samples}")
        if self.max_accuracy_drop is not None and self.recipe is not None:
            raise UsageError("--max-accuracy-drop searches, --recipe replays a search: give one of them")
        if self.max_accuracy_drop is not None and not self.max_accuracy_drop > 0:
            raise UsageError(f"--max-accuracy-drop must be a positive number of points, got {self.max_accuracy_drop}")
        if self.max_fallback_layers < 1:
            raise UsageError(f"--max-fallback-layers must be at least 1, got {self.max_fallback_layers}")
        if self.max_slowdown is not None and self.max_accuracy_drop is None:
            raise UsageError("--max-slowdown caps the accuracy search's cost; it applies with --max-accuracy-drop")
        if self.max_slowdown is not None and self.max_slowdown < 1:
            raise UsageError(f"--max-slowdown is a ratio to plain int8's batch-1 p50, at least 1; got {self.max_slowdown}")
        if self.min_agreement is not None and not 0 < self.min_agreement <= 100:
            raise UsageError(f"--min-agreement must be a percentage in (0, 100], got {self.min_agreement}")
        if self.npu:
            from toolkit.targets import check_available

            check_available(list(self.npu))
        if self.fine_tune and self.model is not None and Path(self.model).suffix.lower() != ".keras":
            raise UsageError(f"--fine-tune trains the Keras model toward its int8 form; {self.model} is not a Keras "
                             "model", hint="fine-tune in your own framework, or drop --fine-tune")
        if self.learned_rounding and self.model is not None and Path(self.model).suffix.lower() != ".keras":
            raise UsageError(f"--learned-rounding rounds the Keras model's weights; {self.model} is not a Keras model",
                             hint="drop --learned-rounding")
        if self.learned_rounding and self.fine_tune and self.max_accuracy_drop is None:
            raise UsageError("--learned-rounding and --fine-tune are two rungs of the int8 ladder: together they need "
                             "--max-accuracy-drop (the budget that decides whether the next rung runs)",
                             hint="add --max-accuracy-drop, or keep one of the two")
        if (self.fine_tune_epochs or self.fine_tune_images) and not self.fine_tune:
            raise UsageError("--fine-tune-epochs and --fine-tune-images apply with --fine-tune")
        if exporters is not None and (self.max_accuracy_drop is not None or self.recipe is not None
                                      or self.fine_tune or self.learned_rounding):
            from toolkit.exporters import require_controllable

            require_controllable(exporters)


@dataclass(frozen=True)
class Gates:
    """Parity bounds. Accuracy losses are in percentage points (reference minus variant)."""

    float_min_agreement: float = 99.95
    float_max_logit_diff: float = 1e-3
    reduced_max_accuracy_loss: float = 0.1  # fp16, dynamic-range
    int8_max_accuracy_loss: float = 0.3
    int8_min_agreement: float = 99.5
    # TFLM vs the LiteRT interpreter on the same model bytes. 99.5, not 99.9: parity's default TFLM sample of
    # 1,000 images can show >= 99.5% (Wilson lower bound 99.62% when all agree) but never >= 99.9%
    micro_min_agreement_with_litert: float = 99.5


@dataclass(frozen=True)
class ExportReader:
    """What every command that reads an export takes: its directory, the data to run it on (the dataset the
    manifest records unless another is named) and where the reference model is."""

    exports: ExportDir = Path("exports")
    data_dir: Path | None = None
    dataset: str | None = None  # None: the dataset recorded in the manifest
    dataset_options: tuple = ()  # the source's own options (toolkit/datasets: SourceOption) as (dest, value) pairs
    model: Path | None = None  # the reference model; None: the one the manifest names

    def __post_init__(self):
        _own_export_dir(self, "exports")


@dataclass(frozen=True)
class ParityConfig(ExportReader):
    variants: tuple[str, ...] = ()
    json_path: Path | None = None
    gates: Gates = field(default_factory=Gates)
    batch_size: int = 500
    diagnose: str | None = None
    micro_images: int | None = 1000  # tflite-micro: test images in parity; None = all 10,000
    runtimes: tuple[str, ...] = ()  # () = each variant on its format's reference runtime
    device: str = "cpu"  # where variants and the reference run ("cuda": no silent fallback to the CPU)
    reference_runtime: str | None = None  # the runtime of the Keras reference; None: tensorflow
    seed: int = 0  # chooses the tflite-micro sample
    strict: bool = False  # an inconclusive gate exits 4, not 0
    verbose: bool = True


@dataclass(frozen=True)
class BenchConfig(ExportReader):
    variants: tuple[str, ...] = ()  # manifest variants plus "keras" (the reference); () = all
    runtimes: tuple[str, ...] = ()  # () = every runtime that fits a variant
    device: str = "cpu"
    batch_sizes: tuple[int, ...] = (1, 8, 32, 128)
    threads: tuple[int, ...] = (1, 2)
    warmup_runs: int = 10
    warmup_seconds: float = 0.5
    min_runs: int = 50
    min_seconds: float = 1.0
    max_runs: int = 100_000
    seed: int = 0
    json_path: Path | None = None
    allow_fallback: bool = False
    plots: bool = True
    verbose: bool = True


def config_json(cfg) -> dict:
    """A config as JSON: tuples as lists, the dataset source's options under their own keys (where
    ``dataset_options`` stands), each recorded option present (None when not given)."""
    from dataclasses import asdict

    from toolkit.datasets import recorded_options

    out = {}
    for k, v in asdict(cfg).items():
        if k == "dataset_options":
            out.update(recorded_options(dict(v)))
        else:
            out[k] = list(v) if isinstance(v, tuple) else v
    return out
