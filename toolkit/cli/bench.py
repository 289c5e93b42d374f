"""`toolkit bench` command-line wiring."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.cli.common import (
    DeprecatedAlias,
    check_runtimes,
    dataset_args,
    dataset_options,
    exports_arg,
    int_list,
    quiet_arg,
)


def bench_args(p: argparse.ArgumentParser) -> None:
    quiet_arg(p)
    from toolkit import runners
    from toolkit.config import BenchConfig

    d = BenchConfig()
    exports_arg(p)
    dataset_args(p, "the dataset recorded in the manifest; its test images are the inputs")
    p.add_argument("--model", type=Path, default=None, metavar="PATH",
                   help="the reference Keras model, if it moved (must be the model the export came from)")
    p.add_argument("--variants", nargs="+", default=(), metavar="VARIANT",
                   help="variants to time, 'keras' for the reference model (default: all and keras)")
    every = runners.load_all()
    p.add_argument("--runtimes", nargs="+", default=(), metavar="RUNTIME",
                   help="runtimes: " + "; ".join(f"{r.name} ({', '.join(r.formats)}): {r.summary}"
                                                for r in every.values())
                   + ". Default: " + ", ".join(r.name for r in every.values() if r.in_default_set)
                   + "".join(f", and {r.name} where it can run here" for r in every.values()
                             if r.default_where_available)
                   + "; each where it fits a variant's format")
    p.add_argument("--device", default=d.device, choices=("cpu", "cuda"),
                   help="cpu, or cuda: exits 6 if no runtime really uses a GPU (default: %(default)s)")
    p.add_argument("--allow-fallback", action="store_true",
                   help="with --device cuda: run on the CPU where the GPU is unusable; rows say cpu and why")
    int_list(p, "--batch-sizes", d.batch_sizes, "batch sizes")
    int_list(p, "--threads", d.threads, "intra-op thread counts")
    p.add_argument("--warmup", type=int, default=d.warmup_runs, metavar="N",
                   help="warm-up runs before timing (default: %(default)s)")
    p.add_argument("--warmup-seconds", type=float, default=d.warmup_seconds, metavar="S",
                   help="and at least this long (default: %(default)s)")
    p.add_argument("--min-runs", type=int, default=d.min_runs, metavar="N",
                   help="timed runs per row, at least (default: %(default)s)")
    p.add_argument("--min-seconds", type=float, default=d.min_seconds, metavar="S",
                   help="timed seconds per row, at least (default: %(default)s)")
    p.add_argument("--input-seed", type=int, default=d.seed, metavar="N", dest="input_seed",
                   help="seed choosing the test images fed as inputs (default: %(default)s)")
    p.add_argument("--seed", type=int, dest="input_seed", action=DeprecatedAlias, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="results JSON; .csv, .md and -latency/-tradeoff .png are written beside it "
                   "(default: DIR/bench.json)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def bench_run(args: argparse.Namespace) -> int:
    from toolkit.bench import run_bench, write_outputs
    from toolkit.bench_render import shown, skipped_line
    from toolkit.config import BenchConfig

    check_runtimes(args)
    cfg = BenchConfig(
        exports=args.exports, data_dir=args.data_dir, dataset=args.dataset, dataset_options=dataset_options(args),
        model=args.model, variants=tuple(args.variants),
        runtimes=tuple(args.runtimes), device=args.device, batch_sizes=args.batch_sizes,
        threads=args.threads, warmup_runs=args.warmup, warmup_seconds=args.warmup_seconds,
        min_runs=args.min_runs, min_seconds=args.min_seconds, seed=args.input_seed, json_path=args.json,
        allow_fallback=args.allow_fallback, plots=not args.no_plots, verbose=not args.quiet,
    )
    doc = run_bench(cfg)
    paths = write_outputs(doc, cfg)
    print(f"{'variant':<15} {'runtime':<16} {'device':<6} {'batch':>5} {'thr':>3} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'img/s':>10} {'peak MiB':>9}")
    for r in doc["results"]:
        print(f"{shown(r):<15} {r['runtime']:<16} {r['device']:<6} {r['batch_size']:>5} {r['threads']:>3} "
              f"{r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} {r['throughput']:>10,.0f} {r['peak_rss_mb']:>9.1f}")
    for s in doc["skipped"]:
        print(f"skipped {skipped_line(s)}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if doc["failed"]:
        from toolkit.bench import failed_line
        from toolkit.errors import PartialError

        for f in doc["failed"]:
            print("FAILED " + failed_line(f)[2:])
        raise PartialError(f"{len(doc['failed'])} row(s) failed, {len(doc['results'])} measured and written",
                           hint=f"the runtimes' whole reasons are in {paths['json']} under 'failed'")
    return 0


COMMANDS = {
    "bench": (
        bench_args, bench_run,
        "latency/throughput per format x runtime x batch x threads",
        "Time every exported variant (and the Keras reference as a tf.function) on every runtime that "
        "runs its format (--runtimes lists them: LiteRT, onnxruntime, OpenVINO, TensorFlow, TFLM, ...); "
        "with --device cuda the runtimes that can use the GPU. Each variant x runtime x thread count "
        "runs in a fresh process whose peak resident memory is recorded per row. Load and first "
        "inference are reported apart; then warm-up, then at least --min-runs and --min-seconds of "
        "timed calls. Reports min/p50/p90/p99/mean/std, throughput and peak RSS, with the providers "
        "actually used and the machine. Writes JSON (every sample), CSV, Markdown and PNG plots. "
        "A runtime that cannot load or run one file costs that row only: it is listed as failed with "
        "the runtime's whole reason, every other row is measured and written, and the command exits 7.",
    ),
}
