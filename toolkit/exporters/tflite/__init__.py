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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.artifacts import atomic_write_bytes
from toolkit.errors import ConversionError, DataError, first_line, message_lines, whole_message
from toolkit.exporters import FORMATS, ExportContext, Format, op_check, plain_companion, register
from toolkit.exporters.tflite.aeq import quantized

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
        reason = errors[-1] if errors else (message_lines(text) or [type(exc).__name__])[-1]
    return ConversionError(f"TFLite {_MODE_TEXT[mode]} conversion failed: {reason[:300]}", ops=ops,
                           detail=text[-4000:])


def convert(ctx: ExportContext, mode: str) -> tuple[bytes, dict]:
    """The TFLite model for a quantization mode, converted once per export (failures too). For int8,
    the range estimator's candidates (toolkit/ranges.py) are built and judged on the validation split
    (``ranges.choose``)."""
    if mode == "int8":
        return _int8(ctx)
    return _converted(ctx, mode)


@dataclass
class TfliteState:
    """What the TFLite format keeps per export (ExportContext.state): each conversion's bytes by what was
    converted, the SavedModel the int8 conversion reads and the Normalization layers it rewrote, per-image range
    statistics by the calibrated model they were measured on, and the accuracy search's float graph, its
    ai-edge-quantizer calibration and the float activations on the images it measures (by images_key)."""

    converted: dict = field(default_factory=dict)  # conversion key -> (bytes, manifest extras)
    int8_saved_model: Path | None = None
    int8_rewrites: list | None = None
    range_stats: dict = field(default_factory=dict)  # sha256 of the calibrated model -> toolkit.ranges.Stats
    range_stats_last: object = None  # the statistics of the latest calibration (what `auto` decides on)
    control_graph: list | None = None  # (name, op, float inputs, output) per float activation layer
    signature: tuple | None = None  # (signature key, input name) of the float model the search quantizes
    qsv: object = None  # ai-edge-quantizer's calibration of that model
    float_activations: dict = field(default_factory=dict)


def _converted(ctx: ExportContext, mode: str, estimator: str = "minmax", int8_graph: bool = False) -> tuple[bytes, dict]:
    key = f"tflite-{mode}" if mode != "int8" or estimator == "minmax" else f"tflite-int8:{estimator}"
    if int8_graph and mode != "int8":
        key += ":int8-graph"
    if key in ctx.failures:
        raise ctx.failures[key]
    converted = ctx.state(TfliteState).converted
    if key in converted:
        return converted[key]
    if ctx.model is None and ctx.framework.to_tflite is not None:  # a framework with its own TFLite converter
        converted[key] = _from_framework(ctx, mode, key)
        return converted[key]
    from toolkit._quiet import quiet_stderr, tf

    tf = tf()
    try:
        saved_model = _int8_saved_model(ctx) if mode == "int8" or int8_graph else ctx.saved_model()
    except ConversionError as exc:  # no TensorFlow model to convert (a model from another framework)
        ctx.failures[key] = exc
        raise
    except Exception as exc:  # Keras/TensorFlow raise many types; a full disk is re-raised as such
        from toolkit.artifacts import as_write_error

        if as_write_error(ctx.workdir, exc):
            raise
        ctx.failures[key] = ConversionError(f"cannot write the model as a SavedModel for the TFLite converter: "
                                            f"{type(exc).__name__}: {first_line(exc)}",
                                            detail=whole_message(exc))
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
        extra["calibration"] = {"method": f"{estimator} (toolkit/ranges.py, set in the TFLite converter's calibration)"}
    start = time.perf_counter()
    try:
        with quiet_stderr(), _ranges_in_calibration(ctx, estimator if mode == "int8" else None):
            content = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
        from toolkit.artifacts import as_write_error

        if as_write_error(ctx.workdir, exc):
            raise
        ctx.failures[key] = conversion_error(exc, mode)
        raise ctx.failures[key] from None
    ctx.timings[key] = ctx.timings.get(key, 0.0) + time.perf_counter() - start
    converted[key] = (content, extra)
    return content, extra


