"""One variant of an export: each format's op check first, then the file built, checked against Keras on the
check images and described as its manifest entry; a variant that cannot be made is a failure record, not an
exception, so the others are still committed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from toolkit import artifacts, schema
from toolkit.errors import (
    ConversionError,
    DataError,
    DeviceUnavailableError,
    UsageError,
    WriteError,
    failure_record,
    first_line,
)
from toolkit.export.inputs import Inputs
from toolkit.exportdir import Generation
from toolkit.exporters import OP_CHECKS, ExportContext, Exporter, get_format
from toolkit.provenance import sha256_bytes, sha256_file
from toolkit.runners import runner_for

# A fresh export must agree with Keras on at least this share of the check batch, or it is
# broken beyond what parity's statistics are for (full parity is `toolkit parity`).
GROSS_MIN_AGREEMENT = 0.95
# An int8 variant below GROSS_MIN_AGREEMENT is a quantization-quality outcome, not a broken file: it is
# committed with a warning (parity gives the verdict; --max-accuracy-drop can repair it) unless it is
# this far off, where its predictions are no longer the model's (wrong scales or layout, or at chance).
INT8_BROKEN_AGREEMENT = 0.5


class VariantFailed(Exception):
    """A variant that could not be made: ``record`` is its manifest ``failed`` entry."""

    def __init__(self, record: dict):
        super().__init__(record["reason"])
        self.record = record


def check_against_reference(exporter: Exporter, path: Path, images: np.ndarray, ref: np.ndarray,
                            framework: str = "Keras"):
    """The new file on the check batch against the model in its own framework (``framework``: its title)."""
    runner = runner_for(exporter.format, path)
    logits = runner.infer(images)
    if logits.shape != ref.shape or not np.isfinite(logits).all():
        raise DataError(f"{exporter.variant}: output {logits.shape} is not finite scores of shape {ref.shape}")
    agreement = float((logits.argmax(1) == ref.argmax(1)).mean())
    check = {
        "images": int(len(images)),
        "agreement": agreement,
        "max_abs_logit_diff": float(np.abs(logits - ref).max()),
    }
    if exporter.calibrated and INT8_BROKEN_AGREEMENT <= agreement < GROSS_MIN_AGREEMENT:
        check["warning"] = (f"agrees with {framework} on only {agreement:.1%} of {len(images)} test images: int8 loses "
                            "much of this model; `toolkit parity` gives the verdict, --max-accuracy-drop PTS searches "
                            "for a model that keeps it, `toolkit parity --diagnose` names the layers")
    elif agreement < GROSS_MIN_AGREEMENT:
        raise DataError(
            f"{exporter.variant}: agrees with {framework} on only {agreement:.1%} of {len(images)} test images "
            f"(< {GROSS_MIN_AGREEMENT:.0%}): the conversion is broken"
        )
    return runner, check


def variant_failure(exporter: Exporter, stage: str, exc: BaseException) -> dict:
    """A variant that could not be made, as the manifest's ``failed`` lists it (errors.failure_record, and the
    ops a converter refused)."""
    failure = failure_record(stage, exc, variant=exporter.variant, format=exporter.format)
    if isinstance(exc, ConversionError):
        failure["unsupported_ops"] = exc.ops
    return failure


def op_support(ctx: ExportContext, exporters: list[Exporter], log) -> dict:
    """Each format's op check, before any variant is built: {format: result}."""
    results = {}
    for fmt in dict.fromkeys(e.format for e in exporters):
        check = OP_CHECKS.get(fmt)
        if check is None:
            raise UsageError(f"format {fmt!r} has no op-support check registered")
        try:
            check.run(ctx)
            results[fmt] = {"supported": True, "checked_by": check.what, "unsupported_ops": []}
        except DataError as exc:  # ConversionError names the ops; a DataError says why otherwise
            results[fmt] = {"supported": False, "checked_by": check.what,
                            "unsupported_ops": getattr(exc, "ops", []), "reason": first_line(exc), "error": exc}
        verdict = "all ops supported" if results[fmt]["supported"] else results[fmt]["reason"]
        log(f"  ops  {fmt:<13} {verdict}")
    return results


def build_variant(exporter: Exporter, ctx: ExportContext, inp: Inputs, generation: Generation, calibration: dict,
                  log) -> dict:
    """One variant built into ``generation``, checked against Keras and described (its manifest entry, paths
    as the manifest records them); VariantFailed when it cannot be made."""
    filename = f"{exporter.variant}{exporter.suffix}"
    path = generation.file(filename)
    start = time.perf_counter()
    try:
        extra = exporter.build(ctx, path)
    except Exception as exc:
        failed_write = artifacts.as_write_error(path, exc)
        if failed_write:
            raise failed_write from None
        if isinstance(exc, (WriteError, UsageError, DeviceUnavailableError)):
            raise  # a flag that cannot work, a missing tool: not this variant's failure
        log(f"  {exporter.variant:<15} FAILED to convert: {first_line(exc)}")
        raise VariantFailed(variant_failure(exporter, "convert", exc)) from None
    # the conversions the op checks already ran count for the first variant that uses them
    seconds = time.perf_counter() - start + extra.pop("shared_seconds", 0.0)
    try:
        runner, check = check_against_reference(exporter, path, inp.check_images, inp.reference,
                                               inp.source.framework.title or inp.source.framework.name)
    except DataError as exc:
        log(f"  {exporter.variant:<15} FAILED its check: {first_line(exc)}")
        path.unlink(missing_ok=True)
        raise VariantFailed(variant_failure(exporter, "check", exc)) from None
    entry = {
        "variant": exporter.variant,
        "format": exporter.format,
        "quantization": exporter.quantization,
        "path": generation.recorded(filename),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "inputs": [runner.input_spec.to_json()],
        "outputs": [runner.output_spec.to_json()],
        "conversion_seconds": round(seconds, 3),
        "reproducible": exporter.reproducible,
        "check": check,
        **{k: v for k, v in extra.items() if k != "calibration"},
    }
    if exporter.calibrated:
        entry["calibration"] = {**calibration, **extra.get("calibration", {})}
    if get_format(exporter.format).lists_ops:
        entry["ops"] = sorted(set(runner.op_names()))
    for companion in entry.get("companions", []):  # files that belong to the artifact
        companion["path"] = generation.recorded(companion['path'])
    log(f"  {exporter.variant:<15} {schema.model_bytes(entry) / 1e6:7.2f} MB  {seconds:6.1f} s  "
        f"check: {check['agreement']:.1%} agreement on {check['images']} test images")
    return entry




def calibration_record(cfg, inp: Inputs) -> dict:
    """The calibration sample every calibrated variant of this export was made from (its manifest record)."""
    return {
        "count": len(inp.idx),
        "requested": cfg.calibration_samples,
        "source": f"{inp.data.kind} training split ({inp.population:,} images), fixed-seed sample",
        "seed": cfg.calibration_seed,
        "indices_sha256": sha256_bytes(inp.idx.astype(np.int64).tobytes()),
    }
