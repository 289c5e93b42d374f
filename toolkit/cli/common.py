"""Argument helpers shared by the commands (no command imports another, nor the root parser)."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.errors import EXIT_CODES


def epilog(p: argparse.ArgumentParser | None = None) -> str:
    """A command's epilog: the exit codes, and the data sources where it takes --dataset; it names only
    flags the command has (the root parser's names every command's)."""
    flags = {o for a in p._actions for o in a.option_strings} if p is not None else None
    codes = dict(EXIT_CODES)
    if flags is not None and "--force" not in flags:
        codes[2] = "usage error: a bad flag or value"
    text = "exit codes:\n" + "\n".join(f"  {code}  {line}" for code, line in codes.items())
    if flags is None or "--dataset" in flags:
        from toolkit import datasets

        text += "\n\ndata: --dataset " + "; ".join(s.describe for s in datasets.sources().values()) + "."
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class IntList(argparse.Action):
    """A list of positive integers given with spaces, commas or both: ``--batch-sizes 1 8``,
    ``--batch-sizes 1,8`` and ``--batch-sizes 1, 8`` are the same (use with ``nargs="+"``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        tokens = [t for v in (values if isinstance(values, list) else [values]) for t in str(v).split(",") if t.strip()]
        try:
            numbers = tuple(int(t) for t in tokens)
        except ValueError:
            parser.error(f"{option_string}: expected positive integers separated by spaces or commas, "
                         f"got {' '.join(map(str, values))!r}")
        if not numbers or min(numbers) < 1:
            parser.error(f"{option_string}: expected positive integers, got {' '.join(map(str, values))!r}")
        setattr(namespace, self.dest, numbers)


def int_list(p, flag: str, default: tuple[int, ...], help: str) -> None:
    p.add_argument(flag, nargs="+", action=IntList, default=tuple(default), metavar="N",
                   help=f"{help}; spaces or commas between values (default: {' '.join(map(str, default))})")


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: stores like the new one and says, on stderr, which one to use."""

    def __call__(self, parser, namespace, values, option_string=None):
        import sys

        new = "--" + self.dest.replace("_", "-")
        print(f"toolkit: {option_string} is deprecated, use {new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def byte_size(text: str) -> int:
    """Bytes with an optional K/M/G suffix (1024-based): 48K, 2M, 3400000."""
    from toolkit.tflm import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", type=Path, default=None, metavar="DIR",
        help="directory with the four MNIST IDX .gz files (default: $TOOLKIT_DATA_DIR, "
        "else the Keras cache, downloading if online)",
    )


def dataset_args(p: argparse.ArgumentParser, default: str) -> None:
    """--dataset, --data-dir, and every option a dataset source declares (toolkit/datasets)."""
    from toolkit import datasets

    data_dir_arg(p)
    known = datasets.sources().values()
    p.add_argument("--dataset", default=None, metavar="|".join(s.describe.split(":")[0] for s in known),
                   help="the labelled images: " + "; ".join(s.describe for s in known) + f" (default: {default})")
    for option in datasets.source_options():
        p.add_argument(option.flag, dest=option.dest, type=option.type, default=None, metavar=option.metavar,
                       help=option.help)


def dataset_options(args: argparse.Namespace) -> tuple:
    """The dataset sources' options given on the command line, as a config carries them."""
    from toolkit import datasets

    return tuple((o.dest, getattr(args, o.dest)) for o in datasets.source_options()
                 if getattr(args, o.dest, None) is not None)


def preprocess_args(p: argparse.ArgumentParser, resize: bool = True) -> None:
    g = p.add_argument_group("preprocessing", "how images become model inputs; stated once, recorded in the "
                             "manifest, and used by every runner in parity and bench")
    g.add_argument("--scale", default="auto", choices=("auto", "unit", "symmetric", "raw", "standard"),
                   help="pixel scaling: unit x/255 in [0,1]; symmetric x/127.5-1 in [-1,1]; raw 0..255 (for models "
                   "with their own Rescaling layer); standard (x/255-mean)/std. auto: raw when the model starts "
                   "with a Rescaling or Normalization layer, else unit (default: %(default)s)")
    g.add_argument("--mean", type=float, nargs="+", default=None, metavar="X",
                   help="--scale standard: mean per channel (one value or one per channel), on the [0,1] scale")
    g.add_argument("--std", type=float, nargs="+", default=None, metavar="X",
                   help="--scale standard: standard deviation per channel")
    g.add_argument("--color-mode", default="auto", choices=("auto", "grayscale", "rgb"),
                   help="convert images to grayscale or RGB; auto keeps the data's mode and fails if the model "
                   "takes the other (default: %(default)s)")
    if resize:
        g.add_argument("--resize", action="store_true",
                       help="resize every image (bilinear) whose size differs from the model's input; without it a "
                       "size mismatch is an error")
        g.add_argument("--input-size", type=_size, default=None, metavar="HxW",
                       help="for a model that takes images of any height and width (input (None, None, C)): the one "
                       "size the exported files take (e.g. 224x224); every runner is fed that size")


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 224x224), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"height and width must be positive, got {text!r}")
    return h, w


