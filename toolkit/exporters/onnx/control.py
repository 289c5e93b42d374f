"""Accuracy control for ONNX (toolkit/accuracy_control.py): onnxruntime's quantize_static with nodes_to_exclude,
the float layers then fed their float inputs and no weight dequantized per call (int8 or float per layer: ONNX's
runtimes have no 16-bit kernels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.exporters import ExportContext
from toolkit.exporters.onnx import (
    OnnxState,
    _control_graph,
    _control_predict,
    _preprocessed,
    _quantize,
    _runner,
)
from toolkit.model import INPUT_NAME


def _control_layers(ctx: ExportContext) -> list[dict]:
    return [{"name": name, "op": op} for name, op, _, _ in _control_graph(ctx)]


# the suffix of an int8 weight read through Cast and Mul instead of DequantizeLinear (see _fold_weights)
FOLDED = "_int8_grid"
_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _control_build(ctx: ExportContext, levels: dict) -> bytes:
    out = ctx.workdir / "control.onnx"
    floats = tuple(k for k, v in levels.items() if v == "float")
    _quantize(ctx, out, exclude=floats)
    return _float_layers_read_float(out.read_bytes(), floats)


def _float_layers_read_float(content: bytes, floats: tuple[str, ...]) -> bytes:
    """A float layer reads its activations in float: the QuantizeLinear/DequantizeLinear pair quantize_static
    leaves on its input (written for the layer that produces it) is replaced, for it alone, by a Clip to the
    pair's representable range. The pair's saturation is kept, and with it a Relu or Clip the quantizer folded
    into it (an 8-bit range starting at 0 is the Relu it removed); only the rounding goes. A weighted layer whose
    output no int8 reader then quantizes computes in float in onnxruntime: its weights are folded
    (_fold_weights) so that no DequantizeLinear runs per call."""
    import onnx

    if not floats:
        return content
    model = onnx.load_from_string(content)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    clips: dict[str, str] = {}
    wanted = set(floats)
    for node in list(graph.node):
        if node.name not in wanted:
            continue
        for k, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or len(q.input) < 3 or q.input[2] not in inits:
                continue
            if q.input[0] not in clips:
                clips[q.input[0]] = _clip(graph, inits, q)
            node.input[k] = clips[q.input[0]]
    _drop_unread(graph)
    _fold_weights(graph)
    _in_order(graph)
    return model.SerializeToString()


def _in_order(graph) -> None:
    """The nodes in an order where each reads only what is already there (ONNX requires it; the Clips were
    appended), otherwise as they were."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        node = next(n for n in pending if all(i in ready for i in n.input))
        pending.remove(node)
        ordered.append(node)
        ready.update(node.output)
    del graph.node[:]
    graph.node.extend(ordered)


def _clip(graph, inits: dict, q) -> str:
    """A Clip of the tensor ``q`` quantizes, to the range the 8-bit pair can represent; its output's name."""
    import onnx
    from onnx import helper, numpy_helper

    scale = float(numpy_helper.to_array(inits[q.input[1]]).reshape(-1)[0])
    zero_init = inits[q.input[2]]
    zero = int(numpy_helper.to_array(zero_init).reshape(-1)[0])
    lo, hi = (0, 255) if zero_init.data_type == onnx.TensorProto.UINT8 else (-128, 127)
    tensor = q.input[0]
    low, high, out = f"{tensor}_float_min", f"{tensor}_float_max", f"{tensor}_float"
    graph.initializer.extend([numpy_helper.from_array(np.array((lo - zero) * scale, np.float32), low),
                              numpy_helper.from_array(np.array((hi - zero) * scale, np.float32), high)])
    graph.node.append(helper.make_node("Clip", [tensor, low, high], [out], name=f"{tensor}_float_clip"))
    return out


