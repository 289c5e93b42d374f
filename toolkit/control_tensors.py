"""The accuracy search's tensor pass (toolkit/control_search.py runs it where raising single layers missed the
budget): raise *tensors*, not layers.

Why: where int8's error is activation rounding spread over many tensors (benchmarks/INT8_ERROR.md: MobileNetV2's
activations cause 78% of it, its five worst tensors half), raising one layer does not remove a tensor's rounding:
a float or 16-bit layer still reads its int8 input, and its consumers quantize its output to int8 again. A tensor
leaves int8 only when its producer and every consumer are raised together. Measured on a MobileNetV2 trained on
MNIST (10,000 validation images, 10,000 test images; a prototype of this pass): the layer search's 4 changed layers
met the budget on validation but agreed with Keras on 99.54% of the test images (inconclusive) at 6.5x plain
int8's batch-1 p50; the 8 worst tensors in float (16 layers) agreed on 99.75% (95% CI 99.63 to 99.83: pass) at
1.21x.

How: each activation tensor that some layer reads is one move, its producer and consumers at the highest level the
target allows (float, or int16x8 where the target is integer-only). The moves whose producer loses the most SQNR
are each built alone and scored by the SQNR of the model's output on the search's first validation images; then the
best are raised together, 1, 2, 4, 8, ... at a time (within --max-fallback-layers), each a step judged like any
other. The pass runs after the layer pass whether or not that met the budget: of the
steps that meet it, a clearly faster one is kept (control_search._prefer_faster)."""

from __future__ import annotations

RANK_LIMIT = 32  # moves built and scored: the tensors whose producer loses the most SQNR in step 0


def moves(graph: list[tuple]) -> list[tuple[str, list[str]]]:
    """(tensor, the layers that make and read it) for each activation tensor some layer reads, in graph order.
    ``graph``: (layer, op, input tensors, output tensor) rows."""
    producer = {out: layer for layer, _, _, out in graph}
    readers: dict[str, list[str]] = {}
    for layer, _, inputs, _ in graph:
        for t in inputs:
            if t in producer and layer not in readers.setdefault(t, []):
                readers[t].append(layer)
    return [(t, [producer[t], *readers[t]]) for t in producer if readers.get(t)]


def _output_sqnr(s, content: bytes, images, outputs: list[str]) -> float:
    sqnr, _ = s.backend.activation_sqnr(s.ctx, content, images)
    values = [sqnr[o] for o in outputs if o in sqnr]
    return min(values) if values else float("-inf")


def rank(s, base: bytes, images, sqnr: dict, graph: list[tuple], level: str) -> list[dict]:
    """The output SQNR gain over ``base`` of each of the RANK_LIMIT moves whose producer loses the most SQNR in
    ``base`` (``sqnr``: its tensors' SQNR), when that move alone is raised to ``level``; best first, gains > 0."""
    from toolkit.accuracy_control import local_errors

    consumed = {t for _, _, inputs, _ in graph for t in inputs}
    outputs = [out for _, _, _, out in graph if out not in consumed]
    floor = min((sqnr[o] for o in outputs if o in sqnr), default=float("-inf"))
    lost = {row["layer"]: row["loss_db"] for row in local_errors(sqnr, graph)}
    candidates = sorted(moves(graph), key=lambda m: -lost.get(m[1][0], 0.0))[:RANK_LIMIT]
    rows = []
    for tensor, layers in candidates:
        if len(layers) > s.settings.max_layers:
            continue
        levels = {layer: level for layer in layers}
        content = s.backend.build(s.ctx, levels)
        if any(s.applied(content, levels).get(k) != v for k, v in levels.items()) or s.refused(content) is not None:
            continue
        gain = _output_sqnr(s, content, images, outputs) - floor
        if gain > 0:
            rows.append({"tensor": tensor, "layers": layers, "output_sqnr_gain_db": round(gain, 3)})
    rows.sort(key=lambda r: -r["output_sqnr_gain_db"])
    return rows


def raise_tensors(s, step_zero, images) -> None:
    """Steps that raise the best-ranked tensors together, 1, 2, 4, ... of them, as many as the layer limit allows.
    ``s``: the search (control_search._Search), ``step_zero``: its every-layer-int8 candidate; kept steps update
    ``s.best`` as the layer pass's do. Nothing where no level above int8 is allowed."""
    if s.allowed[-1] == "int8":
        return
    level = "float" if "float" in s.allowed else s.allowed[-1]
    sqnr, graph = s.backend.activation_sqnr(s.ctx, step_zero.content, images)
    ranking = rank(s, step_zero.content, images, sqnr, graph, level)
    s.log(f"  {s.variant}: tensor pass: {len(ranking)} tensor(s) raise the output's SQNR when their producer and "
          f"readers are {level}")
    count, tried = 1, set()
    while ranking and count <= 2 * len(ranking):
        levels: dict[str, str] = {}
        for row in ranking[:count]:
            trial = {**levels, **{layer: level for layer in row["layers"]}}
            if len(trial) > s.settings.max_layers:
                break
            levels = trial
        count *= 2
        if not levels or tuple(levels) in tried:
            continue
        tried.add(tuple(levels))
        _step(s, levels, level, ranking)  # every size is tried: the first to meet the budget on the search's
        # images is the luckiest there; the search's rule picks among them (accuracy, then clearly faster)


def _step(s, levels: dict, level: str, ranking: list[dict]) -> bool:
    """One tensor step judged like a layer step; True when it meets the budget."""
    content = s.backend.build(s.ctx, levels)
    applied = s.applied(content, levels)
    if any(applied.get(k) != v for k, v in levels.items()) or s.refused(content) is not None:
        return False
    tensors = [r["tensor"] for r in ranking if all(layer in levels for layer in r["layers"])]
    s.step += 1
    cost = s.backend.latency(content)
    current = type(s.best)(dict(levels), content, s.measure(content), applied, cost["p50_ms"], s.step,
                           tuple(cost["p50_ci95_ms"]) if cost.get("p50_ci95_ms") else None)
    change = {"layer": f"{len(tensors)} tensor(s)", "op": "tensors", "from": "int8", "to": level,
              "tensors": tensors, "why": f"the {len(tensors)} tensor(s) whose producer and readers at {level} raise "
                                        "the output's SQNR the most, each alone (the tensor pass)"}
    return s.took(change, current, cost, None, f"{len(tensors)} tensor(s), {len(levels)} layer(s) at {level}")
