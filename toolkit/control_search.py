"""The accuracy-control search and its replay (toolkit/accuracy_control.py has the settings, the
measures and the format backends): from plain int8, raise one layer at a time, the one that loses the
most SQNR, until the validation budget holds, then whole tensors (control_tensors.py); lower back what is
not needed, try float where a 16-bit layer costs more, and keep a clearly faster step that also meets the
budget, confirmed on held-out images (control_confirm.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.accuracy_control import (
    INTEGER_LEVELS,
    LEVELS,
    MAX_STEPS_PER_LAYER,
    RANK_IMAGES,
    SLOWER_THAN_PLAIN,
    Backend,
    ControlSettings,
    Validation,
    _match_layers,
    backend_for,
    better_than_plain,
    local_errors,
    measure,
    split_for_confirmation,
)
from toolkit.control_confirm import confirm, cost_where, within_cap
from toolkit.control_npu import npu_outcome, npu_targets
from toolkit.control_tensors import raise_tensors
from toolkit.errors import DataError, UsageError


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
    apart. Close costs keep the accuracy-ranked choice, so the search gives the same bytes on every run; a
    cost measured on too few samples for an interval (None) is never clearly faster or slower."""
    if a.p50_ms is None or b.p50_ms is None or a.p50_ci95_ms is None or b.p50_ci95_ms is None:
        return False
    apart = a.p50_ci95_ms[1] < b.p50_ci95_ms[0]
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


@dataclass
class _Search:
    """One search's state: what it works on and where it stands (the helpers below read and move it)."""

    ctx: object
    variant: str
    backend: Backend
    settings: ControlSettings
    val: Validation
    allowed: tuple[str, ...]
    log: Callable[[str], None]
    record: dict
    first: dict | None = None  # step 0's row (every layer int8): what bytes_added and p50_ms_added count from
    best: _Candidate | None = None
    best_step: int = 0
    step: int = 0
    met_steps: list = field(default_factory=list)

    def measure(self, content: bytes) -> dict:
        return measure(self.val, self.backend.predict(content, self.val.images), self.settings.confidence)

    def applied(self, content: bytes, trial: dict) -> dict:
        """The levels the tool applied of ``trial``; none where the runtime cannot load the file (a kernel's scale
        rule: LiteRT's ADD refused one of MobileNetV3Small's)."""
        try:
            return self.backend.applied(self.ctx, content, trial)
        except DataError as exc:
            layer, level = list(trial.items())[-1] if trial else ("every layer", "int8")
            self.log(f"  {self.variant}: {layer} at {level}: the runtime cannot load the file ({exc}); skipped")
            return {}

    def refused(self, content: bytes) -> Exception | None:
        """Why the target runtime refuses the model (no such kernel in TFLM), or None."""
        if self.backend.check:
            try:
                self.backend.check(content)
            except Exception as exc:  # the target's own error types
                return exc
        return None

    def keep(self, change: dict, cand: _Candidate, cost: dict, ranking: list | None = None) -> None:
        self.record["steps"].append(_step_row(self.step, change, cand, cost, self.first, ranking))

    def took(self, levels: dict, content: bytes, applied: dict, change: dict, ranking: list | None,
             what: str) -> _Candidate:
        """A forward step taken: measured, timed, recorded, logged, and the best so far if it ranks better."""
        self.step += 1
        cost = self.backend.latency(content)
        cand = _Candidate(dict(levels), content, self.measure(content), applied, cost["p50_ms"], self.step, _ci(cost))
        if self.settings.met(cand.metrics):
            self.met_steps.append(cand)
        self.keep(change, cand, cost, ranking)
        self.log(f"  {self.variant}: step {self.step}: {what}: {self.settings.describe(cand.metrics)}")
        if self.settings.rank(cand.metrics) < self.settings.rank(self.best.metrics):
            self.best, self.best_step = cand, self.step
        return cand

    def op_of(self, layer: str) -> str:
        return next((s["op"] for s in self.record["steps"] if s.get("layer") == layer), "")


def _start(s: _Search, plain: bytes, plain_metrics: dict, plain_cost: dict) -> None:
    s.record.update(
        variant=s.variant, format=s.backend.format,
        budget={"max_accuracy_drop_points": s.settings.max_drop, "min_agreement_percent": s.settings.min_agreement,
                "max_fallback_layers": s.settings.max_layers, "confidence": s.settings.confidence,
                "allowed_levels": list(s.allowed)},
        validation=s.val.description,
        plain={"bytes": len(plain), "p50_ms_batch1": plain_cost["p50_ms"],
               "p50_ci95_ms_batch1": plain_cost["p50_ci95_ms"], **plain_metrics},
        tool=None, steps=[], layers={})


