"""Accuracy-controlled int8 (`toolkit export --max-accuracy-drop PTS`, `--recipe FILE`).

Plain full-integer int8 is exported first. Its accuracy drop against the Keras model is measured
on the **validation split** (the test set stays for parity's final figure) with a paired 95%
interval (Newcombe). If the upper bound is above the budget, the search raises the precision of
one layer at a time, the layer that adds the most quantization error first, and re-measures:

1. ``int16x8``: 16-bit activations with 8-bit weights for that layer, still full-integer
   (LiteRT/TFLM 16x8 kernels through ai-edge-quantizer; int16 QDQ in ONNX);
2. ``float``: the layer left in float (not full-integer: ``int8_only: false``).

Per-layer error, for both formats the same measure as `parity --diagnose onnx-int8`: each
activation of the quantized model is compared with the float model's (SQNR, dB) on validation
images, and a layer is charged with the SQNR it loses between its inputs and its output.

The search stops when the bound holds, or when ``max_layers`` layers are changed and none of them
can go higher; it then keeps the step with the lowest bound (exit 4 from the CLI). The outcome is
a recipe (the layers changed, to what, in which order, the validation drop and the cost of each
step in bytes and batch-1 p50 latency) that ``--recipe`` replays without searching.

Formats register a ``Backend`` here (one per format): what the layers are, how a model with a
given precision per layer is built, how its activations compare with the float model's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.config import Gates
from toolkit.errors import UsageError
from toolkit.stats import paired_difference_interval, wilson_interval

LEVELS = ("int8", "int16x8", "float")
INTEGER_LEVELS = ("int8", "int16x8")
RANK_IMAGES = 256  # validation images the per-layer error is measured on
RECIPE_FILE = "quantization-recipe.json"
RECIPE_SCHEMA = 1
# a controlled model slower than this times plain int8 at batch 1 is named as such in its outcome
SLOWER_THAN_PLAIN = 1.25
# the step limit beyond the layer limit: each layer can be raised at most twice
MAX_STEPS_PER_LAYER = len(LEVELS) - 1


@dataclass(frozen=True)
class ControlSettings:
    """The search's acceptance test is parity's int8 gates by parity's rule (toolkit/verdicts.py), on
    the validation split: the accuracy loss must *pass* against the budget (its interval within
    ``max_drop``) and agreement with Keras must *pass* against parity's int8 agreement gate (99.5%, or
    ``min_agreement``). Pass, not merely "not fail": an agreement of 99.38% is inconclusive on 5,000
    validation images but fails on 10,000 test images, so anything weaker than pass would accept
    models parity then fails. So an export the search accepts is one `toolkit parity` passes."""

    max_drop: float | None  # percentage points; None: only --recipe replay
    max_layers: int = 5
    recipe: dict | None = None  # a recipe file's content to replay
    confidence: float = 0.95
    min_agreement: float | None = None  # percent of validation images on which it must agree with Keras
    parity_min_agreement: float = Gates.int8_min_agreement  # parity's int8 agreement gate

    def verdicts(self, m: dict) -> list:
        from toolkit.verdicts import at_least, at_most

        lo, hi = m["drop_ci95_points"]
        agree_lo, agree_hi = m["agreement_ci95"]
        bound = self.parity_min_agreement if self.min_agreement is None else self.min_agreement
        return [at_most("accuracy_loss_points", m["drop_points"], self.max_drop, (lo, hi), m["images"]),
                at_least("agreement_percent", 100.0 * m["agreement"], bound, (100.0 * agree_lo, 100.0 * agree_hi),
                         m["images"])]

    def met(self, m: dict) -> bool:
        from toolkit.verdicts import PASS

        return all(v.status == PASS for v in self.verdicts(m))

    def rank(self, m: dict) -> tuple:
        """Sort key, best first: meets the budget, then the smallest shortfall in drop, then in agreement."""
        _, agreement = self.verdicts(m)
        short_agreement = max(0.0, agreement.bound - 100.0 * m["agreement_ci95"][1])
        return (not self.met(m), max(0.0, m["drop_upper_points"] - self.max_drop), short_agreement,
                m["drop_upper_points"], -m["agreement"])

    def describe(self, m: dict) -> str:
        loss, agreement = self.verdicts(m)
        return (f"loss {loss.value:+.2f} points (95% CI {loss.interval[0]:+.2f} to {loss.interval[1]:+.2f}, budget "
                f"{self.max_drop}: {loss.status}), agreement {agreement.value:.2f}% (at least {agreement.bound:g}%: "
                f"{agreement.status})")


@dataclass
class Validation:
    """The validation split, preprocessed, with the Keras model's predictions on it."""

    images: np.ndarray
    labels: np.ndarray
    reference: np.ndarray  # Keras' predicted class per image
    description: str


