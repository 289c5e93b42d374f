"""The toolkit's onnx-int8 compiles in OpenVINO's *default* CPU configuration, on every CPU kind.

Minimal reproduction of what OpenVINO 2026.4's CPU plugin refuses in its default configuration on
CPUs with AMX (where the default precision is bf16): one Conv whose input is signed int8 with a
non-zero zero point and whose output is re-quantized with a non-zero zero point ("No suitable
implementations"). Measured here (Intel Xeon with AMX) over Conv/Gemm, 1 and 32 input channels,
with and without ReLU, input (int8 -128/0/5, uint8 0/20/128) x output (int8 -128/-20/0, uint8 0/128):
every failure was a Conv with a signed input of non-zero zero point and an output of non-zero zero
point; uint8 inputs of any zero point compile; Gemm always compiles; f32 always compiles. The
toolkit therefore writes uint8 activations (the form NNCF writes), which are the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.provenance import cpu_features

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")


def _conv_qdq(activation_dtype, in_zero_point: int, out_zero_point: int):
    """image -> Q/DQ (activation_dtype, in_zero_point) -> Conv 3x3 (32 -> 8, per-channel int8 weights,
    float bias) -> ReLU -> Q/DQ (activation_dtype, out_zero_point)."""
    from onnx import TensorProto
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, size=(8, 32, 3, 3)).astype(np.int8)
    inits = [nh.from_array(weights, "w_q"), nh.from_array(np.full(8, 0.01, np.float32), "w_s"),
             nh.from_array(np.zeros(8, np.int8), "w_zp"), nh.from_array(rng.normal(size=8).astype(np.float32), "b"),
             nh.from_array(np.array(0.01, np.float32), "x_s"), nh.from_array(np.array(in_zero_point, activation_dtype), "x_zp"),
             nh.from_array(np.array(0.05, np.float32), "y_s"), nh.from_array(np.array(out_zero_point, activation_dtype), "y_zp")]
    nodes = [h.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xd"]),
             h.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["wd"], axis=0),
             h.make_node("Conv", ["xd", "wd", "b"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c"], ["r"]),
             h.make_node("QuantizeLinear", ["r", "y_s", "y_zp"], ["yq"]),
             h.make_node("DequantizeLinear", ["yq", "y_s", "y_zp"], ["y"])]
    graph = h.make_graph(nodes, "conv_qdq", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 8, 8])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def _compiles(model, config: dict) -> bool:
    core = ov.Core()
    try:
        compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", config)
        compiled({0: np.random.default_rng(1).random((1, 32, 8, 8), dtype=np.float32)})
    except RuntimeError:
        return False
    return True


def test_the_two_graphs_of_the_minimal_reproduction():
    """The toolkit's form (uint8 activations, ReLU output at zero point 0 on [0, max]) compiles at OpenVINO's
    defaults and at f32 everywhere; the signed form (int8 with zero point -128, onnxruntime's default for the
    same ranges) compiles at f32 everywhere and at the defaults only on CPUs without AMX. If this second
    assertion fails on an AMX CPU, OpenVINO has fixed it (the uint8 form is still the one NNCF writes)."""
    ours, signed = _conv_qdq(np.uint8, 0, 0), _conv_qdq(np.int8, -128, -128)
    assert _compiles(ours, {}) and _compiles(ours, {"INFERENCE_PRECISION_HINT": "f32"})
    assert _compiles(signed, {"INFERENCE_PRECISION_HINT": "f32"})
    assert _compiles(signed, {}) == (not cpu_features()["amx"])


def test_the_exported_onnx_int8_has_uint8_activations_and_compiles_at_openvino_defaults(quick_export):
    """Every activation Q/DQ of the toolkit's onnx-int8 is uint8 (weights int8), and OpenVINO compiles and runs
    it with no configuration at all (bf16 where the CPU has it), agreeing with the f32 compile on its classes."""
    import json

    from onnx import numpy_helper as nh

    manifest = json.loads((quick_export / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["variant"] == "onnx-int8")
    model = onnx.load(str(quick_export / entry["path"]))
    inits = {t.name: t for t in model.graph.initializer}
    weights = {t.name for t in model.graph.initializer}
    activation_types, weight_types = set(), set()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) > 2:
            dtype = nh.to_array(inits[node.input[2]]).dtype.name
            (weight_types if node.input[0] in weights else activation_types).add(dtype)
    assert activation_types == {"uint8"}, activation_types
    assert "int8" in weight_types
    core = ov.Core()
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    default = core.compile_model(core.read_model(str(quick_export / entry["path"])), "CPU")
    f32 = core.compile_model(core.read_model(str(quick_export / entry["path"])), "CPU",
                             {"INFERENCE_PRECISION_HINT": "f32"})
    out_default, out_f32 = default({0: images})[0], f32({0: images})[0]
    assert out_default.shape == (8, 10)
    assert (out_default.argmax(1) == out_f32.argmax(1)).mean() >= 0.75  # random images: near ties allowed
