"""TFLite variants through the TFLite converter, from a SavedModel of the Keras model.

Why a SavedModel and not ``from_concrete_functions``: with Keras 3 the latter keeps the
weights as resource variables, which the int8 calibrator cannot read
(``READ_VARIABLE failed to invoke``); the SavedModel path freezes them into constants.

Op support: the converter is the authority on which TensorFlow ops LiteRT's builtins can
express and which have int8 kernels. Its MLIR diagnostics are long; we keep the op names it
names (``failed to legalize operation 'tf.X'``, ``Quantization not yet supported for op: 'X'``)
and one line of reason, and the full text in the manifest's ``detail``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from toolkit.artifacts import atomic_write_bytes
from toolkit.errors import ConversionError
from toolkit.exporters import ExportContext, op_check, register

_OP_PATTERNS = (
    re.compile(r"failed to legalize operation '([\w.]+)'"),
    re.compile(r"Quantization not yet supported for op: '([\w.]+)'"),
    re.compile(r"'([\w.]+)' op is neither a custom op nor a flex op"),
    re.compile(r"(?:Flex|Custom) ops: ([\w.]+(?:, [\w.]+)*)"),
)
_MODE_TEXT = {"none": "float32", "fp16": "float16", "dynamic": "dynamic-range int8", "int8": "full-integer int8"}


def conversion_error(exc: Exception, mode: str) -> ConversionError:
    """A ConversionError naming the ops the converter could not handle, from its message."""
    text = str(exc)
    ops: list[str] = []
    for pattern in _OP_PATTERNS:
        for match in pattern.findall(text):
            for op in match.split(", "):
                if op not in ops:
                    ops.append(op)
    errors = [line.split("error:", 1)[1].strip() for line in text.splitlines() if "error:" in line]
    if ops and mode == "int8" and any("Quantization not yet supported" in e for e in errors):
        reason = f"no int8 kernel in LiteRT for op(s) {', '.join(ops)}"
    elif ops:
        reason = f"LiteRT builtins cannot express op(s) {', '.join(ops)}"
    else:
        reason = errors[-1] if errors else (text.strip().splitlines() or [type(exc).__name__])[-1]
    return ConversionError(f"TFLite {_MODE_TEXT[mode]} conversion failed: {reason[:300]}", ops=ops,
                           detail=text[-4000:])


def convert(ctx: ExportContext, mode: str) -> tuple[bytes, dict]:
    """The TFLite model for a quantization mode, converted once per export (failures too)."""
    key = f"tflite-{mode}"
    if key in ctx.failures:
        raise ctx.failures[key]
    if mode in ctx.tflite_bytes:
        return ctx.tflite_bytes[mode]
    from toolkit._quiet import quiet_stderr, tf

    tf = tf()
    try:
        saved_model = ctx.saved_model()
    except Exception as exc:  # Keras/TensorFlow raise many types; a full disk is re-raised as such
        from toolkit.artifacts import as_write_error

        if as_write_error(ctx.workdir, exc):
            raise
        ctx.failures[key] = ConversionError(f"cannot write the model as a SavedModel for the TFLite converter: "
                                            f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}",
                                            detail=str(exc)[-4000:])
        raise ctx.failures[key] from None
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    extra: dict = {}
    if mode != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        images = ctx.calibration_images

        def representative():
            for i in range(len(images)):
                yield [images[i : i + 1].astype(np.float32)]

        converter.representative_dataset = representative
        # Full-integer: refuse any op without an int8 kernel instead of leaving it in float.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        extra["calibration"] = {"method": "minmax (TFLite converter)"}
    start = time.perf_counter()
    try:
        with quiet_stderr():
            content = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
        from toolkit.artifacts import as_write_error

        if as_write_error(ctx.workdir, exc):
            raise
        ctx.failures[key] = conversion_error(exc, mode)
        raise ctx.failures[key] from None
    ctx.timings[key] = time.perf_counter() - start
    ctx.tflite_bytes[mode] = (content, extra)
    return content, extra


@op_check("tflite", "LiteRT builtin ops (the TFLite converter, float32)")
def check_tflite_ops(ctx: ExportContext) -> None:
    convert(ctx, "none")


def _convert(ctx: ExportContext, path: Path, mode: str) -> dict:
    content, extra = convert(ctx, mode)
    atomic_write_bytes(path, content)
    return {**extra, "shared_seconds": ctx.charge(f"tflite-{mode}")}


@register("tflite", format="tflite", quantization="none", suffix=".tflite", default=True)
def tflite_float(ctx: ExportContext, path: Path) -> dict:
    return _convert(ctx, path, "none")


@register("tflite-fp16", format="tflite", quantization="fp16", suffix=".tflite", default=False)
def tflite_fp16(ctx: ExportContext, path: Path) -> dict:
    return _convert(ctx, path, "fp16")


@register("tflite-dynamic", format="tflite", quantization="dynamic", suffix=".tflite", default=False)
def tflite_dynamic(ctx: ExportContext, path: Path) -> dict:
    return _convert(ctx, path, "dynamic")


@register("tflite-int8", format="tflite", quantization="int8", suffix=".tflite", default=True)
def tflite_int8(ctx: ExportContext, path: Path) -> dict:
    return _convert(ctx, path, "int8")