@dataclass
class Backend:
    format: str  # the format it builds (toolkit/exporters: Format.control names the module)
    tool: str  # what builds the mixed-precision models, with its version
    layers: Callable  # layers(ctx) -> list[dict(name, op)] in graph order
    build: Callable  # build(ctx, levels: {layer: level}) -> bytes
    applied: Callable  # applied(ctx, content, levels) -> {layer: level actually in the model}
    activation_sqnr: Callable  # activation_sqnr(ctx, content, images) -> (sqnr {tensor: dB}, graph [(layer, op, inputs, output)])
    predict: Callable  # predict(content, images) -> class per image
    latency: Callable  # latency(content) -> batch-1 p50 summary (dict)
    check: Callable | None = None  # check(content) -> None or raises: the target runtime takes it (TFLM)


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    BACKENDS[backend.format] = backend
    return backend


def backend_for(fmt: str) -> Backend:
    """The format's backend: the module its ``Format.control`` names registers it on first use."""
    if fmt not in BACKENDS:
        import importlib

        from toolkit import exporters

        module = exporters.get_format(fmt).control
        if module is not None:
            importlib.import_module(module).backend()
    if fmt not in BACKENDS:
        raise UsageError(f"accuracy control has no backend for format {fmt!r} (formats with one: "
                         f"{', '.join(n for n, f in exporters.load_all().items() if f.control)})")
    return BACKENDS[fmt]


# --- measuring ---------------------------------------------------------------------------------

def measure(val: Validation, predicted: np.ndarray, confidence: float = 0.95) -> dict:
    """Accuracy drop against the Keras model on the validation split, in points, with its interval."""
    labels, ref = val.labels, val.reference
    ref_right, var_right = ref == labels, predicted == labels
    n = int(len(labels))
    b = int((ref_right & ~var_right).sum())
    c = int((~ref_right & var_right).sum())
    both = int((ref_right & var_right).sum())
    lo, hi = paired_difference_interval(b, c, n, confidence, both_right=both)
    return {
        "accuracy": float(var_right.mean()),
        "reference_accuracy": float(ref_right.mean()),
        "drop_points": 100.0 * (b - c) / n,
        "drop_ci95_points": [-100.0 * hi, -100.0 * lo],
        "drop_upper_points": -100.0 * lo,
        "agreement": float((predicted == ref).mean()),
        "agreement_ci95": list(wilson_interval(int((predicted == ref).sum()), n, confidence)),
        "ref_right_variant_wrong": b,
        "ref_wrong_variant_right": c,
        "images": n,
    }


def local_errors(sqnr: dict[str, float], graph: list[tuple]) -> list[dict]:
    """Each layer's own error: the SQNR (dB) it loses between its activation inputs and its
    output. Sorted worst first. A layer whose inputs are not activations is charged its output's
    distance from a perfect copy (its SQNR below 60 dB)."""
    rows = []
    for layer, op, inputs, output in graph:
        if output not in sqnr:
            continue
        ins = [sqnr[i] for i in inputs if i in sqnr]
        if inputs and not ins:
            continue  # its inputs were fused away in the quantized model: its error cannot be told apart
        base = min(ins) if ins else 60.0
        out = sqnr[output]
        rows.append({"layer": layer, "op": op, "sqnr_db": round(out, 3),
                     "input_sqnr_db": round(base, 3), "loss_db": round(max(0.0, min(base, 60.0) - min(out, 60.0)), 3)})
    rows.sort(key=lambda r: (-r["loss_db"], r["sqnr_db"]))
    return rows