def preprocess_options(args: argparse.Namespace):
    from toolkit.config import PreprocessOptions

    return PreprocessOptions(
        scale=args.scale, color_mode=args.color_mode, resize=getattr(args, "resize", False),
        mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None,
        input_size=getattr(args, "input_size", None),
    )


def quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars or progress lines on stderr, only results and errors (progress bars "
                   "are drawn only when stderr is a terminal anyway)")


def json_arg(p: argparse.ArgumentParser, what: str) -> None:
    """--json PATH on a command whose results live in DIR: also write ``what`` as JSON to PATH, for scripts."""
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help=f"also write {what} as JSON to PATH (for scripts; the files in DIR are written anyway)")


def write_json_result(args: argparse.Namespace, doc: dict) -> None:
    if getattr(args, "json", None):
        from toolkit import artifacts
        from toolkit.provenance import provenance

        artifacts.atomic_write_json(args.json, {"command": args.command, **doc, "provenance": provenance()})
        if not getattr(args, "quiet", False):
            import sys

            print(f"wrote {args.json}", file=sys.stderr)


def export_dir(text: str):
    """--exports DIR as the ExportDir every stage takes (imported on use: --help stays instant)."""
    from toolkit.exportdir import ExportDir

    return ExportDir(text)


def exports_arg(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument(
        "--exports", type=export_dir, default="exports", metavar="DIR",
        help=help or "export directory holding model.keras and manifest.json (default: %(default)s)",
    )


def arch_args(p: argparse.ArgumentParser) -> None:
    """--arch and the training settings whose defaults depend on it (shared with `run`)."""
    from toolkit.model import ARCHITECTURES

    def per_arch(field: str) -> str:
        return "default per architecture: " + ", ".join(
            f"{a.name} {getattr(a, field):g}" for a in ARCHITECTURES.values())

    p.add_argument("--arch", default="cnn", choices=tuple(ARCHITECTURES),
                   help="architecture: " + "; ".join(f"{a.name}: {a.description}" for a in ARCHITECTURES.values())
                   + " (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help=f"training epochs ({per_arch('epochs')})")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help=f"mini-batch size ({per_arch('batch_size')})")
    p.add_argument("--learning-rate", type=positive_float, default=None, metavar="X",
                   help=f"Adam learning rate ({per_arch('learning_rate')})")
    p.add_argument("--lr-schedule", default=None, choices=("constant", "cosine"),
                   help="learning rate over training: constant, or cosine decay to 0 over all steps "
                   "(default per architecture: " + ", ".join(f"{a.name} {a.lr_schedule}" for a in ARCHITECTURES.values())
                   + ")")
    p.add_argument("--jit", dest="jit_compile", action=argparse.BooleanOptionalAction, default=None,
                   help="XLA-compile the training step (default per architecture: "
                   + ", ".join(f"{a.name} {'on' if a.jit_compile else 'off'}" for a in ARCHITECTURES.values()) + ")")
    p.add_argument("--precision", default=None, choices=("float32", "bf16", "auto"),
                   help="training compute precision: bf16 is Keras' mixed_bfloat16 (bfloat16 compute, float32 "
                   "weights; about 1.8x faster per epoch on CPUs with AVX512_BF16, many times slower where it is "
                   "emulated); auto: bf16 where AVX512_BF16 or AMX is detected, else float32; the saved model and "
                   "every figure after training are float32 (default per architecture: "
                   + ", ".join(f"{a.name} {a.precision}" for a in ARCHITECTURES.values()) + ")")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="random seed; same seed and settings give bit-identical weights on CPU "
                   "(default: %(default)s)")
    p.add_argument("--train-limit", type=positive_int, default=None, metavar="N",
                   help="train on the first N training images only (quick runs)")


def train_config(args: argparse.Namespace, out: Path):
    from toolkit.config import TrainConfig

    return TrainConfig.for_arch(
        args.arch, out=out, data_dir=args.data_dir, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_schedule=args.lr_schedule, jit_compile=args.jit_compile,
        precision=args.precision, seed=args.seed, train_limit=args.train_limit,
        dataset=args.dataset, dataset_options=dataset_options(args), preprocess=preprocess_options(args),
        verbose=not getattr(args, "quiet", False),
    )


def strict_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true",
                   help="an inconclusive verdict (the images cannot tell whether a bound holds) exits 4 like a "
                   "failed one; without it inconclusive verdicts are shown prominently and exit 0")