def _fold_weights(graph) -> None:
    """A Conv/Gemm/MatMul whose output no QuantizeLinear reads has no int8 kernel in onnxruntime: it computes in
    float and would dequantize its int8 weight on every call (runtimes keep DequantizeLinear out of constant
    folding, for their int8 fusions). Its weights (and bias) become Cast(int8) x scale instead: the same numbers
    as DequantizeLinear with a zero point of 0 (float(q) * scale in float32; quantize_static's weights and biases
    are symmetric), still stored as int8, and made of operators every runtime folds into a float constant when it
    loads the file. Named ...FOLDED so the layer still reads as int8."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    folded: set[str] = set()
    for node in list(graph.node):
        if node.op_type not in _WEIGHTED:
            continue
        if any(r.op_type == "QuantizeLinear" for r in readers.get(node.output[0], [])):
            continue  # quantized on its output: onnxruntime's int8 kernel
        for k, name in enumerate(node.input[1:], start=1):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
                continue
            if len(dq.input) > 2 and numpy_helper.to_array(inits[dq.input[2]]).any():
                continue  # an asymmetric weight: left to DequantizeLinear
            target = dq.input[0] + FOLDED
            if target not in folded:
                folded.add(target)
                _add_grid(graph, dq, inits, target)
            node.input[k] = target
    _drop_unread(graph)


def _add_grid(graph, dq, inits: dict, target: str) -> None:
    """Nodes computing into ``target`` what DequantizeLinear ``dq`` gives from its constant (zero point 0):
    Cast(q) x scale, the scale shaped along ``axis`` when it is per channel."""
    import onnx
    from onnx import helper, numpy_helper

    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    if scale.ndim == 1 and scale.size > 1:  # per channel, along ``axis`` (default 1)
        rank = len(inits[dq.input[0]].dims)
        shape = [1] * rank
        shape[next((a.i for a in dq.attribute if a.name == "axis"), 1) % rank] = scale.size
        scale = scale.reshape(shape)
    graph.initializer.append(numpy_helper.from_array(scale, f"{target}_scale"))
    graph.node.extend([helper.make_node("Cast", [dq.input[0]], [f"{target}_cast"], to=onnx.TensorProto.FLOAT,
                                        name=f"{target}_cast"),
                       helper.make_node("Mul", [f"{target}_cast", f"{target}_scale"], [target], name=f"{target}_mul")])


def _drop_unread(graph) -> None:
    """Nodes whose outputs nothing reads any more, then initializers nothing reads."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _control_applied(ctx: ExportContext, content: bytes, levels: dict) -> dict:
    """The precision of each layer in the QDQ model. A layer with weights: ``float`` when it reads a float weight
    initializer directly, ``int8`` when it reads an int8 weight (through DequantizeLinear, or folded to its int8
    grid's values). A layer without weights (Add, Relu, Reshape...): ``int8`` when it reads a dequantized tensor,
    ``float`` when it reads only float ones."""
    import onnx

    model = onnx.load_from_string(content)
    inits = {i.name: i for i in model.graph.initializer}
    dequantized = {n.output[0]: n.input[0] in inits for n in model.graph.node if n.op_type == "DequantizeLinear"}
    nodes = {n.name: n for n in model.graph.node}
    applied = {}
    for layer in levels:
        node = nodes.get(layer)
        if node is None:
            applied[layer] = "missing"
            continue
        float_weights = [i for i in node.input[1:] if i in inits and inits[i].data_type == onnx.TensorProto.FLOAT
                         and len(inits[i].dims) >= 2]
        int_weights = [i for i in node.input[1:] if dequantized.get(i) or i.endswith(FOLDED)]
        if float_weights or int_weights:
            applied[layer] = "float" if float_weights else "int8"
        else:
            reads_int8 = any(i in dequantized and not dequantized[i] for i in node.input)
            applied[layer] = "int8" if reads_int8 else "float"
    return applied


def _control_sqnr(ctx: ExportContext, content: bytes, images: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization import qdq_loss_debug as qdq

    from toolkit.accuracy_control import images_key, sqnr_db

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(range(0, len(images), 64))

        def get_next(self):
            i = next(self._it, None)
            return None if i is None else {INPUT_NAME: ctx.in_model_layout(images[i : i + 64])}

    import tempfile

    cache = ctx.state(OnnxState).float_activations
    with tempfile.TemporaryDirectory(prefix="toolkit-control-") as tmp:
        key = images_key(images)  # the float model's activations: the same at every step
        if key not in cache:
            aug_float = f"{tmp}/float.aug.onnx"
            qdq.modify_model_output_intermediate_tensors(str(_preprocessed(ctx)), aug_float)
            cache[key] = qdq.collect_activations(aug_float, Reader())
        qdq_path, aug_qdq = Path(tmp) / "qdq.onnx", f"{tmp}/qdq.aug.onnx"
        qdq_path.write_bytes(content)
        qdq.modify_model_output_intermediate_tensors(str(qdq_path), aug_qdq)
        qdq_acts = qdq.collect_activations(aug_qdq, Reader())
    float_acts = cache[key]
    sqnr = {}
    for name, values in float_acts.items():
        if name in qdq_acts:
            ref, got = np.concatenate(values), np.concatenate(qdq_acts[name])
            if ref.shape == got.shape and ref.dtype == np.float32:
                sqnr[name] = sqnr_db(ref, got)
    # a tensor followed by QuantizeLinear/DequantizeLinear: the dequantized value is what the next layer reads
    matching = qdq.create_activation_matching(qdq_acts, float_acts)
    for name, m in matching.items():
        if "float" in m and "post_qdq" in m:
            sqnr[name] = sqnr_db(np.concatenate(m["float"]), np.concatenate(m["post_qdq"]))
    return sqnr, _control_graph(ctx)






def _control_latency(content: bytes) -> dict:
    from toolkit.accuracy_control import p50_latency

    runner = _runner(content, threads=1)
    x = runner.prepare(np.zeros((1, *[d or 1 for d in runner.image_shape[1:]]), np.float32))
    return {**p50_latency(lambda: runner.run_raw(x)), "where": "onnxruntime's CPU provider on this machine, one thread"}


def backend():
    from toolkit.accuracy_control import Backend, register
    from toolkit.provenance import package_version

    version = package_version("onnxruntime") or package_version("onnxruntime-gpu")
    return register(Backend(
        format="onnx", tool=f"onnxruntime {version or '(version unknown)'} quantize_static", layers=_control_layers, build=_control_build,
        applied=_control_applied, activation_sqnr=_control_sqnr, predict=_control_predict,
        latency=_control_latency))

