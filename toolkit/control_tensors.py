"""The accuracy search's tensor pass (toolkit/control_search.py runs it after the layer pass): raise *tensors*,
not layers.

Why: where int8's error is activation rounding spread over many tensors (benchmarks/INT8_ERROR.md: MobileNetV2's
activations cause 78% of it, its five worst tensors half), raising one layer does not remove a tensor's rounding:
a float or 16-bit layer still reads its int8 input, and its consumers quantize its output to int8 again. A tensor
leaves int8 only when its producer and every consumer are raised together. benchmarks/TENSOR_PASS.md: on a
MobileNetV2 trained on MNIST, 11 tensors (14 layers) in float pass parity on the test set (99.80% agreement) at
1.19x plain int8's batch-1 p50, where plain int8 is inconclusive (99.50%); on a MobileNetV3Small no tensor step
meets the budget.

How: each activation tensor that some layer reads is one move, its producer and consumers at the highest level the
target allows (float, or int16x8 where the target is integer-only). The moves whose producer loses the most SQNR
are each built alone and scored by the SQNR of the model's output on the search's first validation images; then the
best are raised together, 1, 2, 4, 8, ... at a time (within --max-fallback-layers), each a step judged like any
other. The pass runs whether or not the layer pass met the budget: of the steps that meet it, a clearly faster one
is kept (control_search._prefer_faster)."""

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


def _output_sqnr(sqnr: dict, outputs: list[str]) -> float:
    """The SQNR of the model's output (its worst output where it has several)."""
    return min((sqnr[o] for o in outputs if o in sqnr), default=float("-inf"))


def rank(s, images, sqnr: dict, graph: list[tuple], level: str) -> list[dict]:
    """The output SQNR gain over step 0 (``sqnr``: its tensors' SQNR on ``images``) of each of the RANK_LIMIT moves
    whose producer loses the most SQNR there, when that move alone is raised to ``level``; best first, gains > 0."""
    from toolkit.accuracy_control import local_errors

    consumed = {t for _, _, inputs, _ in graph for t in inputs}
    outputs = [out for _, _, _, out in graph if out not in consumed]
    floor = _output_sqnr(sqnr, outputs)
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
        gain = _output_sqnr(s.backend.activation_sqnr(s.ctx, content, images)[0], outputs) - floor
        if gain > 0:
            rows.append({"tensor": tensor, "layers": layers, "output_sqnr_gain_db": round(gain, 3)})
    rows.sort(key=lambda r: -r["output_sqnr_gain_db"])
    return rows


def raise_tensors(s, images, first: tuple) -> None:
    """Steps that raise the best-ranked tensors together, 1, 2, 4, ... of them, as many as the layer limit allows.
    ``s``: the search (control_search._Search); ``first``: step 0's (SQNR per tensor, graph) on ``images``; kept steps
    update ``s.best`` as the layer pass's do. Nothing where no level above int8 is allowed."""
    if s.allowed[-1] == "int8":
        return
    level = "float" if "float" in s.allowed else s.allowed[-1]
    ranking = rank(s, images, *first, level)
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


def _step(s, levels: dict, level: str, ranking: list[dict]) -> None:
    """One tensor step, judged like a layer step (where the tool makes it and the target takes it)."""
    content = s.backend.build(s.ctx, levels)
    applied = s.applied(content, levels)
    if any(applied.get(k) != v for k, v in levels.items()) or s.refused(content) is not None:
        return
    tensors = [r["tensor"] for r in ranking if all(layer in levels for layer in r["layers"])]
    change = {"layer": f"{len(tensors)} tensor(s)", "op": "tensors", "from": "int8", "to": level,
              "tensors": tensors, "why": f"the {len(tensors)} tensor(s) whose producer and readers at {level} raise "
                                        "the output's SQNR the most, each alone (the tensor pass)"}
    s.took(levels, content, applied, change, None, f"{len(tensors)} tensor(s), {len(levels)} layer(s) at {level}")
