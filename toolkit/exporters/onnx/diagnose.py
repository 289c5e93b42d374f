"""`toolkit parity --diagnose onnx-int8`: onnxruntime's qdq_loss_debug. Both the float and the QDQ model
are augmented to output every activation; for each tensor the SQNR of the QDQ model's activation against
the float model's (cumulative error) and against its own dequantized value (local quantization error)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from toolkit.errors import DataError, UsageError

FLOAT_VARIANT = "onnx"


def diagnose(d) -> dict:
    """d: toolkit.diagnose.Diagnosis."""
    if FLOAT_VARIANT not in d.entries:
        raise UsageError(f"--diagnose {d.entry['variant']} compares with the float ONNX model: export it too "
                         "(`toolkit export --format onnx --force`)")
    float_path = d.exports.verified(d.entries[FLOAT_VARIANT])
    return _onnx(float_path, d.path, d.images)


def _onnx(float_path: Path, qdq_path: Path, images: np.ndarray) -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization import qdq_loss_debug as qdq

    from toolkit.runners.base import channels_first, to_channels_first

    graph_input = onnx.load(str(float_path), load_external_data=False).graph.input[0]
    dims = [d.dim_value or None for d in graph_input.type.tensor_type.shape.dim]
    if channels_first(dims):  # a model from PyTorch or another NCHW exporter
        images = to_channels_first(images)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(range(0, len(images), 20))

        def get_next(self):
            i = next(self._it, None)
            return None if i is None else {"image": images[i : i + 20]}

    with tempfile.TemporaryDirectory() as tmp:
        aug_float, aug_qdq = f"{tmp}/float.onnx", f"{tmp}/qdq.onnx"
        try:
            qdq.modify_model_output_intermediate_tensors(str(float_path), aug_float)
            qdq.modify_model_output_intermediate_tensors(str(qdq_path), aug_qdq)
            float_acts = qdq.collect_activations(aug_float, Reader())
            qdq_acts = qdq.collect_activations(aug_qdq, Reader())
        except Exception as exc:  # onnxruntime's own error types
            raise DataError(f"cannot instrument the ONNX models: {exc}") from None
    # tensors of the QDQ graph with no float counterpart (names the quantizer's pre-processing made) are left out
    matching = {k: v for k, v in qdq.create_activation_matching(qdq_acts, float_acts).items() if "float" in v}
    errors = qdq.compute_activation_error(matching)
    scales = {}
    model = onnx.load(str(qdq_path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in inits:
            s = inits[node.input[1]]
            scales[node.input[0]] = float(s) if s.size == 1 else None
    # Topological order = order of first appearance as a node output in the QDQ graph.
    order = {}
    for node in model.graph.node:
        for out in node.output:
            order.setdefault(out, len(order))
    layers, previous = [], None
    for tensor in sorted((t for t in errors if "xmodel_err" in errors[t]), key=lambda t: order.get(t, 1 << 30)):
        cumulative = float(errors[tensor]["xmodel_err"])
        # Ranked by SQNR against the float model (the dequantized activation vs the float one).
        # The QDQ-local SQNR is recorded too but not ranked on: the quantizer folds ReLU into
        # QuantizeLinear's clamp, so for a ReLU output it measures the ReLU, not the rounding.
        drop = 0.0 if previous is None else previous - cumulative
        previous = cumulative
        layers.append({
            "layer": tensor,
            "local_error": -cumulative,
            "sqnr_vs_float_model_db": cumulative,
            "sqnr_drop_db": drop,
            "sqnr_qdq_local_db": float(errors[tensor].get("qdq_err", float("nan"))),
            "scale": scales.get(tensor),
        })
    # per weight SQNR; scalar weights (a Rescaling layer's scale, say) as 1-element arrays, which
    # qdq.compute_weight_error fails on (it takes a 0-d array for a list)
    weights = {name: qdq.compute_signal_to_quantization_noice_ratio(
                   np.atleast_1d(np.asarray(m["float"], np.float32)), np.atleast_1d(np.asarray(m["dequantized"])))
               for name, m in qdq.create_weight_matching(str(float_path), str(qdq_path)).items()}
    return {
        "method": "onnxruntime qdq_loss_debug (activation SQNR, per tensor)",
        "metric": "SQNR of each activation against the float model's, in dB (higher is better); "
                  "drop = SQNR lost relative to the previous tensor; the lowest SQNR loses most",
        "weights_sqnr_db": {k: float(v) for k, v in weights.items()},
        "layers": layers,
    }
