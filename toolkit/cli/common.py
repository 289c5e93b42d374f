"""Argument helpers shared by the commands (no command imports another, nor the root parser)."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.errors import EXIT_CODES

EPILOG = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items()) + (
    "\n\ndata: --dataset mnist (the default: --data-dir DIR, else $TOOLKIT_DATA_DIR, else the Keras "
    "cache/download), --dataset DIR (images in class subfolders) or --dataset FILE.npz."
)


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
    from toolkit.micro import parse_bytes

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


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def dataset_args(p: argparse.ArgumentParser, default: str) -> None:
    """--dataset and --test-fraction (and --data-dir for MNIST)."""
    data_dir_arg(p)
    p.add_argument("--dataset", default=None, metavar="mnist|DIR|FILE.npz",
                   help="the labelled images: mnist; a directory of class subfolders (DIR/train/<class>/*.png and "
                   "DIR/test/<class>/..., or DIR/<class>/... split by --test-fraction); or an .npz with x_train, "
                   f"y_train, x_test, y_test (default: {default})")
    p.add_argument("--test-fraction", type=fraction, default=None, metavar="F",
                   help="for a folder without train/ and test/: the fixed-seed share of images held out for "
                   "testing (default: 0.2)")


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


def exports_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--exports", type=Path, default=Path("exports"), metavar="DIR",
        help="export directory holding model.keras and manifest.json (default: %(default)s)",
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
    p.add_argument("--precision", default=None, choices=("float32", "bf16"),
                   help="training compute precision: bf16 is Keras' mixed_bfloat16 (bfloat16 compute, float32 "
                   "weights; about 1.7x faster per epoch on CPUs with AVX512_BF16); the saved model and every "
                   "figure after training are float32 (default per architecture: "
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
        dataset=args.dataset, test_fraction=args.test_fraction, preprocess=preprocess_options(args),
        verbose=not getattr(args, "quiet", False),
    )


def strict_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true",
                   help="an inconclusive verdict (the images cannot tell whether a bound holds) exits 4 like a "
                   "failed one; without it inconclusive verdicts are shown prominently and exit 0")