def images_key(images: np.ndarray) -> tuple:
    """A cache key for a batch of images (the float model's activations on them are computed once)."""
    import hashlib

    return images.shape, hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    reference = reference.astype(np.float64).ravel()
    noise = float(np.sum((reference - approx.astype(np.float64).ravel()) ** 2))
    signal = float(np.sum(reference**2))
    if noise == 0.0:
        return 120.0
    if signal == 0.0:
        return -120.0
    return float(max(-120.0, min(120.0, 10 * math.log10(signal / noise))))


# --- the search ----------------------------------------------------------------------------------

@dataclass
class _Candidate:
    levels: dict
    content: bytes
    metrics: dict
    applied: dict = field(default_factory=dict)
    p50_ms: float | None = None  # batch-1 p50 on the variant's own runtime
    step: int = 0
    p50_ci95_ms: tuple | None = None


def _ci(cost: dict) -> tuple | None:
    return tuple(cost["p50_ci95_ms"]) if cost.get("p50_ci95_ms") else None


def clearly_faster(a: _Candidate, b: _Candidate) -> bool:
    """``a`` runs faster than ``b`` beyond re-measurement noise: at least 10% lower p50 and the p50 intervals
    apart. Close costs keep the accuracy-ranked choice, so the search gives the same bytes on every run."""
    if a.p50_ms is None or b.p50_ms is None:
        return False
    apart = a.p50_ci95_ms is None or b.p50_ci95_ms is None or a.p50_ci95_ms[1] < b.p50_ci95_ms[0]
    return a.p50_ms < 0.9 * b.p50_ms and apart


def _step_row(step: int, change: dict | None, cand: _Candidate, cost: dict, first: dict | None,
              ranking: list[dict] | None) -> dict:
    row = {"step": step, **(change or {}), "bytes": len(cand.content), "p50_ms_batch1": cost["p50_ms"],
           "p50_ci95_ms_batch1": cost["p50_ci95_ms"], **cand.metrics}
    if first is not None:
        row["bytes_added"] = len(cand.content) - first["bytes"]
        row["p50_ms_added"] = cost["p50_ms"] - first["p50_ms_batch1"]
    if ranking is not None:
        row["ranking_top"] = ranking[:5]
    return row


def _levels_text(levels: dict) -> str:
    return ", ".join(f"{k} -> {v}" for k, v in levels.items()) or "none"


