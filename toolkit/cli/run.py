"""`toolkit run` command-line wiring."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from toolkit import schema
from toolkit.cli.common import (
    arch_args,
    check_export_flags,
    check_preprocess_flags,
    check_runtimes,
    dataset_args,
    dataset_options,
    export_options_args,
    export_settings,
    exports_arg,
    json_arg,
    preprocess_args,
    preprocess_options,
    quiet_arg,
    strict_arg,
    train_config,
    write_json_result,
)


def run_args(p: argparse.ArgumentParser) -> None:
    quiet_arg(p)
    dataset_args(p, "mnist; with --skip-train or --model, the dataset the model was trained on, else mnist")
    exports_arg(p)
    p.add_argument("--model", type=Path, default=None, metavar="PATH",
                   help="your own image classifier (.keras, .pt2 from torch.export.save, or .onnx): skip training "
                   "and take it through export, parity, bench and the report")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 12,000 training images, one epoch, a short benchmark (about a minute here)")
    p.add_argument("--skip-train", action="store_true", help="reuse DIR/model.keras instead of training")
    p.add_argument("--skip-bench", action="store_true", help="no benchmark (report without latencies)")
    arch_args(p)  # --arch, --epochs (1 with --quick), --batch-size, --learning-rate, --seed, --train-limit
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="benchmark device (default: %(default)s)")
    p.add_argument("--allow-fallback", action="store_true",
                   help="with --device cuda: benchmark on the CPU where the GPU is unusable")
    p.add_argument("--runtimes", nargs="+", default=(), metavar="RUNTIME",
                   help="the runtimes the benchmark times (default: bench's default set; `toolkit bench --help` "
                   "lists them)")
    json_arg(p, "the run's summary: every stage's files, seconds and verdicts")
    export_options_args(p, force_help="replace what DIR holds: its export, and its model.keras when training")
    preprocess_args(p)
    strict_arg(p)


def _checked_settings(args: argparse.Namespace) -> dict:
    """Every usage error before any file is read or anything is trained (flags, an export or model
    already in DIR without --force, a missing --model); return export's settings from the flags."""
    from toolkit.errors import UsageError

    exports = args.exports
    if args.resize and not (args.model or args.skip_train):
        raise UsageError("--resize needs a model to take the size from: give --model (or --skip-train); "
                         "training builds the model for the images' own size")
    check_runtimes(args)
    check_export_flags(args)
    check_preprocess_flags(args)
    settings, _ = export_settings(args)
    training = not (args.skip_train or args.model is not None)
    if not args.force:
        held = [path for path in (exports.manifest_path, *((exports.model_path,) if training else ()))
                if path.exists()]
        if held:
            raise UsageError(f"{held[0]} already exists; refusing to overwrite it",
                             hint="pass --force to replace it, or --exports DIR for a new run")
    if args.model is not None and not args.model.exists():
        from toolkit.errors import DataError

        raise DataError(f"model file {args.model} not found", hint="give the path of a .keras, .pt2 or .onnx file")
    return settings


def _run_config(args: argparse.Namespace, settings: dict):
    """The pipeline's settings from the flags: training (at the images' own size), export, parity,
    bench (batch 1 and 32), shortened by --quick (an explicit --epochs still wins)."""
    from toolkit.config import BenchConfig, ExportConfig, ParityConfig
    from toolkit.pipeline import RunConfig, quick

    exports = args.exports
    options = preprocess_options(args)
    train_options = replace(options, resize=False, input_size=None)
    train_cfg = replace(train_config(args, exports.root), preprocess=train_options)
    cfg = RunConfig(
        train=train_cfg,
        export=ExportConfig(exports=exports, data_dir=args.data_dir, dataset=args.dataset,
                            dataset_options=dataset_options(args), preprocess=options, model=args.model,
                            verbose=not args.quiet, **settings),
        parity=ParityConfig(exports=exports, data_dir=args.data_dir, verbose=not args.quiet),
        bench=BenchConfig(exports=exports, data_dir=args.data_dir, batch_sizes=(1, 32), device=args.device,
                          runtimes=tuple(args.runtimes),
                          allow_fallback=args.allow_fallback, verbose=not args.quiet),
        skip_train=args.skip_train or args.model is not None, skip_bench=args.skip_bench, verbose=not args.quiet,
    )
    if args.quick:
        cfg = quick(cfg)
        if args.epochs:  # an explicit --epochs wins over --quick's one epoch
            cfg = replace(cfg, train=replace(cfg.train, epochs=args.epochs))
    return cfg


def _summary(exports, result: dict) -> dict:
    """The --json summary: every stage's files, seconds and verdicts."""
    report = result["parity"]
    return {
        "exports": str(exports), "verdict": report.verdict, "seconds": result["seconds"],
        "paths": {k: str(v) for k, v in result["paths"].items()},
        "variants": {name: {"verdict": v.verdict, "accuracy": v.metrics["accuracy"],
                            "agreement": v.metrics["agreement"], "images": v.metrics["images"],
                            "bytes": schema.model_bytes(v.metrics)}
                     for name, v in report.variants.items()},
        "export_failed": result["manifest"]["failed"], "bench_failed": result.get("bench_failed") or []}


def _raise_for_failures(result: dict, *, strict: bool) -> None:
    """Raise the run's error, in order of precedence: a failed parity gate, a variant that could not be
    exported, an incomplete parity check, a benchmark row that failed (each printed first)."""
    report = result["parity"]
    report.raise_if_failed("run", result['paths']['report'], strict=strict)
    if result["manifest"]["failed"]:
        from toolkit.errors import PartialExportError

        raise PartialExportError(f"{len(result['manifest']['failed'])} variant(s) could not be exported; the others "
                                 "were checked and benchmarked", hint=f"see {result['paths']['report']}")
    report.raise_if_incomplete("run", result['paths']['report'])
    bench_failed = result.get("bench_failed") or []
    if bench_failed:
        from toolkit.bench import failed_line
        from toolkit.errors import PartialError

        for f in bench_failed:
            print("FAILED " + failed_line(f)[2:])
        raise PartialError(f"{len(bench_failed)} benchmark row(s) failed; every other row was measured",
                           hint=f"see {result['paths']['report']}")


def run_run(args: argparse.Namespace) -> int:
    from toolkit.pipeline import run

    settings = _checked_settings(args)
    result = run(_run_config(args, settings))
    print()
    from toolkit.parity.render import table_lines

    print("\n".join(table_lines(result["parity"])))
    from toolkit.export import failure_lines, warning_lines

    for line in [*warning_lines(result["manifest"]), *failure_lines(result["manifest"])]:
        print(line)
    print(f"\nreport: {result['paths']['report']}")
    write_json_result(args, _summary(args.exports, result))
    _raise_for_failures(result, strict=args.strict)
    return 0


COMMANDS = {
    "run": (
        run_args, run_run,
        "the whole pipeline: train, export, parity, bench, report",
        "Train the seed CNN or --arch ARCH on MNIST or --dataset (or take your own model with --model PATH, or reuse "
        "DIR/model.keras with --skip-train), export every variant (or --format/--quantize, with export's options) "
        "into DIR (--force to replace an earlier run there), check parity on the full test set, benchmark "
        "batch 1 and 32 with 1 and 2 threads, and write DIR/report.md. Exits 4 if a parity gate "
        "failed, 7 if a variant could not be exported or a benchmark row failed (the rest written). --quick is a smoke run for trying the tool and for CI.",
    ),
}