def _step_zero(s: _Search) -> _Candidate:
    """Every layer int8 through the format's tool: the search's first step."""
    s.record["tool"] = s.backend.tool
    content = s.backend.build(s.ctx, {})
    base = _Candidate({}, content, s.measure(content))
    if s.backend.check:
        s.backend.check(content)
    cost = s.backend.latency(content)
    base.p50_ms, base.p50_ci95_ms = cost["p50_ms"], _ci(cost)
    s.first = _step_row(0, {"change": f"every layer int8 ({s.backend.tool})"}, base, cost, None, None)
    s.record["steps"].append(s.first)
    s.met_steps = [base] if s.settings.met(base.metrics) else []
    s.best, s.best_step = base, 0
    s.log(f"  {s.variant}: step 0 (every layer int8, {s.backend.tool}): {s.settings.describe(base.metrics)}")
    return base


def _next_choice(s: _Search, ranking: list[dict], levels: dict, layer_ops: dict, unavailable: set):
    """The worst-ranked layer that can still be raised, its level and the next level up (None: none can)."""
    for row in ranking:
        layer = row["layer"]
        level = levels.get(layer, "int8")
        if layer not in layer_ops:
            continue
        if layer not in levels and len(levels) >= s.settings.max_layers:
            continue
        higher = [lv for lv in s.allowed[s.allowed.index(level) + 1:] if (layer, lv) not in unavailable] \
            if level in s.allowed else []
        if higher:
            return row, level, higher[0]
    return None


def _raise_layers(s: _Search, current: _Candidate, first: tuple) -> None:
    """The forward pass: raise the layer that loses the most SQNR, one step at a time, until the budget holds
    (``first``: step 0's (SQNR, graph), measured once)."""
    layer_ops = {row["name"]: row["op"] for row in s.backend.layers(s.ctx)}
    levels: dict[str, str] = {}
    unavailable: set[tuple[str, str]] = set()  # (layer, level) the tool or target cannot make
    while not s.settings.met(current.metrics) and s.step < s.settings.max_layers * MAX_STEPS_PER_LAYER:
        sqnr, graph = first if current.step == 0 else s.backend.activation_sqnr(s.ctx, current.content,
                                                                                s.val.images[:RANK_IMAGES])
        ranking = local_errors(sqnr, graph)
        choice = _next_choice(s, ranking, levels, layer_ops, unavailable)
        if choice is None:
            break
        row, old, new = choice
        trial = {**levels, row["layer"]: new}
        content = s.backend.build(s.ctx, trial)
        applied = s.applied(content, trial)
        if applied.get(row["layer"]) != new:
            unavailable.add((row["layer"], new))  # e.g. no 16-bit kernel for this op: try the next level
            s.log(f"  {s.variant}: {row['layer']} ({row['op']}) cannot be {new} with {s.backend.tool}; skipped")
            continue
        exc = s.refused(content)
        if exc is not None:
            unavailable.add((row["layer"], new))
            s.log(f"  {s.variant}: {row['layer']} at {new} is refused by the target: {exc}")
            continue
        levels = trial
        change = {"layer": row["layer"], "op": row["op"], "from": old, "to": new,
                  "why": f"loses {row['loss_db']:.1f} dB of SQNR (output {row['sqnr_db']:.1f} dB vs inputs "
                         f"{row['input_sqnr_db']:.1f} dB), the most of any layer that can still be raised"}
        current = s.took(levels, content, applied, change, ranking, f"{row['layer']} ({row['op']}) {old} -> {new}")


def _prefer_faster(s: _Search) -> str | None:
    """Cost-aware: of the steps that meet the budget, one that runs clearly faster than the best-ranked wins."""
    if not (s.met_steps and s.settings.met(s.best.metrics)):
        return None
    faster = [c for c in s.met_steps if clearly_faster(c, s.best)]
    if faster:
        fastest = min(faster, key=lambda c: (c.p50_ms, len(c.content), c.step))
        s.log(f"  {s.variant}: step {fastest.step} meets the budget too and runs faster ({fastest.p50_ms:.3f} ms "
              f"vs {s.best.p50_ms:.3f} ms at batch 1): it is kept")
        s.best, s.best_step = fastest, fastest.step
    return ("of the steps that meet the budget, the one ranked best on accuracy unless another runs clearly "
            "faster at batch 1 on its own runtime (10% and the p50 intervals apart)")