def search(ctx, variant: str, backend: Backend, plain: bytes, settings: ControlSettings, val: Validation,
           allowed: tuple[str, ...] = LEVELS, log: Callable[[str], None] = lambda s: None) -> tuple[bytes, dict]:
    """The controlled model and its recipe. ``plain`` is the exporter's plain int8 model."""
    import time

    started = time.perf_counter()
    fmt = backend.format
    budget = settings.max_drop
    plain_metrics = measure(val, backend.predict(plain, val.images), settings.confidence)
    plain_cost = backend.latency(plain)
    record = {
        "variant": variant,
        "format": fmt,
        "budget": {"max_accuracy_drop_points": budget, "min_agreement_percent": settings.min_agreement,
                   "max_fallback_layers": settings.max_layers, "confidence": settings.confidence,
                   "allowed_levels": list(allowed)},
        "validation": val.description,
        "plain": {"bytes": len(plain), "p50_ms_batch1": plain_cost["p50_ms"],
                  "p50_ci95_ms_batch1": plain_cost["p50_ci95_ms"], **plain_metrics},
        "tool": None,
        "steps": [],
        "layers": {},
    }
    log(f"  {variant}: plain int8 on {val.description}: drop {plain_metrics['drop_points']:+.2f} pts, "
        f"{settings.describe(plain_metrics)}")
    if settings.met(plain_metrics):
        record.update(source="plain", met=True, int8_only=True, chosen_step=None,
                      search_seconds=round(time.perf_counter() - started, 3),
                      outcome=f"plain int8 meets the budget ({settings.describe(plain_metrics)}); nothing changed")
        return plain, record

    record["tool"] = backend.tool
    layer_ops = {row["name"]: row["op"] for row in backend.layers(ctx)}
    levels: dict[str, str] = {}
    content = backend.build(ctx, levels)
    base = _Candidate(dict(levels), content, measure(val, backend.predict(content, val.images), settings.confidence))
    if backend.check:
        backend.check(content)
    base_cost = backend.latency(content)
    base.p50_ms, base.p50_ci95_ms = base_cost["p50_ms"], _ci(base_cost)
    first = _step_row(0, {"change": f"every layer int8 ({backend.tool})"}, base, base_cost, None, None)
    record["steps"].append(first)
    met_steps: list[_Candidate] = [base] if settings.met(base.metrics) else []
    best, best_step = base, 0
    unavailable: set[tuple[str, str]] = set()  # (layer, level) the tool or target cannot make
    step = 0
    log(f"  {variant}: step 0 (every layer int8, {backend.tool}): {settings.describe(base.metrics)}")
    current = base
    while not settings.met(current.metrics) and step < settings.max_layers * MAX_STEPS_PER_LAYER:
        sqnr, graph = backend.activation_sqnr(ctx, current.content, val.images[:RANK_IMAGES])
        ranking = local_errors(sqnr, graph)
        choice = None
        for row in ranking:
            layer = row["layer"]
            level = levels.get(layer, "int8")
            if layer not in layer_ops:
                continue
            if layer not in levels and len(levels) >= settings.max_layers:
                continue
            higher = [lv for lv in allowed[allowed.index(level) + 1:] if (layer, lv) not in unavailable] \
                if level in allowed else []
            if higher:
                choice = (row, level, higher[0])
                break
        if choice is None:
            break
        row, old, new = choice
        trial = {**levels, row["layer"]: new}
        content = backend.build(ctx, trial)
        applied = backend.applied(ctx, content, trial)
        if applied.get(row["layer"]) != new:
            unavailable.add((row["layer"], new))  # e.g. no 16-bit kernel for this op: try the next level
            log(f"  {variant}: {row['layer']} ({row['op']}) cannot be {new} with {backend.tool}; skipped")
            continue
        if backend.check:
            try:
                backend.check(content)
            except Exception as exc:  # the target runtime refuses it (no such kernel in TFLM)
                unavailable.add((row["layer"], new))
                log(f"  {variant}: {row['layer']} at {new} is refused by the target: {exc}")
                continue
        step += 1
        levels = trial
        current = _Candidate(dict(levels), content,
                             measure(val, backend.predict(content, val.images), settings.confidence), applied)
        change = {"layer": row["layer"], "op": row["op"], "from": old, "to": new,
                  "why": f"loses {row['loss_db']:.1f} dB of SQNR (output {row['sqnr_db']:.1f} dB vs inputs "
                         f"{row['input_sqnr_db']:.1f} dB), the most of any layer that can still be raised"}
        cost = backend.latency(content)
        current.p50_ms, current.step, current.p50_ci95_ms = cost["p50_ms"], step, _ci(cost)
        if settings.met(current.metrics):
            met_steps.append(current)
        record["steps"].append(_step_row(step, change, current, cost, first, ranking))
        log(f"  {variant}: step {step}: {row['layer']} ({row['op']}) {old} -> {new}: {settings.describe(current.metrics)}")
        if settings.rank(current.metrics) < settings.rank(best.metrics):
            best, best_step = current, step
    if settings.met(best.metrics) and best.levels:
        best, best_step, step = _lower_back(ctx, variant, backend, settings, val, allowed, record, first, best,
                                            best_step, step, log, met_steps)
        best, best_step, step = _cheaper_float(ctx, variant, backend, settings, val, allowed, record, first, best,
                                               best_step, step, log, met_steps)
    chosen_for = None
    if met_steps and settings.met(best.metrics):  # cost-aware: a step that meets the budget and runs clearly faster
        faster = [c for c in met_steps if clearly_faster(c, best)]
        if faster:
            fastest = min(faster, key=lambda c: (c.p50_ms, len(c.content), c.step))
            log(f"  {variant}: step {fastest.step} meets the budget too and runs faster ({fastest.p50_ms:.3f} ms "
                f"vs {best.p50_ms:.3f} ms at batch 1): it is kept")
            best, best_step = fastest, fastest.step
        chosen_for = ("of the steps that meet the budget, the one ranked best on accuracy unless another runs clearly "
                      "faster at batch 1 on its own runtime (10% and the p50 intervals apart)")
    met = settings.met(best.metrics)
    if not met and settings.rank(plain_metrics) <= settings.rank(best.metrics):
        record.update(source="plain", met=False, chosen_step=None, layers={}, int8_only=True,
                      search_seconds=round(time.perf_counter() - started, 3),
                      outcome=(f"budget not met, and no step did better than plain int8, which is kept: "
                               f"{settings.describe(plain_metrics)}; the limit was {settings.max_layers} layer(s)"))
        return plain, record
    slower = (best.p50_ms / plain_cost["p50_ms"]) if best.p50_ms and plain_cost["p50_ms"] else None
    record.update(
        source="search", met=met, chosen_step=best_step, layers=best.levels, chosen_for=chosen_for,
        p50_vs_plain=round(slower, 3) if slower else None,
        search_seconds=round(time.perf_counter() - started, 3),
        int8_only=all(v in INTEGER_LEVELS for v in best.levels.values()),
        outcome=(f"budget met at step {best_step} with {len(best.levels)} layer(s) changed "
                 f"({_levels_text(best.levels)}): {settings.describe(best.metrics)}") if met else
                (f"budget not met: the best step ({best_step}, {len(best.levels)} layer(s) changed: "
                 f"{_levels_text(best.levels)}) has {settings.describe(best.metrics)}; the limit was "
                 f"{settings.max_layers} layer(s)"),
    )
    if slower and slower > SLOWER_THAN_PLAIN:
        record["outcome"] += (f"; it runs {slower:.2f}x plain int8's batch-1 p50 ({best.p50_ms:.3f} vs "
                              f"{plain_cost['p50_ms']:.3f} ms): no cheaper step met the budget")
    return best.content, record


