"""ONNX variants: float through tf2onnx, int8 through onnxruntime static quantization.

Why ``tf2onnx.convert.from_function`` and not ``from_keras``: the latter fails on Keras 3
models (``KeyError: 'keras_tensor_N'``, onnx/tensorflow-onnx#2348). Keras' own
``model.export(format="onnx")`` takes the same route.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from toolkit.artifacts import atomic_write_bytes
from toolkit.exporters import ExportContext, register
from toolkit.model import INPUT_NAME, OUTPUT_NAME

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def _rename_output(model, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for out in model.graph.output:
        if out.name == old:
            out.name = new


def float_onnx(ctx: ExportContext) -> Path:
    """Convert once; the int8 variant quantizes this file."""
    if ctx._float_onnx is None:
        from toolkit._quiet import quiet_stderr, tf

        tf = tf()
        with quiet_stderr():
            import tf2onnx

            logging.getLogger("tf2onnx").setLevel(logging.ERROR)
            model = ctx.model
            shape = (None, *tuple(model.inputs[0].shape)[1:])
            signature = [tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)]
            fn = tf.function(lambda image: model(image, training=False), input_signature=signature)
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=ctx.opset)
        _rename_output(proto, proto.graph.output[0].name, OUTPUT_NAME)
        proto.producer_name = "toolkit (tf2onnx)"
        path = ctx.workdir / "float.onnx"
        atomic_write_bytes(path, proto.SerializeToString())
        ctx._float_onnx = path
    return ctx._float_onnx


@register("onnx", format="onnx", quantization="none", suffix=".onnx", default=True)
def onnx_float(ctx: ExportContext, path: Path) -> dict:
    atomic_write_bytes(path, float_onnx(ctx).read_bytes())
    return {"opset": ctx.opset}


@register("onnx-int8", format="onnx", quantization="int8", suffix=".onnx", default=True)
def onnx_int8(ctx: ExportContext, path: Path) -> dict:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[ctx.calibration_method]
    images = ctx.calibration_images

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(np.array_split(images, max(1, len(images) // 10)))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch.astype(np.float32)}

    pre = ctx.workdir / "float.pre.onnx"
    # skip_symbolic_shape: symbolic shape inference needs sympy and adds nothing for a CNN
    # whose only dynamic dimension is the batch.
    quant_pre_process(str(float_onnx(ctx)), str(pre), skip_symbolic_shape=True)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    tmp = ctx.workdir / "int8.onnx"
    quantize_static(
        str(pre), str(tmp), Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
    )
    atomic_write_bytes(path, tmp.read_bytes())
    return {
        "opset": ctx.opset,
        "calibration": {"method": ctx.calibration_method},
        "quantization_scheme": "QDQ, per-channel int8 weights, int8 activations (onnxruntime quantize_static)",
    }