# ----------------------------------------------------------------------------- export options (export, run)
def export_options_args(p: argparse.ArgumentParser, force_help: str = "replace an existing export in DIR") -> None:
    """What to export and how to quantize it: the same options, names and defaults in `export` and `run`."""
    from toolkit.config import ExportConfig

    d = ExportConfig()
    from toolkit import exporters, ranges

    p.add_argument("--format", nargs="+", default=["all"], choices=(*exporters.formats(), "all"), metavar="FORMAT",
                   help=exporters.format_help())
    p.add_argument("--quantize", nargs="+", metavar="MODE", choices=exporters.QUANTIZE_MODES,
                   help=exporters.quantize_help())
    p.add_argument("--calibration-samples", type=positive_int, default=d.calibration_samples, metavar="N",
                   help="training images used to calibrate int8 variants, a fixed-seed sample; all of them "
                   "when the training split is smaller (default: %(default)s)")
    p.add_argument("--calibration-method", default=d.calibration_method,
                   choices=ranges.METHODS,
                   help="how each activation's int8 range is set from the calibration images: minmax (the global "
                   "min/max), mean-minmax (the mean of each image's min/max: rare outliers clipped, NNCF's "
                   "default), tail-aware (mean-minmax only for tensors whose max is over 4x the median "
                   "image's); auto builds each and keeps tail-aware unless another agrees with Keras on more "
                   "validation images beyond noise. entropy and percentile: onnxruntime's calibrators (onnx-int8 only; TFLite then uses "
                   "minmax) (default: %(default)s)")
    p.add_argument("--opset", type=int, default=d.opset, metavar="N",
                   help="ONNX opset, 17 or newer (default: %(default)s)")
    p.add_argument("--force", action="store_true", help=force_help)
    control = p.add_argument_group(
        "accuracy-controlled int8 (tflite-int8, tflite-micro, onnx-int8)",
        "measure plain int8 against the Keras model on the validation split (never the test set); unless parity's "
        "int8 gates pass there (the drop's 95% interval within the budget, agreement at 99.5%), raise the precision "
        "of the layer that adds the most quantization error (16-bit activations first, then float; TFLM: 16-bit "
        "only) and repeat; then raise whole tensors (a tensor's producer and every reader together, the tensors "
        "that most raise the output's SQNR, 1, 2, 4, ... of them within --max-fallback-layers); lower back what "
        "the budget does not need; of the steps that pass, a clearly faster one wins. The search works on every "
        "second validation image and the step it keeps must pass again on the other half, which it never chose on "
        "(where it does not, the next steps that passed are judged there too, cheapest first, at most three looks "
        "at Bonferroni confidence; where half the images cannot show the budget, it uses all and says the step is "
        "not confirmed). The recipe goes "
        "to the manifest and DIR/quantization-recipe.json; exit 4 when the budget cannot be met or is not "
        "confirmed (the best step is kept only when it agrees with the model on more held-out validation images "
        "than plain int8 beyond noise; else plain int8)")
    control.add_argument("--max-accuracy-drop", type=float, default=None, metavar="PTS",
                         help="budget: the upper 95%% bound of the validation accuracy drop, in points (e.g. 0.3)")
    control.add_argument("--min-agreement", type=float, default=d.min_agreement, metavar="PCT",
                         help="the agreement with Keras the search must show on the validation split (default: parity's "
                         "int8 gate, 99.5%%)")
    control.add_argument("--max-fallback-layers", type=positive_int, default=d.max_fallback_layers, metavar="N",
                         help="at most N layers changed (default: %(default)s)")
    control.add_argument("--max-slowdown", type=float, default=None, metavar="X",
                         help="keep no step whose batch-1 p50 on its own runtime is clearly above X times plain int8's "
                         "(intervals apart; e.g. 1.25): the best step within it, else plain int8 and exit 4 (default: "
                         "no cap; every outcome states its cost)")
    control.add_argument("--recipe", type=Path, default=None, metavar="FILE",
                         help="replay a quantization-recipe.json without searching (the same bytes every time)")
    control.add_argument("--npu", nargs="+", default=(), metavar="CONFIG",
                         help="the Arm Ethos-U configurations the int8 TFLite file is for (e.g. ethos-u55-128; see "
                         "`toolkit footprint --npu`): the manifest records what Vela places on the NPU and the CPU "
                         "and its estimated time; a search keeps raised layers in int16x8 (on the NPU) rather than "
                         "trying float for speed (float runs on the CPU), and states which layers leave the NPU and "
                         "the estimated time it costs. Needs ethos-u-vela (pip install -e '.[npu]')")
    _weight_step_args(p)