def _cheaper_float(ctx, variant, backend, settings, val, allowed, record, first, best, best_step, step, log,
                   met_steps):
    """A 16-bit activation can cost more than float: onnxruntime dequantizes an int16x8 layer's weight on every
    call. Each int16x8 layer of the chosen step is tried in float; kept where the budget still holds and
    batch 1 runs faster."""
    if "float" not in allowed:
        return best, best_step, step
    for layer, level in list(best.levels.items()):
        if level != "int16x8":
            continue
        trial = {**best.levels, layer: "float"}
        content = backend.build(ctx, trial)
        applied = backend.applied(ctx, content, trial)
        if any(applied.get(k) != v for k, v in trial.items()):
            log(f"  {variant}: {layer} in float instead of int16x8: not applied by {backend.tool} ({applied})")
            continue
        if backend.check:
            try:
                backend.check(content)
            except Exception as exc:  # the target refuses it
                log(f"  {variant}: {layer} in float instead of int16x8: refused by the target ({exc})")
                continue
        metrics = measure(val, backend.predict(content, val.images), settings.confidence)
        if not settings.met(metrics):
            log(f"  {variant}: {layer} in float instead of int16x8: {settings.describe(metrics)}")
            continue
        cost = backend.latency(content)
        cand = _Candidate(dict(trial), content, metrics, applied, cost["p50_ms"], step + 1, _ci(cost))
        if not clearly_faster(cand, best):
            log(f"  {variant}: {layer} in float instead of int16x8: not clearly faster ({cost['p50_ms']:.3f} vs "
                f"{best.p50_ms:.3f} ms at batch 1)")
            continue
        step += 1
        change = {"layer": layer, "op": next((s["op"] for s in record["steps"] if s.get("layer") == layer), ""),
                  "from": "int16x8", "to": "float",
                  "why": f"float runs faster here ({cost['p50_ms']:.3f} vs {best.p50_ms:.3f} ms at batch 1) and the "
                         "budget holds"}
        record["steps"].append(_step_row(step, change, cand, cost, first, None))
        log(f"  {variant}: step {step}: {layer} int16x8 -> float (faster): {settings.describe(metrics)}")
        met_steps.append(cand)
        best, best_step = cand, step
    return best, best_step, step


