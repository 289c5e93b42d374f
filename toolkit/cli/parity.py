"""`toolkit parity` command-line wiring."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from toolkit.cli.common import (
    DeprecatedAlias,
    check_runtimes,
    dataset_args,
    dataset_options,
    exports_arg,
    positive_int,
    quiet_arg,
    strict_arg,
)


def _gate_help() -> str:
    from toolkit.config import Gates

    return ", ".join(f"{f.name} (default {f.default})" for f in dataclasses.fields(Gates))


def parity_args(p: argparse.ArgumentParser) -> None:
    quiet_arg(p)
    exports_arg(p)
    dataset_args(p, "the dataset recorded in the manifest, with its preprocessing")
    p.add_argument("--model", type=Path, default=None, metavar="PATH",
                   help="the reference Keras model, if it moved (must be the model the export came from; "
                   "default: the manifest's source_model)")
    p.add_argument("--variants", nargs="+", metavar="VARIANT", default=(),
                   help="only these variants (default: every artifact in the manifest)")
    p.add_argument("--runtimes", nargs="+", default=(), metavar="RUNTIME",
                   help="check each variant on every one of these runtimes that runs its format (results for a "
                   "runtime other than the format's reference one are named VARIANT@RUNTIME), e.g. --runtimes "
                   "litert onnxruntime openvino openvino-bf16 (default: each variant on its reference runtime)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="run the variants and the reference here; with cuda every runner must really run on "
                   "the GPU (no silent CPU fallback: exit 6 names the one that did not) (default: %(default)s)")
    p.add_argument("--reference-runtime", default=None, metavar="RUNTIME",
                   help="the runtime of the Keras reference: tensorflow (default) or keras-jax (Keras' JAX "
                   "backend, for a GPU machine without TensorFlow)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="where to write the JSON results (default: DIR/parity.json)")
    p.add_argument("--gate", action="append", default=[], metavar="NAME=VALUE",
                   help="override a gate bound; repeatable. Gates: " + _gate_help())
    p.add_argument("--images-per-call", type=positive_int, default=500, metavar="N", dest="images_per_call",
                   help="images per inference call (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, dest="images_per_call", action=DeprecatedAlias,
                   help=argparse.SUPPRESS)
    p.add_argument("--max-accuracy-drop", type=float, default=None, metavar="PTS",
                   help="the int8 accuracy budget, the same name and rule as `toolkit export --max-accuracy-drop`: "
                   "short for --gate int8_max_accuracy_loss=PTS")
    p.add_argument("--micro-images", type=_count_or_all, default=1000, metavar="N|all",
                   help="test images run under TFLM for tflite-micro (reference kernels, one image at a "
                   "time): a fixed-seed sample of N, or all (default: %(default)s)")
    p.add_argument("--diagnose", metavar="VARIANT", default=None,
                   help="for an int8 variant: per-layer quantization error table instead of parity, then (Keras models) "
                   "whether the weights' rounding or the activations' cause the error, and which option can "
                   "remove it")
    strict_arg(p)


def _count_or_all(text: str) -> int | None:
    if text == "all":
        return None
    return positive_int(text)


def parse_gates(items: list[str]):
    from toolkit.config import Gates
    from toolkit.errors import UsageError

    names = {f.name for f in dataclasses.fields(Gates)}
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in names:
            raise UsageError(f"--gate {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(names))}")
        try:
            values[name] = float(value)
        except ValueError:
            raise UsageError(f"--gate {item!r}: {value!r} is not a number") from None
    return Gates(**values)


def parity_run(args: argparse.Namespace) -> int:
    from toolkit.config import ParityConfig

    check_runtimes(args)
    if args.reference_runtime:
        args_ref = argparse.Namespace(reference_runtime=[args.reference_runtime])
        check_runtimes(args_ref, "--reference-runtime")
    gates = list(args.gate)
    if args.max_accuracy_drop is not None:
        if not args.max_accuracy_drop > 0:
            from toolkit.errors import UsageError

            raise UsageError(f"--max-accuracy-drop must be a positive number of points, got {args.max_accuracy_drop}")
        gates.append(f"int8_max_accuracy_loss={args.max_accuracy_drop}")
    cfg = ParityConfig(
        exports=args.exports, data_dir=args.data_dir, dataset=args.dataset, dataset_options=dataset_options(args),
        model=args.model, variants=tuple(args.variants), runtimes=tuple(args.runtimes),
        device=args.device, reference_runtime=args.reference_runtime,
        json_path=args.json, gates=parse_gates(gates), batch_size=args.images_per_call,
        diagnose=args.diagnose, micro_images=args.micro_images, strict=args.strict, verbose=not args.quiet,
    )
    if cfg.diagnose:
        from toolkit.diagnose import diagnose, format_table

        result = diagnose(cfg)
        print(format_table(result))
        print(f"wrote {result['json_path']}")
        return 0

    from toolkit.parity import run_parity, write_outputs

    report = run_parity(cfg)
    paths = write_outputs(report, cfg)
    from toolkit.parity.render import table_lines

    print("\n".join(table_lines(report)))
    print(f"wrote {paths['json']}, {paths['markdown']} and {paths['png']}")
    report.raise_if_failed("parity", paths['markdown'], strict=args.strict)
    report.raise_if_incomplete("parity", paths['markdown'])
    return 0


COMMANDS = {
    "parity": (
        parity_args, parity_run,
        "accuracy parity of every export on the full test split",
        "Run the Keras reference and every artifact in DIR/manifest.json on every image of the "
        "test split (MNIST's 10,000, or the export's own dataset), streamed in batches, with the "
        "preprocessing recorded in the manifest. Per variant: accuracy with 95% CI, difference from the reference with an exact "
        "CI, agreement, disagreements, exact McNemar p-value, logit differences, per-class "
        "differences and the confusion matrix. Writes DIR/parity.json, DIR/parity.md and "
        "DIR/parity-disagreements.png; exits 4 if a gate fails.",
    ),
}
