"""``tflite-micro``: the full-integer model as a C source and header for TFLM projects.

The array's bytes are exactly the ``tflite-int8`` model's (checked by parsing the source back
before it is written), and the header carries the tensor arena TFLM measured for it.
"""

from __future__ import annotations

from pathlib import Path

from toolkit import micro
from toolkit.artifacts import atomic_write_text
from toolkit.errors import DataError
from toolkit.exporters import ExportContext, op_check, register
from toolkit.exporters.tflite import convert
from toolkit.provenance import sha256_bytes, sha256_file


@op_check("tflite-micro", "TFLM's op resolver and kernels (the int8 model loaded in TFLM)")
def check_micro_ops(ctx: ExportContext) -> None:
    if not micro.available():
        return
    model, _ = convert(ctx, "int8")
    micro.interpreter(model)


@register("tflite-micro", format="tflite-micro", quantization="int8", suffix=".cc", default=True,
          available=micro.available)
def tflite_micro(ctx: ExportContext, path: Path) -> dict:
    micro.require()
    model, extra = convert(ctx, "int8")
    arena = micro.measure_arena(model)
    header = path.with_suffix(".h")
    digest = sha256_bytes(model)
    comment = f"{len(model)}-byte full-integer TFLite model, sha256 {digest}"
    source = micro.c_source(model, header.name, comment)
    if micro.parse_c_array(source) != model:  # the round trip the deployment relies on
        raise DataError("the generated C array does not round-trip to the model bytes")
    atomic_write_text(path, source)
    atomic_write_text(header, micro.c_header(len(model), arena["arena_bytes"], "TOOLKIT_MODEL_DATA_H_", comment))
    return {
        "model_bytes": len(model),
        "model_sha256": digest,
        "array": micro.ARRAY_NAME,
        "alignment": micro.ALIGNMENT,
        "arena": arena,
        "companions": [{"path": header.name, "bytes": header.stat().st_size, "sha256": sha256_file(header)}],
        "shared_seconds": ctx.charge("tflite-int8"),
        **({"calibration": extra["calibration"]} if "calibration" in extra else {}),
    }
