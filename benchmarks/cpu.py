"""Committed CPU results: `toolkit bench` twice back to back on the export in exports/, the
run-to-run spread of every row's p50, and `toolkit parity` under the same runtimes (so every
row's accuracy is measured under the settings it was timed with).

    python benchmarks/cpu.py [--exports exports] [--out benchmarks/results] [--name cpu] [--runtimes R ...]

``--name`` prefixes every file (``--name cpu-intel-amx`` on a second CPU kind: RESULTS.md then
compares the two machines' rankings row by row).

Default runtimes: litert, onnxruntime, tflm, tensorflow, openvino and openvino-bf16 (OpenVINO's
CPU default on bf16 hardware, beside its f32). Writes results/cpu-run1.{json,csv,md,-latency.png,
-memory.png,-tradeoff.png}, results/cpu-run2.*, results/cpu-spread.json and
results/cpu-parity.json. `python benchmarks/results_md.py` turns them into RESULTS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import RESULTS, parser, row_key, run_toolkit

from toolkit import schema
from toolkit.artifacts import atomic_write_json
from toolkit.provenance import provenance


def cpu_runtimes() -> list[str]:
    """bench's default runtimes that run on a CPU, those it measures only where the CPU has what they need
    (OpenVINO's bf16 default) included: the same rows on every CPU kind."""
    from toolkit import runners

    return [r.name for r in runners.load_all().values()
            if "cpu" in r.devices and (r.in_default_set or r.default_where_available)]


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--exports", type=Path, default=Path("exports"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--runtimes", nargs="+", default=None,
                   help="default: bench's default runtimes that run on a CPU, openvino-bf16 included")
    p.add_argument("--name", default="cpu", help="prefix of the result files (default: %(default)s)")
    p.add_argument("extra", nargs="*", help="extra `toolkit bench` arguments (after --)")
    args = p.parse_args()
    runtimes = args.runtimes or cpu_runtimes()
    run_toolkit("parity", "--exports", args.exports, "--runtimes", *runtimes,
                "--json", args.out / f"{args.name}-parity.json", check=True)
    runs = []
    for i in (1, 2):
        path = args.out / f"{args.name}-run{i}.json"
        run_toolkit("bench", "--exports", args.exports, "--runtimes", *runtimes, "--json", path, *args.extra,
                    check=True)
        runs.append(schema.Bench.read_file(path))
    second = {row_key(r): r for r in runs[1].results}
    rows = []
    for r in runs[0].results:
        other = second[row_key(r)]
        a, b = r["p50_ms"], other["p50_ms"]
        rows.append({"variant": r["variant"], "runtime": r["runtime"], "batch_size": r["batch_size"],
                     "threads": r["threads"], "p50_ms_run1": a, "p50_ms_run2": b,
                     "spread_percent": abs(a - b) / min(a, b) * 100})
    spreads = sorted(row["spread_percent"] for row in rows)
    atomic_write_json(args.out / f"{args.name}-spread.json", {
        "rows": rows,
        "median_spread_percent": spreads[len(spreads) // 2],
        "max_spread_percent": spreads[-1],
        "definition": "|p50 run1 - p50 run2| / min(p50 run1, p50 run2), two `toolkit bench` runs back to back",
        "provenance": provenance(),
    })
    print(f"p50 run-to-run spread: median {spreads[len(spreads) // 2]:.1f}%, max {spreads[-1]:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
