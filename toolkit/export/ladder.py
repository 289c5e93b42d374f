"""The int8 ladder: ``--max-accuracy-drop`` with ``--learned-rounding`` and/or ``--fine-tune``. Cheaper rungs
first, stopping at the first that meets the budget on the validation images (and, where the split allows, on the
held-out half: the search's ``confirmation``):

1. plain int8 from the model's own weights, then the layer-precision search on them (toolkit/control_search.py);
2. only where that misses the budget, and with ``--learned-rounding``: the weights' rounding learned on the
   exporter's weight grid (once per export and grid, shared by the int8 variants on it; toolkit/quantize/rounding.py),
   and the variant made again from them, plain then searched;
3. only where that misses it too, and with ``--fine-tune``: quantization-aware fine-tuning toward the model through
   the exporter's weight grid (likewise once per grid; toolkit/quantize/finetune.py), likewise. A rung's file
   replaces the one before only when its search meets the budget.

Fine-tuning is the slowest rung (minutes against seconds), and on every model benchmarks/PTQ.md fine-tuned it kept the
model's own weights (no epoch agreed better beyond noise), so it runs only where the search could not do it.
Each variant's manifest entry records the rungs tried: what, whether the budget was met, the seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from toolkit.export.variant import VariantFailed

FIRST = "plain int8 from the model's own weights, then the layer-precision search"
ROUNDING = "learned weight rounding and bias correction, then plain int8 and the search from its weights"
SECOND = "quantization-aware fine-tuning toward the model, then plain int8 and the search from its weights"
ROUNDED_WEIGHTS = "learned rounding onto the int8 weight grid {grid} (manifest: learned_rounding)"


def grid_name(levels: int) -> str:
    """How the manifest names a weight grid of -levels..levels (learned_rounding's keys, an entry's weights)."""
    return f"-{levels}..{levels}"
TUNED_WEIGHTS = "fine-tuned toward the model through the int8 weight grid {grid} (manifest: fine_tuning)"


class Rung(NamedTuple):
    """A weight step of the ladder: its name, the export context it makes (the same context when the step kept
    the model's own weights), what the manifest says of the weights a kept file came from, and why nothing was
    built again when the step kept the own weights."""

    rung: str
    context: Callable[[], object]
    weights: str
    kept_own: str | Callable[[], str]  # or, when the step's record says why, a function that reads it


def _met(entry: dict) -> bool:
    return bool((entry.get("accuracy_control") or {}).get("met"))


def _files(entry: dict, generation) -> list[Path]:
    """The files of an entry in ``generation`` (its artifact and companions)."""
    recorded = [entry["path"], *(c["path"] for c in entry.get("companions", []))]
    return [generation.file(Path(r).name) for r in recorded]


def _try(build, rung: Rung, context, entry: dict, generation, start: float) -> tuple[dict | None, dict]:
    """The variant made again from ``context``: (its entry when its search met the budget, else None; the rung's
    record). The files in place are set aside and come back unless the new file is kept."""
    aside = [(path, path.with_name(path.name + ".first-rung")) for path in _files(entry, generation)]
    for path, moved in aside:
        path.replace(moved)
    try:
        again = build(context)
    except VariantFailed as exc:  # the step's weights would not convert: the file before stands
        for path, moved in aside:
            moved.replace(path)
        return None, {"rung": rung.rung, "met": False, "seconds": round(time.perf_counter() - start, 1),
                      "kept": False,
                      "why": f"the variant could not be made from its weights: {exc.record.get('reason')}"}
    met = _met(again)
    record = {"rung": rung.rung, "met": met, "seconds": round(time.perf_counter() - start, 1), "kept": met}
    if met:
        for _, moved in aside:
            moved.unlink()
        return {**again, "weights": rung.weights}, record
    for path in _files(again, generation):
        path.unlink(missing_ok=True)
    for path, moved in aside:
        moved.replace(path)
    record["why"] = "its search missed the budget too: the file before it stands"
    return None, record


def climb(build: Callable[[object], dict], ctx, steps: list[Rung], generation,
          log: Callable[[str], None] = lambda s: None) -> dict:
    """One int8 variant's manifest entry by the ladder. ``build(ctx)`` makes the variant into ``generation`` (and
    returns its entry); each of ``steps`` is tried in order while the budget is missed."""
    start = time.perf_counter()
    entry = build(ctx)
    rungs = [{"rung": FIRST, "met": _met(entry), "seconds": round(time.perf_counter() - start, 1)}]
    if rungs[0]["met"]:
        log(f"  {entry['variant']}: the search met the budget on the model's own weights; no weight step needed")
        rungs += [{"rung": r.rung, "skipped": "the first rung met the budget"} for r in steps]
        return {**entry, "ladder": rungs}
    for i, rung in enumerate(steps):
        start = time.perf_counter()
        context = rung.context()
        if context is ctx:
            rungs.append({"rung": rung.rung, "met": False, "seconds": round(time.perf_counter() - start, 1),
                          "kept": False, "why": rung.kept_own() if callable(rung.kept_own) else rung.kept_own})
            continue
        log(f"  the search missed the budget: {entry['variant']} again from the weights of: {rung.rung}")
        kept, record = _try(build, rung, context, entry, generation, start)
        rungs.append(record)
        if kept is not None:
            rungs += [{"rung": r.rung, "skipped": "an earlier rung met the budget"} for r in steps[i + 1:]]
            return {**kept, "ladder": rungs}
    return {**entry, "ladder": rungs}


def step_record(record: dict, entries: list[dict], ladder: bool, weights: str) -> dict:
    """The manifest's record of a weight step (fine_tuning, learned_rounding) on one weight grid, with the variants
    made from its weights: every int8 variant on that grid, or under the ladder only those whose search met the
    budget from them."""
    if "model" not in record:
        return record
    used = [e["variant"] for e in entries if e.get("weights") == weights]
    if not ladder:
        return {**record, "variants": ", ".join(used) or "none (no int8 variant on this grid was made)"}
    return {**record, "variants": ", ".join(used) + " (the ladder kept the file made from these weights where its "
                                                    "search met the budget)" if used else
            "none: no search met the budget from these weights, so no int8 variant is made from them"}