def _lower_back(ctx, variant, backend, settings, val, allowed, record, first, best, best_step, step, log,
                met_steps=None):
    """The forward pass raises greedily, so a layer raised early may not be needed once a later one
    is: try each changed layer, latest change first, at each lower level (int8 first) and keep the
    lowest at which the budget still holds."""
    order = [s["layer"] for s in record["steps"] if "layer" in s]
    for layer in dict.fromkeys(reversed(order)):
        current = best.levels.get(layer)
        if current is None:
            continue
        for lower in [lv for lv in allowed[: allowed.index(current)]]:
            trial = {k: v for k, v in best.levels.items() if k != layer}
            if lower != "int8":
                trial[layer] = lower
            content = backend.build(ctx, trial)
            applied = backend.applied(ctx, content, trial)
            if any(applied.get(k) != v for k, v in trial.items()):
                continue
            if backend.check:
                try:
                    backend.check(content)
                except Exception:  # the target refuses it
                    continue
            metrics = measure(val, backend.predict(content, val.images), settings.confidence)
            if not settings.met(metrics):
                continue
            step += 1
            cost = backend.latency(content)
            cand = _Candidate(dict(trial), content, metrics, applied, cost["p50_ms"], step,
                              _ci(cost))
            if met_steps is not None:
                met_steps.append(cand)
            change = {"layer": layer, "op": next((s["op"] for s in record["steps"] if s.get("layer") == layer), ""),
                      "from": current, "to": lower,
                      "why": "lowered back: the budget holds without raising this layer that far"}
            record["steps"].append(_step_row(step, change, cand, cost, first, None))
            log(f"  {variant}: step {step}: {layer} lowered back {current} -> {lower}: {settings.describe(metrics)}")
            best, best_step = cand, step
            break
    return best, best_step, step


def replay(ctx, variant: str, backend: Backend, plain: bytes, recipe: dict, val: Validation | None,
           allowed: tuple[str, ...] = LEVELS) -> tuple[bytes, dict]:
    """Build what a recipe says, without searching (``--recipe``)."""
    if recipe.get("source") == "plain":
        content = plain
    else:
        known = {row["name"] for row in backend.layers(ctx)}
        levels = _match_layers(dict(recipe.get("layers", {})), known)
        missing = [k for k in levels if k not in known]
        if missing:
            raise UsageError(f"--recipe: {variant} changes layer(s) this model does not have: {', '.join(missing)}",
                             hint=f"layers of this model: {', '.join(sorted(known))[:400]}")
        bad = [f"{k} -> {v}" for k, v in levels.items() if v not in allowed]
        if bad:
            raise UsageError(f"--recipe: {variant} cannot take {', '.join(bad)} (allowed: {', '.join(allowed)})")
        content = backend.build(ctx, levels)
        applied = backend.applied(ctx, content, levels)
        if applied != levels:
            raise UsageError(f"--recipe: {backend.tool} did not apply {_levels_text(levels)} (got {_levels_text(applied)})")
        if backend.check:
            backend.check(content)
    out = {k: recipe[k] for k in ("variant", "format", "budget", "source", "layers", "int8_only", "tool", "steps",
                                   "plain", "chosen_step") if k in recipe}
    out.update(replayed=True, met=recipe.get("met"))
    if val is not None:
        out["replay_validation"] = measure(val, backend.predict(content, val.images))
    out["outcome"] = f"replayed from the recipe ({_levels_text(recipe.get('layers', {}))})"
    return content, out