def _weight_step_args(p: argparse.ArgumentParser) -> None:
    """--learned-rounding and --fine-tune: the int8 variants from other weights than the model's own."""
    tune = p.add_argument_group(
        "weight steps for int8 (tflite-int8, tflite-micro, onnx-int8)",
        "make the int8 variants from other weights than the model's own, judged by parity against your model: "
        "--learned-rounding chooses how each weight rounds onto the exporter's int8 grid (seconds to minutes); "
        "--fine-tune trains a copy of the model with its int8 arithmetic simulated (per-channel int8 weights on the "
        "exporter's grid with BatchNormalization folded, 8-bit activations at the exporter's ranges; once per grid: "
        "onnx-int8's is 7-bit) so that it reproduces the model's own "
        "logits on the training images (distillation: labels are not used). Each keeps the model's own weights "
        "unless its simulated int8 model agrees with the model on more validation images beyond noise. With "
        "--max-accuracy-drop they are the ladder's later rungs, tried in that order only where the search misses "
        "the budget. Seeded: two runs give the same files")
    tune.add_argument("--fine-tune", action="store_true",
                      help="make the int8 variants from fine-tuned weights; with --max-accuracy-drop, only where the "
                      "search on the model's own weights misses the budget, keeping the fine-tuned file only where its "
                      "own search meets it (the manifest's `ladder` lists the steps tried)")
    tune.add_argument("--fine-tune-epochs", type=positive_int, default=None, metavar="N",
                      help="at most this many passes over the training images; after each, the simulated int8 model is "
                      "checked on the validation images; the model's own weights are kept unless an epoch agrees "
                      "with it on more of them beyond noise (default: 3)")
    tune.add_argument("--learned-rounding", action="store_true",
                      help="a cheaper step before fine-tuning: learn, layer by layer, whether each weight rounds down or "
                      "up on the exporter's int8 grid so that the layer's output on the calibration images reproduces "
                      "the model's (AdaRound), then correct each layer's bias by its mean error; the weights stay on the "
                      "grid, so every int8 format holds the chosen integers. The model's own weights are kept unless "
                      "the simulated int8 model agrees with it on more validation images beyond noise; with "
                      "--max-accuracy-drop, only where the search on the model's own weights misses the budget. Not run "
                      "where even float weights would not agree with the model on more validation images beyond noise "
                      "(`toolkit parity --diagnose` shows what the weights and the activations cost)")
    tune.add_argument("--fine-tune-images", type=positive_int, default=None, metavar="N",
                      help="training images per pass, a fixed-seed sample when there are more (default: 20,000)")


def export_settings(args: argparse.Namespace) -> tuple[dict, list]:
    """ExportConfig fields from the export options (the caller adds where the files come from and go), and
    the chosen exporters."""
    from toolkit import exporters

    chosen = exporters.select(tuple(args.format), tuple(args.quantize) if args.quantize else None)
    return dict(variants=tuple(e.variant for e in chosen), calibration_samples=args.calibration_samples,
                calibration_method=args.calibration_method, opset=args.opset, force=args.force,
                max_accuracy_drop=args.max_accuracy_drop, max_fallback_layers=args.max_fallback_layers,
                recipe=args.recipe, min_agreement=args.min_agreement, fine_tune=args.fine_tune,
                fine_tune_epochs=args.fine_tune_epochs, fine_tune_images=args.fine_tune_images,
                learned_rounding=args.learned_rounding, npu=tuple(args.npu), max_slowdown=args.max_slowdown), chosen


def check_export_flags(args: argparse.Namespace) -> None:
    """The export options' usage errors, found before any file is read (exit 2, never hidden behind a
    missing file's exit 3)."""
    from toolkit.config import ExportConfig

    settings, chosen = export_settings(args)
    ExportConfig(**settings).check(chosen)  # the same checks `toolkit.export.export` makes


def check_preprocess_flags(args: argparse.Namespace) -> None:
    """--scale/--mean/--std usage errors that need no model or data (the rest need the model's input)."""
    from toolkit.errors import UsageError

    if args.scale == "standard" and (args.mean is None or args.std is None):
        raise UsageError("--scale standard needs --mean and --std (one value, or one per channel)")
    if args.scale != "standard" and (args.mean is not None or args.std is not None):
        raise UsageError(f"--mean and --std apply to --scale standard, not {args.scale}")
    if args.std is not None and min(args.std) <= 0:
        raise UsageError(f"--std values must be positive, got {list(args.std)}")


def check_runtimes(args: argparse.Namespace, flag: str = "--runtimes") -> None:
    """Unknown runtime names are a usage error before any file is read."""
    names = [n for n in (getattr(args, flag[2:].replace("-", "_"), None) or ()) if n]
    if not names:
        return
    from toolkit import runners
    from toolkit.errors import UsageError

    unknown = [r for r in names if r not in runners.names()]
    if unknown:
        raise UsageError(f"{flag}: unknown runtime(s) {', '.join(unknown)} (known: {', '.join(runners.names())})")