def _from_framework(ctx: ExportContext, mode: str, key: str) -> tuple[bytes, dict]:
    """A TFLite model from the source framework's own converter (PyTorch: litert-torch's float file) and, for
    the quantized modes, that file quantized by ai-edge-quantizer (LiteRT's quantizer, which the accuracy search
    uses too): float16 weights, dynamic-range int8 weights, or full-integer int8 (int8 input and output) calibrated
    on the calibration images with its own min/max. The int8 file (and so TFLM's C array and Vela's input) is made
    from a conversion at batch 1: a dynamic-batch conversion keeps its example's batch (2) as the tensors' static
    shape, which TFLM and Vela, reading static shapes, would run as two images per invoke."""
    start = time.perf_counter()
    try:
        if mode == "none":  # the int8 graph: one image per invoke, as microcontrollers and NPUs run it
            content, extra = ctx.framework.to_tflite(ctx.reference, batch_one=key.endswith(":int8-graph"))
        else:
            base, made = _converted(ctx, "none", int8_graph=mode == "int8")
            content, extra = quantized(ctx, base, mode)
            extra = {**{k: made[k] for k in ("converter", "batch", "batch_note") if k in made}, **extra}
    except ConversionError as exc:
        ctx.failures[key] = exc
        raise
    ctx.timings[key] = time.perf_counter() - start
    return content, extra


# A Normalization whose per-channel scales span more than this ratio is rewritten for int8 (below)
AFFINE_SPAN = 16.0


def _int8_saved_model(ctx: ExportContext) -> Path:
    """The SavedModel the int8 conversion reads: the model itself, or, where a Normalization layer's
    per-channel scales span more than AFFINE_SPAN (per-pixel standardization: rarely inked pixels have
    tiny variances), the same model with that layer computed as a 1x1 depthwise convolution. The numbers
    are the same in float; in int8 a depthwise kernel is quantized per channel, where the converter gives
    a Mul's constant one scale for all and rounds the small ones to a step or two. (ONNX leaves such
    arithmetic in float instead: toolkit/exporters/onnx/.)"""
    state = ctx.state(TfliteState)
    if state.int8_saved_model is not None:
        return state.int8_saved_model
    rewritten = _affine_as_depthwise(ctx.model) if ctx.model is not None else None
    if rewritten is None:
        state.int8_saved_model, state.int8_rewrites = ctx.saved_model(), []
        return state.int8_saved_model
    model, names = rewritten
    from toolkit._quiet import quiet_stderr

    path = ctx.workdir / "saved_model_int8"
    with quiet_stderr():
        model.export(str(path), format="tf_saved_model", verbose=False)
    state.int8_saved_model, state.int8_rewrites = path, names
    return path


def _affine_as_depthwise(model):
    """(the model with each wide-ranging last-axis Normalization as a depthwise 1x1 convolution, their
    names), or None when the model has none."""
    import keras

    targets = {}
    for layer in model.layers:
        if type(layer).__name__ != "Normalization" or getattr(layer, "invert", False):
            continue
        axis = tuple(layer.axis) if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
        if axis not in ((-1,), (len(layer.input.shape) - 1,)):
            continue
        mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), np.float64).ravel()
        std = np.sqrt(np.asarray(keras.ops.convert_to_numpy(layer.variance), np.float64).ravel())
        scale = 1.0 / np.maximum(std, keras.backend.epsilon())
        if len(scale) > 1 and scale.max() / scale.min() > AFFINE_SPAN:
            targets[layer.name] = (scale.astype(np.float32), (-mean * scale).astype(np.float32))
    if not targets:
        return None
    from toolkit.exporters.tflite.layers import DepthwiseAffine

    def clone(layer):
        if layer.name in targets:
            return DepthwiseAffine(*targets[layer.name], name=layer.name)
        return layer  # the same layer, the same weights

    return keras.models.clone_model(model, clone_function=clone), sorted(targets)


