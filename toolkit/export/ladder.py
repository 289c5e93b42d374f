"""The int8 ladder: ``--max-accuracy-drop`` with ``--fine-tune``. Cheaper rungs first, stopping at the first that
meets the budget on the validation images (and, where the split allows, on the held-out half: the search's
``confirmation``):

1. plain int8 from the model's own weights, then the layer-precision search on them (toolkit/control_search.py);
2. only where that misses the budget: quantization-aware fine-tuning toward the model (once per export, shared
   by the int8 variants; toolkit/quantize/finetune.py), and the variant made again from the fine-tuned weights,
   plain then searched. It replaces the first rung's file only when its search meets the budget.

Fine-tuning is the slowest rung (minutes against seconds), and on every model benchmarks/PTQ.md fine-tuned it kept the
model's own weights (no epoch agreed better beyond noise), so it runs only where the search could not do it.
Each variant's manifest entry records the rungs tried: what, whether the budget was met, the seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from toolkit.export.variant import VariantFailed

FIRST = "plain int8 from the model's own weights, then the layer-precision search"
SECOND = "quantization-aware fine-tuning toward the model, then plain int8 and the search from its weights"


def _met(entry: dict) -> bool:
    return bool((entry.get("accuracy_control") or {}).get("met"))


def _files(entry: dict, generation) -> list[Path]:
    """The files of an entry in ``generation`` (its artifact and companions)."""
    recorded = [entry["path"], *(c["path"] for c in entry.get("companions", []))]
    return [generation.file(Path(r).name) for r in recorded]


def climb(build: Callable[[object], dict], ctx, tuned: Callable[[], object], generation,
          log: Callable[[str], None] = lambda s: None) -> dict:
    """One int8 variant's manifest entry by the ladder. ``build(ctx)`` makes the variant into ``generation`` (and
    returns its entry); ``tuned()`` the fine-tuned export context (the same ``ctx`` when fine-tuning kept the
    model's own weights)."""
    start = time.perf_counter()
    entry = build(ctx)
    rungs = [{"rung": FIRST, "met": _met(entry), "seconds": round(time.perf_counter() - start, 1)}]
    if rungs[0]["met"]:
        log(f"  {entry['variant']}: the search met the budget on the model's own weights; no fine-tuning needed")
        rungs.append({"rung": SECOND, "skipped": "the first rung met the budget"})
        return {**entry, "ladder": rungs}
    start = time.perf_counter()
    context = tuned()
    if context is ctx:
        rungs.append({"rung": SECOND, "met": False, "seconds": round(time.perf_counter() - start, 1),
                      "kept": False, "why": "fine-tuning kept the model's own weights (no epoch agreed better "
                                            "beyond noise): the first rung's file stands"})
        return {**entry, "ladder": rungs}
    aside = [(path, path.with_name(path.name + ".first-rung")) for path in _files(entry, generation)]
    for path, moved in aside:
        path.replace(moved)
    log(f"  the search missed the budget on the model's own weights: {entry['variant']} again from the "
        "fine-tuned weights")
    try:
        second = build(context)
    except VariantFailed as exc:  # the fine-tuned weights would not convert: the first rung's file stands
        for path, moved in aside:
            moved.replace(path)
        rungs.append({"rung": SECOND, "met": False, "seconds": round(time.perf_counter() - start, 1), "kept": False,
                      "why": f"the variant could not be made from the fine-tuned weights: {exc.record.get('reason')}"})
        return {**entry, "ladder": rungs}
    met = _met(second)
    rungs.append({"rung": SECOND, "met": met, "seconds": round(time.perf_counter() - start, 1), "kept": met})
    if met:
        for _, moved in aside:
            moved.unlink()
        return {**second, "weights": "fine-tuned toward the model (manifest: fine_tuning)", "ladder": rungs}
    for path in _files(second, generation):
        path.unlink(missing_ok=True)
    for path, moved in aside:
        moved.replace(path)
    rungs[-1]["why"] = "its search missed the budget too: the first rung's file stands"
    return {**entry, "ladder": rungs}


def fine_tuning_record(record: dict, entries: list[dict], ladder: bool) -> dict:
    """The manifest's fine_tuning record; under the ladder, which variants use the fine-tuned weights: only those
    whose search met the budget from them."""
    if not ladder or "model" not in record:
        return record
    used = [e["variant"] for e in entries if e.get("weights")]
    return {**record, "variants": ", ".join(used) + " (the ladder kept the fine-tuned file where its search met the "
                                                    "budget)" if used else
            "none: no search met the budget from the fine-tuned weights, so every int8 variant is the first rung's"}
