"""OpenVINO IR variants (the ``[openvino]`` extra): ``openvino`` (float32 weights) and
``openvino-fp16`` (weights compressed to float16, decompressed by the CPU plugin), converted with
``openvino.convert_model`` from the SavedModel the TFLite converter also reads. An IR is two
files: the ``.xml`` graph is the artifact, its ``.bin`` weights a companion in the manifest,
verified like the artifact.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ConversionError, first_line, whole_message
from toolkit.exporters import FORMATS, ExportContext, Format, op_check, register
from toolkit.provenance import sha256_file
from toolkit.runners.openvino import available

_AUTO_NAME = re.compile(r"^([A-Za-z]+)_\d+$")  # OpenVINO's own names: a process-wide counter (Concat_719)
_SCOPE_SUFFIX = re.compile(r"_\d+(?=/|:|$)")  # Keras' per-process name scopes: seed_cnn_1/conv1_1/...


def normalize(model) -> None:
    """Names and metadata that depend only on the graph: OpenVINO numbers the ops it creates from a
    process-wide counter, and records the path it converted from (a temporary directory) in the
    model's rt_info; both would make the same weights give different bytes."""
    rt = model.get_rt_info()
    if "conversion_parameters" in list(rt.keys()):
        del rt["conversion_parameters"]
    if re.fullmatch(r"Model\d+", model.get_friendly_name()):  # the frontend's own count of models in this process
        model.set_friendly_name("Model0")  # what a fresh process writes
    used: set[str] = set()
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        auto = _AUTO_NAME.match(name)
        if auto and auto.group(1) == op.get_type_name():  # numbered by order in the graph instead
            new = name
            while new in used or new == name:
                counts[op.get_type_name()] = counts.get(op.get_type_name(), -1) + 1
                new = f"{op.get_type_name()}_{counts[op.get_type_name()]}"
                if new not in used:
                    break
        else:
            stem = _SCOPE_SUFFIX.sub("", name) or op.get_type_name()
            new, n = stem, 0
            while new in used:
                n += 1
                new = f"{stem}__{n}"
        used.add(new)
        op.set_friendly_name(new)


@dataclass
class OpenVinoState:
    """What the OpenVINO format keeps per export (ExportContext.state)."""

    model: object = None  # ov.Model, converted once (openvino and openvino-fp16 save it)


def convert(ctx: ExportContext):
    """The ov.Model, converted once per export (failures too)."""
    if "openvino" in ctx.failures:
        raise ctx.failures["openvino"]
    state = ctx.state(OpenVinoState)
    if state.model is None:
        import openvino as ov

        from toolkit.artifacts import as_write_error

        start = time.perf_counter()
        try:
            if ctx.framework.to_openvino is not None:  # a model from another framework: from it, or its ONNX
                from toolkit.exporters.onnx import float_onnx

                model = ctx.framework.to_openvino(ctx.reference, lambda: float_onnx(ctx))
            else:
                model = ov.convert_model(str(ctx.saved_model()))
            normalize(model)
        except Exception as exc:  # OpenVINO's frontends raise their own types
            if as_write_error(ctx.workdir, exc):
                raise
            ctx.failures["openvino"] = ConversionError(
                f"OpenVINO conversion (convert_model from the {'SavedModel' if ctx.model is not None else 'model'}) failed: "
                f"{first_line(exc)}", detail=whole_message(exc))
            raise ctx.failures["openvino"] from None
        ctx.timings["openvino"] = time.perf_counter() - start
        state.model = model
    return state.model


FORMAT = FORMATS.register(Format(
    "openvino", "OpenVINO IR (.xml + .bin) through OpenVINO's TensorFlow frontend", order=40, extra="openvino"))


@op_check("openvino", "OpenVINO's TensorFlow frontend (convert_model)")
def check_openvino_ops(ctx: ExportContext) -> None:
    if available():
        convert(ctx)


def _save(ctx: ExportContext, path: Path, fp16: bool) -> dict:
    import openvino as ov

    model = convert(ctx)
    ov.save_model(model, str(path), compress_to_fp16=fp16)  # writes path (.xml) and path.with_suffix(".bin")
    weights = path.with_suffix(".bin")
    return {
        "companions": [{"path": weights.name, "bytes": weights.stat().st_size, "sha256": sha256_file(weights)}],
        "model_bytes": path.stat().st_size + weights.stat().st_size,
        "weights": "float16 (compress_to_fp16)" if fp16 else "float32",
        "openvino": ov.get_version(),
        "shared_seconds": ctx.charge("openvino"),
    }


@register("openvino", format="openvino", quantization="none", suffix=".xml", default=True, available=available,
          style=("#bcbd22", "<"))
def openvino_float(ctx: ExportContext, path: Path) -> dict:
    return _save(ctx, path, fp16=False)


@register("openvino-fp16", format="openvino", quantization="fp16", suffix=".xml", default=False,
          available=available, style=("#e377c2", ">"))
def openvino_fp16(ctx: ExportContext, path: Path) -> dict:
    return _save(ctx, path, fp16=True)
