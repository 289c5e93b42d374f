"""The gate's NPU checks (`toolkit gate`, the pytest plugin): a new export against its baseline on the NPU
estimates `toolkit footprint --npu` recorded in each footprint.json.

- **CPU fallbacks**: for each variant and configuration both exports were compiled for, no operator type may
  run on the CPU more often than in the baseline (a new fallback costs the NPU's speed where it matters
  most; compared by operator type, not by tensor name, which a retrained model may change).
- **Budgets**: SRAM, flash (on- and off-chip) and estimated time per inference of every variant compiled
  for a named configuration, at most the budget given.

Vela's estimates are deterministic (the same bytes and configuration give the same figures), so these
checks pass or fail without an interval; a budget for a configuration the new export was not compiled for
fails, saying which command to run (as `--max-arena` does without a tflite-micro variant).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

PASS, FAIL = "pass", "fail"
BUDGETS = {  # budget kind -> (what it bounds, its value in a row, unit, how it is shown)
    "sram": ("SRAM", lambda r: r["sram_kib"] * 1024, "bytes"),
    "flash": ("flash", lambda r: (r["off_chip_flash_kib"] + r["on_chip_flash_kib"]) * 1024, "bytes"),
    "ms": ("estimated time per inference", lambda r: r["inference_ms"], "ms"),
}


def _rows(footprint: Mapping | None) -> dict[tuple[str, str], Mapping]:
    npu = (footprint or {}).get("npu") or {}
    return {(r["variant"], r["target"]): r for r in npu.get("rows", [])}


def _shown(value: float, unit: str) -> str:
    return f"{value:,.0f} bytes" if unit == "bytes" else f"{value:.3f} ms"


def fallback_checks(old: Mapping | None, new: Mapping | None) -> list[tuple]:
    """(kind, name, status, detail, values) per variant and configuration compiled in both exports."""
    old_rows, new_rows = _rows(old), _rows(new)
    out = []
    for key in sorted(set(old_rows) & set(new_rows)):
        before = Counter(f["operator"] for f in old_rows[key]["cpu_fallbacks"])
        after = Counter(f["operator"] for f in new_rows[key]["cpu_fallbacks"])
        more = after - before
        name = f"{key[0]} on {key[1]}"
        values = {"cpu_operators_before": sum(before.values()), "cpu_operators_after": sum(after.values())}
        if more:
            moved = [f for f in new_rows[key]["cpu_fallbacks"] if f["operator"] in more]
            out.append(("npu", name, FAIL, "new CPU fallback(s) against the baseline: " + "; ".join(
                f"{f['operator']} ({f['output']}): {f['reason']}" for f in moved), values))
        else:
            out.append(("npu", name, PASS, f"no operator moved to the CPU ({sum(after.values())} on the CPU, "
                                           f"{sum(before.values())} in the baseline; Vela's placement)", values))
    missing = sorted(set(old_rows) - set(new_rows))
    if missing and new_rows:
        out += [("npu", f"{v} on {t}", FAIL, "compiled for the NPU in the baseline, not in the new export",
                 {}) for v, t in missing]
    return out


def budget_checks(new: Mapping | None, budgets: Mapping[str, Mapping[str, float]]) -> list[tuple]:
    """(kind, name, status, detail, values) per budget kind, configuration and variant compiled for it."""
    rows = _rows(new)
    out = []
    for kind, per_target in budgets.items():
        what, value_of, unit = BUDGETS[kind]
        for target, budget in per_target.items():
            matching = [r for (_, t), r in rows.items() if t == target]
            if not matching:
                out.append(("npu", f"{target} {kind}", FAIL, f"an NPU {what} budget for {target}, but the new export "
                            f"was not compiled for it (run `toolkit footprint --npu {target}` on it)", {}))
            for r in matching:
                value = value_of(r)
                out.append(("npu", f"{r['variant']} on {target} {kind}", PASS if value <= budget else FAIL,
                            f"{what} {_shown(value, unit)} (budget {_shown(budget, unit)}; Vela's estimate)",
                            {"value": value, "budget": budget, "unit": unit}))
    return out
