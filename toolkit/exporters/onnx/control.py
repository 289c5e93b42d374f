"""Accuracy control for ONNX (toolkit/accuracy_control.py): nodes_to_exclude and int16 overrides in
onnxruntime's quantize_static."""

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


def _control_build(ctx: ExportContext, levels: dict) -> bytes:
    out = ctx.workdir / "control.onnx"
    # a float node's inputs and output are still quantized where a quantized node writes or reads them: at
    # 16 bits, so that "float" is never less precise than "int16x8"
    _quantize(ctx, out, exclude=tuple(k for k, v in levels.items() if v == "float"),
              int16=tuple(k for k, v in levels.items() if v in ("int16x8", "float")))
    return out.read_bytes()


def _control_applied(ctx: ExportContext, content: bytes, levels: dict) -> dict:
    """The precision of each layer in the QDQ model. A layer with weights: ``float`` when it reads a weight
    initializer directly (not through DequantizeLinear), else ``int16x8`` or ``int8`` by its output's
    quantized type. A layer without weights (Add, Relu, Reshape...) computes on what it reads, which
    onnxruntime dequantizes for every consumer alike: ``int8`` when its output is quantized to 8 bits,
    else, 16-bit or not quantized, the level asked for (``float`` and ``int16x8`` are one graph there)."""
    import onnx

    model = onnx.load_from_string(content)
    inits = {i.name: i for i in model.graph.initializer}
    zero_types = {name: i.data_type for name, i in inits.items()}
    dequantized_weights = {n.output[0] for n in model.graph.node
                           if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    quantized = {n.input[0]: zero_types.get(n.input[2]) for n in model.graph.node
                 if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    nodes = {n.name: n for n in model.graph.node}
    applied = {}
    for layer, asked in levels.items():
        node = nodes.get(layer)
        if node is None:
            applied[layer] = "missing"
            continue
        out_type = quantized.get(node.output[0])
        float_weights = [i for i in node.input[1:] if i in inits and inits[i].data_type == onnx.TensorProto.FLOAT
                         and len(inits[i].dims) >= 2]
        int_weights = [i for i in node.input[1:] if i in dequantized_weights]
        if float_weights:
            applied[layer] = "float"
        elif int_weights:
            applied[layer] = "int16x8" if out_type == onnx.TensorProto.INT16 else "int8"
        elif out_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            applied[layer] = "int8"
        else:
            applied[layer] = asked if asked in ("float", "int16x8") else "int8"
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
    return p50_latency(lambda: runner.run_raw(x))


def backend():
    from toolkit.accuracy_control import Backend, register
    from toolkit.provenance import package_version

    version = package_version("onnxruntime") or package_version("onnxruntime-gpu")
    return register(Backend(
        format="onnx", tool=f"onnxruntime {version or '(version unknown)'} quantize_static", layers=_control_layers, build=_control_build,
        applied=_control_applied, activation_sqnr=_control_sqnr, predict=_control_predict,
        latency=_control_latency))

