"""`toolkit gate` command-line wiring."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.cli.common import exports_arg


def _budget(text: str) -> tuple[str, int]:
    variant, sep, value = text.partition("=")
    try:
        if not sep or not variant:
            raise ValueError
        return variant, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected VARIANT=BYTES, got {text!r}") from None


def _bool(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def gate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", type=Path, required=True, metavar="OLD_DIR",
                   help="the export to compare against (a directory with manifest.json, parity.json and its "
                   "predictions, and optionally bench.json, as the commands write them)")
    exports_arg(p)
    p.add_argument("--accuracy-margin", type=float, default=0.1, metavar="PTS",
                   help="non-inferiority margin: the upper 95%% bound of each variant's accuracy drop, new against "
                   "old on the same images, must stay under this many points (default: %(default)s)")
    p.add_argument("--latency-margin", type=float, default=0.10, metavar="FRACTION",
                   help="relative margin: a p50/p90 regression only when the new 95%% interval lies above the old "
                   "upper bound times 1 + FRACTION (default: %(default)s)")
    p.add_argument("--same-machine-only", type=_bool, default=True, metavar="true|false",
                   help="gate latency only on rows measured on the same kind of machine as the baseline (CPU model, "
                   "cores, GPUs); other rows are reported (default: true)")
    p.add_argument("--max-bytes", type=_budget, action="append", default=[], metavar="VARIANT=N",
                   help="size budget for a variant's model bytes; repeatable")
    p.add_argument("--max-arena", type=int, default=None, metavar="N",
                   help="budget for the TFLM tensor arena of tflite-micro variants, in bytes")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="where to write the JSON verdict (default: DIR/gate.json; .md beside it)")
    p.add_argument("--junit", type=Path, default=None, metavar="FILE", help="also write the verdict as JUnit XML")


def gate_run(args: argparse.Namespace) -> int:
    from toolkit.errors import GateError
    from toolkit.gate import GateConfig, print_verdict, run_gate, write_outputs

    cfg = GateConfig(baseline=args.baseline, exports=args.exports, accuracy_margin_points=args.accuracy_margin,
                     latency_margin=args.latency_margin, same_machine_only=args.same_machine_only,
                     max_bytes=dict(args.max_bytes), max_arena=args.max_arena, json_path=args.json, junit=args.junit)
    doc = run_gate(cfg)
    paths = write_outputs(doc, cfg)
    print_verdict(doc)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if not doc["passed"]:
        raise GateError(f"{doc['summary']['failed']} gate check(s) failed against {args.baseline}",
                        hint=f"see {paths['markdown']}")
    if doc["summary"]["incomplete"]:
        from toolkit.errors import PartialError

        raise PartialError(f"{doc['summary']['incomplete']} row(s) of the new export could not be checked or "
                           "measured; every other check passed", hint=f"see {paths['markdown']}")
    return 0


COMMANDS = {
    "gate": (
        gate_args, gate_run,
        "compare an export with a baseline for CI: accuracy, latency, size",
        "Compare DIR (the new export) with --baseline OLD_DIR and fail (exit 4) when a variant got less "
        "accurate (non-inferiority on the same test images), slower (p50/p90 intervals beyond a relative "
        "margin), bigger than a budget, stopped passing its own parity gates, or disappeared. Writes a "
        "Markdown and JSON verdict with one line per check, and --junit XML.",
    ),
}
