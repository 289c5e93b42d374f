"""Redraw the committed bench figures from their JSON (after a change to how figures are drawn):

    python benchmarks/redraw.py

results/<machine>-run{1,2}-latency.png, -memory.png and -tradeoff.png from results/<machine>-run{1,2}.json
and results/<machine>-parity.json (the accuracy of every variant under the runtime it was timed on), for
each machine with committed results (cpu: AMD EPYC; cpu-intel-amx: Intel Xeon with AMX).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from toolkit.plots import plot_latency, plot_memory, plot_tradeoff  # noqa: E402


def main() -> int:
    results = HERE / "results"
    for machine in ("cpu", "cpu-intel-amx"):
        parity = json.loads((results / f"{machine}-parity.json").read_text())
        for run in (f"{machine}-run1", f"{machine}-run2"):
            doc = json.loads((results / f"{run}.json").read_text())
            plot_latency(doc, results / f"{run}-latency.png")
            plot_memory(doc, results / f"{run}-memory.png")
            plot_tradeoff(doc, parity, results / f"{run}-tradeoff.png")
            print(f"redrew results/{run}-*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