def controlled(ctx, variant: str, fmt: str, plain: bytes, allowed: tuple[str, ...] = LEVELS,
               check: Callable | None = None) -> tuple[bytes, dict | None]:
    """What an int8 exporter writes: ``plain`` when accuracy control is off, else the searched (or
    replayed) model and its recipe. A search is made once per format and set of allowed levels."""
    settings = ctx.control
    if settings is None:
        return plain, None
    import dataclasses

    backend = backend_for(fmt)
    if check is not None:
        backend = dataclasses.replace(backend, check=check)
    key = (fmt, allowed)
    if key not in ctx.control_results:
        val = ctx.validation()
        if settings.recipe is not None:
            entry = settings.recipe["variants"].get(variant)
            if entry is None:
                raise UsageError(f"--recipe: it has no entry for {variant} (it has: "
                                 f"{', '.join(settings.recipe['variants']) or 'none'})")
            content, record = replay(ctx, variant, backend, plain, entry, val, allowed)
        else:
            floor = measure(val, val.reference, settings.confidence)["drop_upper_points"]
            if floor > settings.max_drop:
                raise UsageError(f"--max-accuracy-drop {settings.max_drop}: the {val.description} cannot show a drop "
                                 f"below {floor:.2f} points even when every prediction matches Keras (95% bound), so "
                                 f"no model could meet it", hint="give a larger budget, or a dataset with more "
                                 "validation images")
            content, record = search(ctx, variant, backend, plain, settings, val, allowed, ctx.log)
        ctx.control_results[key] = (content, record)
    content, record = ctx.control_results[key]
    return content, {**record, "variant": variant}


_SCOPE_SUFFIX = re.compile(r"_\d+(?=/|;|:|$)")  # Keras' per-process name scopes: model_1/dense_2/...


def _match_layers(levels: dict, known: set[str]) -> dict:
    """A recipe's layer names in this model: exact, else equal once Keras' per-process scope
    suffixes are dropped (a model traced in another process may be ``net_2/...`` for ``net_1/...``)."""
    canonical: dict[str, list[str]] = {}
    for name in known:
        canonical.setdefault(_SCOPE_SUFFIX.sub("", name), []).append(name)
    out = {}
    for name, level in levels.items():
        same = canonical.get(_SCOPE_SUFFIX.sub("", name), [])
        out[name if name in known or len(same) != 1 else same[0]] = level
    return out


def read_recipe(path: Path) -> dict:
    from toolkit import artifacts
    from toolkit.errors import DataError

    try:
        doc = artifacts.read_json(Path(path))
    except DataError as exc:
        raise UsageError(f"--recipe {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != RECIPE_SCHEMA or not isinstance(doc.get("variants"), dict):
        raise UsageError(f"--recipe {path}: not a toolkit quantization recipe (schema {RECIPE_SCHEMA}, 'variants')")
    return doc


def p50_latency(call: Callable[[], object]) -> dict:
    from toolkit.timing import measure as time_calls
    from toolkit.timing import summarize

    samples = time_calls(call, warmup_runs=10, warmup_seconds=0.1, min_runs=200, min_seconds=0.3, max_runs=5000)
    summary = summarize(samples["samples_ns"], 1)
    return {"p50_ms": summary["p50_ms"], "p50_ci95_ms": summary["p50_ci95_ms"], "runs": summary["runs"]}


def exact(name: str) -> str:
    """A regular expression matching exactly this op scope (ai-edge-quantizer appends ';')."""
    return "^" + re.escape(name) + ";$"
