"""`toolkit gate` command-line wiring."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from toolkit.cli.common import byte_size, exports_arg, int_list, quiet_arg, strict_arg


def _budget(text: str) -> tuple[str, int]:
    variant, sep, value = text.partition("=")
    try:
        if not sep or not variant:
            raise ValueError
        return variant, byte_size(value)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected VARIANT=SIZE (e.g. tflite-int8=3.4M), got {text!r}") from None


def _ms_budget(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name or not float(value) > 0:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CONFIG=MS (e.g. ethos-u55-128=10), got {text!r}") from None


def gate_args(p: argparse.ArgumentParser) -> None:
    quiet_arg(p)
    p.add_argument("--baseline", type=Path, required=True, metavar="OLD_DIR",
                   help="the export to compare against (a directory with manifest.json, parity.json and its "
                   "predictions, as the commands write them)")
    exports_arg(p)
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="MNIST IDX directory, for the images the latency re-measurement feeds (default: "
                   "$TOOLKIT_DATA_DIR)")
    p.add_argument("--accuracy-margin", type=float, default=0.1, metavar="PTS",
                   help="non-inferiority margin: each variant's accuracy drop, new against old on the same images, "
                   "must be at most this many points on its interval (default: %(default)s)")
    p.add_argument("--ship", nargs="+", default=(), metavar="VARIANT[@RUNTIME]",
                   help="the variants whose latency is gated, each on its format's reference runtime or the one "
                   "named (default: the int8 variants in both exports)")
    int_list(p, "--latency-batch-sizes", (1,), "batch sizes of the latency checks")
    int_list(p, "--latency-threads", (1,), "thread counts of the latency checks")
    p.add_argument("--latency-margin", type=float, default=0.10, metavar="FRACTION",
                   help="the new p50 may be at most 1 + FRACTION times the old, on the interval of the re-measured "
                   "ratio (default: %(default)s)")
    p.add_argument("--latency-rounds", type=int, default=5, metavar="N",
                   help="fresh processes re-measuring baseline and new file in turns; 0: no latency checks "
                   "(default: %(default)s; at least 3)")
    p.add_argument("--max-bytes", type=_budget, action="append", default=[], metavar="VARIANT=N",
                   help="size budget for a variant's model bytes, e.g. tflite-int8=3.4M (K, M: 1024-based); "
                   "repeatable")
    p.add_argument("--max-arena", type=byte_size, default=None, metavar="SIZE",
                   help="budget for the TFLM tensor arena of tflite-micro variants, e.g. 48K (K = 1024) or 49152")
    p.add_argument("--max-npu-sram", type=_budget, action="append", default=[], metavar="CONFIG=SIZE",
                   help="budget for the SRAM Vela estimates on an Ethos-U configuration, e.g. ethos-u55-128=256K, "
                   "for every variant the new export's footprint.json compiled for it (`toolkit footprint --npu`); "
                   "repeatable. Also fails any operator type the new export runs on the CPU more often than the "
                   "baseline did, whenever both footprint.json files hold NPU rows")
    p.add_argument("--max-npu-flash", type=_budget, action="append", default=[], metavar="CONFIG=SIZE",
                   help="the same for flash (on- and off-chip), e.g. ethos-u55-128=4M")
    p.add_argument("--max-npu-ms", type=_ms_budget, action="append", default=[], metavar="CONFIG=MS",
                   help="the same for Vela's estimated time per inference in milliseconds, e.g. ethos-u55-128=10")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="where to write the JSON verdict (default: DIR/gate.json; .md beside it)")
    p.add_argument("--junit", type=Path, default=None, metavar="FILE", help="also write the verdict as JUnit XML")
    strict_arg(p)


# The options the pytest plugin offers as --toolkit-NAME, with the same types, defaults and help: every
# check setting of the gate (not where files go, nor --quiet: the plugin reports through pytest).
PLUGIN_EXCLUDED = ("-h", "--help", "--quiet", "--exports", "--baseline", "--json", "--junit")


def gate_config(args: argparse.Namespace):
    """The frozen GateConfig from parsed options (the command's or the pytest plugin's)."""
    from toolkit.gate import GateConfig

    return GateConfig(baseline=args.baseline, exports=args.exports, accuracy_margin_points=args.accuracy_margin,
                      latency_margin=args.latency_margin, ship=tuple(args.ship),
                      latency_batch_sizes=tuple(args.latency_batch_sizes), latency_threads=tuple(args.latency_threads),
                      latency_rounds=args.latency_rounds, data_dir=args.data_dir, max_bytes=dict(args.max_bytes),
                      max_arena=args.max_arena, json_path=getattr(args, "json", None),
                      npu_budgets={kind: dict(getattr(args, f"max_npu_{kind}")) for kind in ("sram", "flash", "ms")
                                   if getattr(args, f"max_npu_{kind}")},
                      junit=getattr(args, "junit", None), strict=args.strict, verbose=not getattr(args, "quiet", True))


def gate_run(args: argparse.Namespace) -> int:
    from toolkit.errors import GateError
    from toolkit.gate import print_verdict, run_gate, write_outputs

    cfg = gate_config(args)
    doc = run_gate(cfg)
    paths = write_outputs(doc, cfg)
    print_verdict(doc)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    s = doc["summary"]
    if s["failed"]:
        raise GateError(f"{s['failed']} gate check(s) failed against {args.baseline}", hint=f"see {paths['markdown']}")
    if s["incomplete"]:
        from toolkit.errors import PartialError

        raise PartialError(f"{s['incomplete']} row(s) of the new export could not be checked or "
                           "measured; no other check failed", hint=f"see {paths['markdown']}")
    if s["inconclusive"]:
        print(f"INCONCLUSIVE: {s['inconclusive']} check(s) cannot be decided on these measurements (each line says "
              "what would decide it)", file=sys.stderr)
        if args.strict:
            raise GateError(f"{s['inconclusive']} gate check(s) inconclusive (--strict)",
                            hint=f"see {paths['markdown']}")
    return 0


COMMANDS = {
    "gate": (
        gate_args, gate_run,
        "compare an export with a baseline for CI: accuracy, latency, size",
        "Compare DIR (the new export) with --baseline OLD_DIR and fail (exit 4) when the data show a variant "
        "got less accurate (non-inferiority on the same test images: the same file passes without sampling), "
        "slower (the shipped variants are re-measured, baseline and new in turns in fresh processes, and the "
        "interval of their p50 ratio lies beyond 1 + --latency-margin), bigger than a budget, stopped passing "
        "its own parity gates, or disappeared. Each check is pass, fail or inconclusive on its interval; "
        "inconclusive exits 0 unless --strict. Each interval is two-sided at 1 - 0.05/m for m checks and a check "
        "fails only when its whole interval is beyond the bound, so the chance of any false alarm is at most "
        "2.5%% for the accuracy checks together and 2.5%% for the latency checks together. The smallest slowdown "
        "that fails: a ratio fails from about (1 + --latency-margin) x e^h, h the half-width of its interval in log "
        "space, passes below (1 + margin) x e^-h and is inconclusive between; each latency line prints both for "
        "its own width (benchmarks/GATE.md measures them on a shared 2-core machine; more --latency-rounds "
        "narrow the band). Writes a Markdown and JSON verdict with one line per check, and --junit XML.",
    ),
}