def _int8(ctx: ExportContext) -> tuple[bytes, dict]:
    """The plain int8 model: each range estimator the calibration method asks for, the one that agrees
    best with Keras on the validation split kept (minmax alone when the data has no validation split)."""
    state = ctx.state(TfliteState)
    if "tflite-int8" in state.converted and "tflite-int8:chosen" in state.converted:
        return state.converted["tflite-int8:chosen"]
    if ctx.model is None:  # from the framework's own float file, quantized by ai-edge-quantizer
        state.converted["tflite-int8"] = state.converted["tflite-int8:chosen"] = _converted(ctx, "int8")
        return state.converted["tflite-int8"]
    from toolkit import ranges

    method, note = ranges.method_for("tflite-int8", ctx.calibration_method)
    if note:
        ctx.log(f"  note: {note}")
    start = time.perf_counter()
    candidates = {"minmax": _converted(ctx, "int8", "minmax")[0]}  # its calibration measures every tensor
    stats = state.range_stats_last
    names = ranges.estimators_for(method, stats)
    candidates.update({name: _converted(ctx, "int8", name)[0] for name in names if name != "minmax"})
    candidates = {name: candidates[name] for name in names}
    chosen, record = ranges.pick(ctx, candidates, _control_predict, "tflite-int8", stats)
    content, extra = _converted(ctx, "int8", chosen)
    extra = {**extra, "calibration": {**extra["calibration"], **record,
                                      **({"asked": ctx.calibration_method, "note": note} if note else {})}}
    rewrites = state.int8_rewrites
    if rewrites:
        extra["int8_graph"] = {"normalization_as_depthwise_conv": rewrites,
                               "why": f"per-channel scales spanning over {AFFINE_SPAN:g}x: a depthwise kernel is "
                                      "quantized per channel, a Mul's constant with one scale"}
    ctx.timings["tflite-int8"] = time.perf_counter() - start
    state.converted["tflite-int8"] = state.converted["tflite-int8:chosen"] = (content, extra)
    return content, extra


class _ranges_in_calibration:
    """While the converter runs: its calibration's min/max per activation tensor (the global min/max of
    the representative images) replaced by ``estimator``'s ranges, measured per image on the same
    calibrated model. For minmax too: the converter's own min/max is wrong where an op apparently writes its output
    into its input's buffer (its calibration logged a residual Add's values for the projection feeding
    it, so MobileNetV2's projections got their Add's wider range: 2.3x coarser steps on block 9, read from its
    file; tests/test_finetune.py checks the ranges on a residual block). The per-image figures also decide whether any tensor has a
    long tail, and so whether other estimators are tried.

    Why a patched method: the converter has no public hook between calibration and quantization. Its
    public options take a representative dataset and compute min/max themselves; the only ways in are
    private (``_experimental_calibrate_only`` plus ``convert.mlir_quantize``, what LiteRT's own
    QuantizationDebugger uses) or this one. The patch is undone on exit, and a converter that changes
    the method fails the op check and the estimator tests rather than quietly ignoring the ranges."""

    def __init__(self, ctx: ExportContext, estimator: str):
        self.ctx, self.estimator = ctx, estimator

    def __enter__(self):
        if self.estimator is None:
            return self
        from tensorflow.lite.python.optimize import calibrator

        self.cls, self.original = calibrator.Calibrator, calibrator.Calibrator.calibrate
        ctx, estimator, original = self.ctx, self.estimator, self.original

        def calibrate(this, dataset_gen):
            return _set_ranges(ctx, original(this, dataset_gen), estimator)

        self.cls.calibrate = calibrate
        return self

    def __exit__(self, *exc):
        if self.estimator is not None:
            self.cls.calibrate = self.original
        return False


