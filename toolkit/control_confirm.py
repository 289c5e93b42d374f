"""The accuracy search's confirmation (toolkit/control_search.py): the step it keeps is judged on the held-out half
of the validation images, which no choice was made on.

Where the kept step is not confirmed, the next steps that met the budget on the search's half are judged there
too, the cheapest first (within --max-slowdown), at most LOOKS in all. Several looks at the held-out images would
make a lucky pass likelier, so each is judged at confidence 1 - (1 - c) / looks (Bonferroni): the chance that any
look passes a step that does not meet the budget stays within the search's own. Why: the search keeps the
cheapest step that met the budget on its half, and the cheapest is the likeliest to have met it by luck. On a
MobileNetV2 trained on MNIST the tensor pass met the budget with 5 tensors in float (99.70% agreement on 5,000
images), which held-out images did not confirm (99.66%, inconclusive), where 11 tensors met it too (99.72%)."""

from __future__ import annotations

from collections.abc import Callable

LOOKS = 3


def cost_where(s, plain_cost: dict) -> str:
    """Where a step's p50 was timed, for its texts ("" where the backend does not say). A backend with a target
    runtime's check (TFLM) is still timed on this machine's runtime: a microcontroller's kernels differ (LiteRT's
    int16x8 ones are reference code on x86, where CMSIS-NN's s16 convolutions are optimized), so that cost is this
    machine's, not the target's."""
    where = plain_cost.get("where")
    if not where:
        return ""
    return f" on {where}" + (", not the target's runtime: its kernels cost otherwise" if s.backend.check else "")


def within_cap(s, plain_cost: dict) -> Callable:
    """Whether a step runs within --max-slowdown (not clearly over: its p50 interval not entirely above)."""
    cap, plain_ci = s.settings.max_slowdown, plain_cost.get("p50_ci95_ms")
    if cap is None or not plain_ci:
        return lambda c: True
    return lambda c: c.p50_ci95_ms is None or c.p50_ci95_ms[0] <= cap * plain_ci[1]


def confirm(s, held, plain_cost: dict) -> bool:
    """Whether a step that met the budget on the search's images meets it on ``held`` too; the first that does
    becomes ``s.best``. The record's ``confirmation`` gives every look."""
    from toolkit.accuracy_control import measure

    ok_cost = within_cap(s, plain_cost)
    queue, seen = [s.best], {s.best.content}
    for c in sorted(s.met_steps, key=lambda c: (c.p50_ms if c.p50_ms is not None else float("inf"), c.step)):
        if c.content not in seen and ok_cost(c) and s.settings.met(c.metrics):
            queue.append(c)
            seen.add(c.content)
    queue = queue[:LOOKS]
    confidence = 1.0 - (1.0 - s.settings.confidence) / len(queue)
    looks = []
    for c in queue:
        m = measure(held, s.backend.predict(c.content, held.images), confidence)
        ok = s.settings.met(m)
        text = s.settings.describe(m).replace("95% CI", f"{100 * confidence:.4g}% CI")  # describe() says 95%
        looks.append({"step": c.step, "confirmed": ok, "metrics": m, "text": text})
        s.log(f"  {s.variant}: step {c.step} on the {len(held.labels):,} held-out images"
              f"{f' (one of {len(queue)} looks)' if len(queue) > 1 else ''}: {text} "
              f"({'confirmed' if ok else 'not confirmed'})")
        if ok:
            s.best, s.best_step = c, c.step
            break
    shown = looks[-1] if looks[-1]["confirmed"] else looks[0]
    s.record["confirmation"].update(step=shown["step"], confirmed=shown["confirmed"], metrics=shown["metrics"],
                                    text=shown["text"], confidence=confidence, looks=looks)
    return shown["confirmed"]
