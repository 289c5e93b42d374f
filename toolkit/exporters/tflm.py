"""``tflite-micro``: the full-integer model as a C source and header for TFLM projects.

The array's bytes are exactly the ``tflite-int8`` model's (checked by parsing the source back
before it is written), and the header carries the tensor arena TFLM measured for it.
"""

from __future__ import annotations

from pathlib import Path

from toolkit import tflm
from toolkit.artifacts import atomic_write_text
from toolkit.errors import DataError
from toolkit.exporters import FORMATS, ExportContext, Format, op_check, register
from toolkit.exporters.tflite import convert
from toolkit.provenance import sha256_bytes, sha256_file

CONTROL_CHECK_IMAGES = 1000  # validation images a controlled model runs in both TFLM and LiteRT


def _footprint(entry: dict, path: Path) -> dict:
    """The arena measured at export (the header carries it)."""
    return {"model_bytes": entry["model_bytes"], "ops": entry.get("ops", []), **entry["arena"]}


FORMAT = FORMATS.register(Format(
    "tflite-micro", "the full-integer model as a C array for TensorFlow Lite for Microcontrollers", order=30,
    extra="micro", lists_ops=True, footprint=_footprint, diagnose_instead="tflite-int8"))


@op_check("tflite-micro", "TFLM's op resolver and kernels (the int8 model loaded in TFLM)")
def check_micro_ops(ctx: ExportContext) -> None:
    if not tflm.available():
        return
    model, _ = convert(ctx, "int8")
    tflm.interpreter(model)


@register("tflite-micro", format="tflite-micro", quantization="int8", suffix=".cc", default=True,
          available=tflm.available, controllable=True, style=("#8c564b", "P"))
def tflite_micro(ctx: ExportContext, path: Path) -> dict:
    tflm.require()
    model, extra = convert(ctx, "int8")
    record = None
    if ctx.control is not None:
        model, record = _controlled(ctx, model)
    arena = tflm.measure_arena(model)
    header = path.with_suffix(".h")
    digest = sha256_bytes(model)
    comment = f"{len(model)}-byte full-integer TFLite model, sha256 {digest}"
    source = tflm.c_source(model, header.name, comment)
    if tflm.parse_c_array(source) != model:  # the round trip the deployment relies on
        raise DataError("the generated C array does not round-trip to the model bytes")
    atomic_write_text(path, source)
    atomic_write_text(header, tflm.c_header(len(model), arena["arena_bytes"], "TOOLKIT_MODEL_DATA_H_", comment))
    return {
        "model_bytes": len(model),
        "model_sha256": digest,
        "array": tflm.ARRAY_NAME,
        "alignment": tflm.ALIGNMENT,
        "arena": arena,
        "companions": [{"path": header.name, "bytes": header.stat().st_size, "sha256": sha256_file(header)}],
        **({"accuracy_control": record, "int8_only": True} if record else {}),
        "shared_seconds": ctx.charge("tflite-int8"),
        **({"calibration": extra["calibration"]} if "calibration" in extra else {}),
    }


def _controlled(ctx: ExportContext, plain: bytes) -> tuple[bytes, dict]:
    """Accuracy control for TFLM: integer steps only (16x8 kernels), each candidate loaded in
    TFLM; the result is run in TFLM and LiteRT on validation images and must agree."""
    import numpy as np

    from toolkit.accuracy_control import INTEGER_LEVELS, LEVELS
    from toolkit.config import Gates
    from toolkit.control_search import controlled
    from toolkit.runners.litert import LiteRTRunner
    from toolkit.runners.tflm import TFLMRunner
    from toolkit.verdicts import agreement_between

    done = ctx.control_results.get(("tflite", LEVELS))
    if done is not None and done[1]["int8_only"]:
        model, record = controlled(ctx, "tflite-micro", "tflite", plain)  # tflite-int8's result, integer-only
        record = {**record, "shared_with": "tflite-int8"}
    else:
        model, record = controlled(ctx, "tflite-micro", "tflite", plain, INTEGER_LEVELS, check=tflm.interpreter)
    if record.get("source") != "plain":
        images = ctx.validation().images[:CONTROL_CHECK_IMAGES]
        on_tflm = TFLMRunner(model).infer_batched(images, 1).argmax(1)
        litert = LiteRTRunner(model).infer_batched(images, 500).argmax(1)
        agreement = float(np.mean(on_tflm == litert))
        # parity's gate for the same comparison, by parity's rule: a controlled model TFLM runs differently
        # (the data show agreement below the bound) is not exported for TFLM
        verdict = agreement_between("agreement_with_litert_percent", int(np.sum(on_tflm == litert)), len(images),
                                    Gates().micro_min_agreement_with_litert)
        record["tflm_vs_litert"] = {"images": int(len(images)), "agreement": agreement, "verdict": verdict.to_json()}
        if verdict.failed:
            raise DataError(f"tflite-micro: TFLM and LiteRT disagree on the controlled model ({record['tool']}): "
                            f"{verdict} on {len(images)} validation images, so it is not exported for TFLM")
    return model, record