def _set_ranges(ctx: ExportContext, calibrated: bytes, estimator: str) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    calibrated_tensors = [i for i, t in enumerate(tensors)
                          if t.quantization is not None and t.quantization.min is not None
                          and len(t.quantization.min) == 1]
    import hashlib

    key = hashlib.sha256(calibrated).hexdigest()
    state = ctx.state(TfliteState)
    if key not in state.range_stats:
        state.range_stats[key] = _per_image_stats(bytes(calibrated), calibrated_tensors, ctx.calibration_images)
    state.range_stats_last = state.range_stats[key]
    ranges = state.range_stats[key].ranges(estimator)
    for i in calibrated_tensors:
        if str(i) in ranges:
            lo, hi = ranges[str(i)]
            tensors[i].quantization.min = np.array([lo], np.float32)
            tensors[i].quantization.max = np.array([hi], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _per_image_stats(content: bytes, indices: list[int], images: np.ndarray):
    """Each calibrated tensor's min and max on each calibration image, from the calibrated float model."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from toolkit.ranges import Stats

    with warnings.catch_warnings():  # "intended for debugging": every tensor kept is what is measured here
        warnings.simplefilter("ignore", UserWarning)
        it = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inp = it.get_input_details()[0]
    if tuple(inp["shape"]) != (1, *images.shape[1:]):
        it.resize_tensor_input(inp["index"], [1, *images.shape[1:]])
    it.allocate_tensors()
    stats = Stats()
    for k in range(len(images)):
        it.set_tensor(inp["index"], images[k : k + 1].astype(np.float32))
        it.invoke()
        for i in indices:
            try:
                stats.add(str(i), it.get_tensor(i))
            except ValueError:  # a tensor without data (optional input)
                continue
    return stats


def _footprint(entry: dict, path: Path) -> dict:
    """The int8 model's tensor arena as TFLM measures it (or why TFLM cannot run it)."""
    from toolkit import tflm

    tflm.require()
    model = path.read_bytes()
    row = {"model_bytes": len(model), "ops": entry.get("ops", [])}
    try:
        row.update(tflm.measure_arena(model))
    except DataError as exc:  # an op TFLM has no kernel for: the model does not run on a microcontroller
        row.update(arena_bytes=None, note=f"TFLM cannot run it: {exc}")
    return row


FORMAT = FORMATS.register(Format(
    "tflite", "LiteRT flatbuffers from the TFLite converter: float32, fp16, dynamic-range and full-integer int8",
    order=10, lists_ops=True, footprint=_footprint, control="toolkit.exporters.tflite.control",
    diagnose="toolkit.exporters.tflite.diagnose"))


@op_check("tflite", "LiteRT builtin ops (the TFLite converter, float32)")
def check_tflite_ops(ctx: ExportContext) -> None:
    convert(ctx, "none")


def _convert(ctx: ExportContext, path: Path, mode: str) -> dict:
    content, extra = convert(ctx, mode)
    atomic_write_bytes(path, content)
    return {**extra, "shared_seconds": ctx.charge(f"tflite-{mode}")}


@register("tflite", format="tflite", quantization="none", suffix=".tflite", default=True, roles=("closest-float",),
          style=("#1f77b4", "o"))
def tflite_float(ctx: ExportContext, path: Path) -> dict:
    return _convert(ctx, path, "none")


@register("tflite-fp16", format="tflite", quantization="fp16", suffix=".tflite", default=False, style=("#17becf", "v"))
def tflite_fp16(ctx: ExportContext, path: Path) -> dict:
    return _convert(ctx, path, "fp16")


@register("tflite-dynamic", format="tflite", quantization="dynamic", suffix=".tflite", default=False,
          style=("#9467bd", "D"))
def tflite_dynamic(ctx: ExportContext, path: Path) -> dict:
    return _convert(ctx, path, "dynamic")


@register("tflite-int8", format="tflite", quantization="int8", suffix=".tflite", default=True, controllable=True,
          roles=("integer-only",), style=("#ff7f0e", "s"))
def tflite_int8(ctx: ExportContext, path: Path) -> dict:
    if ctx.control is None:
        return _convert(ctx, path, "int8")
    from toolkit.control_search import controlled

    plain, extra = convert(ctx, "int8")
    content, record = controlled(ctx, "tflite-int8", "tflite", plain)
    atomic_write_bytes(path, content)
    out = {**extra, "shared_seconds": ctx.charge("tflite-int8"), "accuracy_control": record,
           "int8_only": record["int8_only"]}
    if content != plain:
        out["companions"] = [plain_companion(path, plain)]
        # the searched bytes are ai-edge-quantizer's, at the ranges of the plain model's estimator
        # (exporters/tflite/control.py: _plain_ranges)
        plain_calibration = extra.get("calibration", {})
        out["calibration"] = {
            **plain_calibration,
            "method": "ai-edge-quantizer (recipe static_wi8_ai8 with the search's per-layer changes), each activation "
                      f"at the range plain int8's estimator ({plain_calibration.get('estimator')}) gives on the same "
                      "calibration images",
        }
    return out


def _control_predict(content: bytes, images: np.ndarray) -> np.ndarray:
    from toolkit.runners.litert import LiteRTRunner

    return LiteRTRunner(content).infer_batched(images, 500).argmax(1)