def _over_cost_cap(s: _Search, plain_cost: dict) -> dict | None:
    """--max-slowdown: the kept step may not run clearly slower than the cap times plain int8's batch-1 p50 (its p50
    interval entirely above the cap times plain's: a cost too close to call is not over). Where the best-ranked step
    is over, the best-ranked step that meets the budget within the cap takes its place; None when the kept step is
    within the cap, else what is over it (plain int8 is then kept)."""
    cap, plain_ci = s.settings.max_slowdown, plain_cost.get("p50_ci95_ms")
    if cap is None or not plain_ci:
        return None
    ok = within_cap(s, plain_cost)
    if ok(s.best):
        return None
    within = [c for c in s.met_steps if ok(c)] if s.settings.met(s.best.metrics) else []
    if within:
        c = min(within, key=lambda c: (s.settings.rank(c.metrics), c.step))
        s.log(f"  {s.variant}: step {s.best_step} runs over --max-slowdown {cap:g}; step {c.step} meets the budget "
              f"within it and is kept")
        s.best, s.best_step = c, c.step
        return None
    ratio = s.best.p50_ms / plain_cost["p50_ms"]
    s.log(f"  {s.variant}: step {s.best_step} runs {ratio:.2f}x plain int8 at batch 1, over --max-slowdown {cap:g}")
    return {"max_slowdown": cap, "step": s.best_step, "p50_vs_plain": round(ratio, 3),
            "text": f"the best step ({s.best_step}) runs {ratio:.2f}x plain int8's batch-1 p50 ({s.best.p50_ms:.3f} vs "
                    f"{plain_cost['p50_ms']:.3f} ms{cost_where(s, plain_cost)}, intervals apart), over --max-slowdown {cap:g}, and no step that "
                    "meets the budget runs within it"}


def _missed(s: _Search) -> str:
    """Why the budget is not met: missed on the search's images, or met there and not confirmed."""
    c = s.record["confirmation"]
    return (f"budget met at step {s.best_step} on the search's {c['search_images']:,} validation images but not "
            f"confirmed on the {c['held_out_images']:,} held out ({c['text']})" if "confirmed" in c
            else f"budget not met (the limit was {s.settings.max_layers} layer(s))")


def _outcome(s: _Search, plain_cost: dict, chosen_for: str | None, seconds: float, met: bool) -> None:
    best, settings = s.best, s.settings
    conf = s.record["confirmation"]
    slower = (best.p50_ms / plain_cost["p50_ms"]) if best.p50_ms and plain_cost["p50_ms"] else None
    s.record.update(
        source="search", met=met, chosen_step=s.best_step, layers=best.levels, chosen_for=chosen_for,
        p50_vs_plain=round(slower, 3) if slower else None,
        search_seconds=seconds,
        int8_only=all(v in INTEGER_LEVELS for v in best.levels.values()),
        outcome=(f"budget met at step {s.best_step} with {len(best.levels)} layer(s) changed "
                 f"({_levels_text(best.levels)}): {settings.describe(best.metrics)}; "
                 + (f"confirmed on the {conf['held_out_images']:,} held-out validation images: {conf['text']}"
                    if conf.get("confirmed") else conf["reason"])) if met else
                (f"{_missed(s)}: the best step ({s.best_step}, {len(best.levels)} layer(s) changed: "
                 f"{_levels_text(best.levels)}) has {settings.describe(best.metrics)}; it is kept: "
                 f"{s.record['best_step_against_plain']['text']}"),
    )
    if slower and slower > SLOWER_THAN_PLAIN:
        s.record["outcome"] += (f"; it runs {slower:.2f}x plain int8's batch-1 p50 ({best.p50_ms:.3f} vs "
                                f"{plain_cost['p50_ms']:.3f} ms{cost_where(s, plain_cost)}): no cheaper step met the budget")


