"""ONNX variants: float through tf2onnx, int8 through onnxruntime static quantization.

Why ``tf2onnx.convert.from_function`` and not ``from_keras``: the latter fails on Keras 3
models (``KeyError: 'keras_tensor_N'``, onnx/tensorflow-onnx#2348). Keras' own
``model.export(format="onnx")`` takes the same route.

Op support: tf2onnx converts with ``continue_on_error`` and only logs the TensorFlow ops it has
no ONNX mapping for at the opset ("Tensorflow op [name: Op] is not supported"), leaving them in
a graph that fails later. We listen to its log and fail the conversion naming those ops.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np

from toolkit.artifacts import atomic_write_bytes
from toolkit.errors import ConversionError
from toolkit.exporters import ExportContext, op_check, register
from toolkit.model import INPUT_NAME, OUTPUT_NAME

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def _rename_output(model, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for out in model.graph.output:
        if out.name == old:
            out.name = new


class _UnsupportedOps(logging.Handler):
    """Collects the op types tf2onnx logs as unsupported."""

    PATTERN = re.compile(r"Tensorflow op \[.*: ([\w.]+)\] is not supported")

    def __init__(self):
        super().__init__(logging.ERROR)
        self.ops: list[str] = []
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        match = self.PATTERN.search(message)
        if match and match.group(1) not in self.ops:
            self.ops.append(match.group(1))


def float_onnx(ctx: ExportContext) -> Path:
    """Convert once; the int8 variant quantizes this file."""
    if "onnx" in ctx.failures:
        raise ctx.failures["onnx"]
    if ctx._float_onnx is None:
        from toolkit._quiet import quiet_stderr, tf

        tf = tf()
        listener = _UnsupportedOps()
        logger = logging.getLogger("tf2onnx")
        start = time.perf_counter()
        try:
            with quiet_stderr():
                import tf2onnx

                logger.setLevel(logging.ERROR)
                logger.addHandler(listener)
                model = ctx.model
                shape = (None, *tuple(model.inputs[0].shape)[1:])
                signature = [tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)]
                fn = tf.function(lambda image: model(image, training=False), input_signature=signature)
                proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=ctx.opset)
        except Exception as exc:  # tf2onnx raises many types
            ctx.failures["onnx"] = ConversionError(
                f"ONNX conversion (tf2onnx, opset {ctx.opset}) failed: {type(exc).__name__}: "
                f"{(str(exc).strip().splitlines() or [''])[0][:300]}", detail=str(exc)[-4000:])
            raise ctx.failures["onnx"] from None
        finally:
            logger.removeHandler(listener)
        if listener.ops:
            ctx.failures["onnx"] = ConversionError(
                f"ONNX opset {ctx.opset} has no tf2onnx conversion for op(s) {', '.join(listener.ops)}",
                ops=listener.ops, detail="\n".join(listener.messages)[-4000:])
            raise ctx.failures["onnx"]
        ctx.timings["onnx"] = time.perf_counter() - start
        _rename_output(proto, proto.graph.output[0].name, OUTPUT_NAME)
        proto.producer_name = "toolkit (tf2onnx)"
        path = ctx.workdir / "float.onnx"
        atomic_write_bytes(path, proto.SerializeToString())
        ctx._float_onnx = path
    return ctx._float_onnx


@op_check("onnx", "tf2onnx mappings at the opset")
def check_onnx_ops(ctx: ExportContext) -> None:
    float_onnx(ctx)


@register("onnx", format="onnx", quantization="none", suffix=".onnx", default=True)
def onnx_float(ctx: ExportContext, path: Path) -> dict:
    atomic_write_bytes(path, float_onnx(ctx).read_bytes())
    return {"opset": ctx.opset, "shared_seconds": ctx.charge("onnx")}


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
    source = float_onnx(ctx)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    tmp = ctx.workdir / "int8.onnx"
    try:
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(tmp), Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
        )
    except Exception as exc:  # onnxruntime's quantizer raises many types
        from toolkit.artifacts import as_write_error

        if as_write_error(tmp, exc):
            raise
        raise ConversionError(f"onnxruntime int8 quantization failed: {type(exc).__name__}: "
                              f"{(str(exc).strip().splitlines() or [''])[0][:300]}", detail=str(exc)[-4000:]) from None
    atomic_write_bytes(path, tmp.read_bytes())
    return {
        "opset": ctx.opset,
        "shared_seconds": ctx.charge("onnx"),
        "calibration": {"method": ctx.calibration_method},
        "quantization_scheme": "QDQ, per-channel int8 weights, int8 activations (onnxruntime quantize_static)",
    }
