"""Redraw the committed bench figures from their JSON (after a change to how figures are drawn):

    python benchmarks/redraw.py

results/<machine>-run{1,2}-latency.png, -memory.png and -tradeoff.png from results/<machine>-run{1,2}.json
and results/<machine>-parity.json (the accuracy of every variant under the runtime it was timed on), for
each machine with committed results (cpu: AMD EPYC; cpu-intel-amx: Intel Xeon with AMX).
"""

from __future__ import annotations

from _common import RESULTS, parser

from toolkit import schema
from toolkit.plots import plot_latency, plot_memory, plot_tradeoff


def main() -> int:
    parser(__doc__).parse_args()  # --help answers without redrawing
    for machine in ("cpu", "cpu-intel-amx"):
        parity = schema.Parity.read_file(RESULTS / f"{machine}-parity.json")
        for run in (f"{machine}-run1", f"{machine}-run2"):
            doc = schema.Bench.read_file(RESULTS / f"{run}.json")
            plot_latency(doc, RESULTS / f"{run}-latency.png")
            plot_memory(doc, RESULTS / f"{run}-memory.png")
            plot_tradeoff(doc, parity, RESULTS / f"{run}-tradeoff.png")
            print(f"redrew results/{run}-*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