def search(ctx, variant: str, backend: Backend, plain: bytes, settings: ControlSettings, val: Validation,
           allowed: tuple[str, ...] = LEVELS, log: Callable[[str], None] = lambda s: None) -> tuple[bytes, dict]:
    """The controlled model and its recipe. ``plain`` is the exporter's plain int8 model."""
    import time

    started = time.perf_counter()
    s = _Search(ctx, variant, backend, settings, val, allowed, log, {})
    plain_metrics = s.measure(plain)
    plain_cost = backend.latency(plain)
    _start(s, plain, plain_metrics, plain_cost)
    log(f"  {variant}: plain int8 on {val.description}: drop {plain_metrics['drop_points']:+.2f} pts, "
        f"{settings.describe(plain_metrics)}")
    if settings.met(plain_metrics):
        s.record.update(source="plain", met=True, int8_only=True, chosen_step=None,
                        search_seconds=round(time.perf_counter() - started, 3),
                        outcome=f"plain int8 meets the budget ({settings.describe(plain_metrics)}); nothing changed")
        return plain, s.record
    s.val, held, s.record["confirmation"] = split_for_confirmation(val, settings)  # accuracy_control: why
    if held is not None:
        log(f"  {variant}: the search ranks and accepts on {len(s.val.labels):,} validation images; the step it keeps "
            f"is confirmed on the other {len(held.labels):,}")
    zero, images = _step_zero(s), s.val.images[:RANK_IMAGES]
    first = backend.activation_sqnr(ctx, zero.content, images)  # step 0's per-tensor error: both passes rank on it
    _raise_layers(s, zero, first)
    raise_tensors(s, images, first)  # whole tensors too (control_tensors.py): the faster wins
    if settings.met(s.best.metrics) and s.best.levels:
        _lower_back(s)
        _cheaper_float(s)
    chosen_for = _prefer_faster(s)
    over = _over_cost_cap(s, plain_cost)
    if over is not None:
        s.record.update(source="plain", met=False, chosen_step=None, layers={}, int8_only=True, cost_cap=over,
                        search_seconds=round(time.perf_counter() - started, 3),
                        outcome=f"{over['text']}, so plain int8 is kept: {settings.describe(plain_metrics)}")
        return plain, s.record
    met = settings.met(s.best.metrics) and (held is None or confirm(s, held, plain_cost))
    if not met:
        judge = s.val if held is None else held  # held-out: none confirmed, so the step is still the first looked at
        better = better_than_plain(judge, backend.predict(plain, judge.images),
                                   backend.predict(s.best.content, judge.images), s.best_step, settings.confidence)
        s.record["best_step_against_plain"] = better
        if not better["beyond_noise"]:
            s.record.update(source="plain", met=False, chosen_step=None, layers={}, int8_only=True,
                            search_seconds=round(time.perf_counter() - started, 3),
                            outcome=(f"{_missed(s)}, and no step did better than plain int8 beyond the noise of "
                                     f"{len(judge.labels):,} {'held-out ' if held is not None else ''}validation images "
                                     f"({better['text']}), so plain int8 is kept: {settings.describe(plain_metrics)}"))
            return plain, s.record
    _outcome(s, plain_cost, chosen_for, round(time.perf_counter() - started, 3), met)
    return s.best.content, s.record


def _cheaper_float(s: _Search) -> None:
    """A 16-bit activation can cost more than float: onnxruntime dequantizes an int16x8 layer's weight on every
    call. Each int16x8 layer of the chosen step is tried in float; kept where the budget still holds and
    batch 1 runs faster."""
    if "float" not in s.allowed:
        return
    npu = npu_targets(s.settings, s.backend.format)
    if npu:
        kept = [layer for layer, level in s.best.levels.items() if level == "int16x8"]
        if kept:
            s.log(f"  {s.variant}: {', '.join(kept)} kept in int16x8, not tried in float for speed: float runs on the "
                  f"CPU of {', '.join(npu)}, int16x8 on the NPU")
        return
    for layer, level in list(s.best.levels.items()):
        if level != "int16x8":
            continue
        trial = {**s.best.levels, layer: "float"}
        content = s.backend.build(s.ctx, trial)
        applied = s.applied(content, trial)
        if any(applied.get(k) != v for k, v in trial.items()):
            s.log(f"  {s.variant}: {layer} in float instead of int16x8: not applied by {s.backend.tool} ({applied})")
            continue
        exc = s.refused(content)
        if exc is not None:
            s.log(f"  {s.variant}: {layer} in float instead of int16x8: refused by the target ({exc})")
            continue
        metrics = s.measure(content)
        if not s.settings.met(metrics):
            s.log(f"  {s.variant}: {layer} in float instead of int16x8: {s.settings.describe(metrics)}")
            continue
        cost = s.backend.latency(content)
        cand = _Candidate(dict(trial), content, metrics, applied, cost["p50_ms"], s.step + 1, _ci(cost))
        if not clearly_faster(cand, s.best):
            s.log(f"  {s.variant}: {layer} in float instead of int16x8: not clearly faster ({cost['p50_ms']:.3f} vs "
                  f"{s.best.p50_ms:.3f} ms at batch 1)")
            continue
        s.step += 1
        change = {"layer": layer, "op": s.op_of(layer), "from": "int16x8", "to": "float",
                  "why": f"float runs faster here ({cost['p50_ms']:.3f} vs {s.best.p50_ms:.3f} ms at batch 1) and the "
                         "budget holds"}
        s.keep(change, cand, cost)
        s.log(f"  {s.variant}: step {s.step}: {layer} int16x8 -> float (faster): {s.settings.describe(metrics)}")
        s.met_steps.append(cand)
        s.best, s.best_step = cand, s.step


