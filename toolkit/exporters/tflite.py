"""TFLite variants through the TFLite converter, from a SavedModel of the Keras model.

Why a SavedModel and not ``from_concrete_functions``: with Keras 3 the latter keeps the
weights as resource variables, which the int8 calibrator cannot read
(``READ_VARIABLE failed to invoke``); the SavedModel path freezes them into constants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.artifacts import atomic_write_bytes
from toolkit.exporters import ExportContext, register


def convert(ctx: ExportContext, mode: str) -> tuple[bytes, dict]:
    """The TFLite model for a quantization mode, converted once per export."""
    if mode in ctx.tflite_bytes:
        return ctx.tflite_bytes[mode]
    from toolkit._quiet import quiet_stderr, tf

    tf = tf()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(ctx.saved_model()))
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
    with quiet_stderr():
        content = converter.convert()
    ctx.tflite_bytes[mode] = (content, extra)
    return content, extra


def _convert(ctx: ExportContext, path: Path, mode: str) -> dict:
    content, extra = convert(ctx, mode)
    atomic_write_bytes(path, content)
    return extra


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
