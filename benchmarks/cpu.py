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

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toolkit.artifacts import atomic_write_json  # noqa: E402
from toolkit.provenance import provenance  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", type=Path, default=Path("exports"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--runtimes", nargs="+",
                        default=["litert", "onnxruntime", "tflm", "tensorflow", "openvino", "openvino-bf16"])
    parser.add_argument("--name", default="cpu", help="prefix of the result files (default: %(default)s)")
    parser.add_argument("extra", nargs="*", help="extra `toolkit bench` arguments (after --)")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "toolkit", "parity", "--exports", str(args.exports), "--runtimes",
                    *args.runtimes, "--json", str(args.out / f"{args.name}-parity.json")], check=True)
    runs = []
    for i in (1, 2):
        path = args.out / f"{args.name}-run{i}.json"
        subprocess.run([sys.executable, "-m", "toolkit", "bench", "--exports", str(args.exports),
                        "--runtimes", *args.runtimes, "--json", str(path), *args.extra], check=True)
        runs.append(json.loads(path.read_text()))
    key = lambda r: (r["variant"], r["runtime"], r["batch_size"], r["threads"])  # noqa: E731
    second = {key(r): r for r in runs[1]["results"]}
    rows = []
    for r in runs[0]["results"]:
        other = second[key(r)]
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