def _lower_back(s: _Search) -> None:
    """The forward pass raises greedily, so a layer raised early may not be needed once a later one
    is: try each changed layer, latest change first, at each lower level (int8 first) and keep the
    lowest at which the budget still holds."""
    order = [row["layer"] for row in s.record["steps"] if "layer" in row]
    for layer in dict.fromkeys(reversed(order)):
        current = s.best.levels.get(layer)
        if current is None:
            continue
        for lower in list(s.allowed[: s.allowed.index(current)]):
            trial = {k: v for k, v in s.best.levels.items() if k != layer}
            if lower != "int8":
                trial[layer] = lower
            content = s.backend.build(s.ctx, trial)
            applied = s.applied(content, trial)
            if any(applied.get(k) != v for k, v in trial.items()) or s.refused(content) is not None:
                continue
            metrics = s.measure(content)
            if not s.settings.met(metrics):
                continue
            s.step += 1
            cost = s.backend.latency(content)
            cand = _Candidate(dict(trial), content, metrics, applied, cost["p50_ms"], s.step, _ci(cost))
            s.met_steps.append(cand)
            change = {"layer": layer, "op": s.op_of(layer), "from": current, "to": lower,
                      "why": "lowered back: the budget holds without raising this layer that far"}
            s.keep(change, cand, cost)
            s.log(f"  {s.variant}: step {s.step}: {layer} lowered back {current} -> {lower}: "
                  f"{s.settings.describe(metrics)}")
            s.best, s.best_step = cand, s.step
            break


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


def check_budget(ctx) -> None:
    """A budget the validation split cannot resolve is a usage error, raised before any conversion: even a model
    whose every prediction matches Keras shows a drop bound of ``floor`` points on these images."""
    settings = ctx.control
    if settings is None or settings.max_drop is None or settings.recipe is not None:
        return
    val = ctx.validation()
    floor = measure(val, val.reference, settings.confidence)["drop_upper_points"]
    if floor > settings.max_drop:
        raise UsageError(f"--max-accuracy-drop {settings.max_drop}: the {val.description} cannot show a drop below "
                         f"{floor:.2f} points even when every prediction matches Keras (95% bound), so no model could "
                         "meet it", hint="give a larger budget, or more validation images (x_val/y_val, a val/ "
                         "folder); --fine-tune makes the int8 files as close to the model as it can without a budget")


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
            check_budget(ctx)
            content, record = search(ctx, variant, backend, plain, settings, val, allowed, ctx.log)
        npu = npu_outcome(ctx, fmt, plain, content, record.get("layers") or {})
        if npu is not None:
            record = {**record, "npu": npu}
            for row in npu:
                ctx.log(f"  {variant} on {row['target']}: {row['searched']['cpu_operators']} operator(s) on the CPU "
                        f"({row['plain']['cpu_operators']} before the search); "
                        + (row["cost_note"] or f"Vela's estimate {row['searched']['estimated_ms']:.3f} ms vs "
                                               f"{row['plain']['estimated_ms']:.3f} ms"))
        ctx.control_results[key] = (content, record)
    content, record = ctx.control_results[key]
    return content, {**record, "variant": variant}


