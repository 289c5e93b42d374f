"""`toolkit export`: every requested variant, validated, committed atomically with a manifest."""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from toolkit import artifacts
from toolkit.config import ExportConfig
from toolkit.data import calibration_indices, load_mnist
from toolkit.errors import DataError, UsageError, WriteError
from toolkit.exporters import ExportContext, Exporter
from toolkit.provenance import provenance, sha256_bytes, sha256_file
from toolkit.runners import runner_for
from toolkit.runners.keras import KerasRunner, load_keras_model
from toolkit.train import MODEL_FILE, RECORD_FILE

# A fresh export must agree with Keras on at least this share of the check batch, or it is
# broken beyond what parity's statistics are for (full parity is `toolkit parity`).
GROSS_MIN_AGREEMENT = 0.95


def _relative_or_absolute(path: Path, root: Path) -> str:
    path, root = Path(path).resolve(), Path(root).resolve()
    return str(path.relative_to(root)) if root in path.parents else str(path)


def _log(cfg: ExportConfig, message: str) -> None:
    if cfg.verbose:
        print(message, file=sys.stderr, flush=True)


def _check_against_reference(exporter: Exporter, path: Path, images: np.ndarray, ref: np.ndarray):
    runner = runner_for(exporter.format, path)
    logits = runner.infer(images)
    if logits.shape != ref.shape or not np.isfinite(logits).all():
        raise DataError(f"{exporter.variant}: output {logits.shape} is not finite logits of shape {ref.shape}")
    agreement = float((logits.argmax(1) == ref.argmax(1)).mean())
    check = {
        "images": int(len(images)),
        "agreement": agreement,
        "max_abs_logit_diff": float(np.abs(logits - ref).max()),
    }
    if agreement < GROSS_MIN_AGREEMENT:
        raise DataError(
            f"{exporter.variant}: agrees with Keras on only {agreement:.1%} of {len(images)} test images "
            f"(< {GROSS_MIN_AGREEMENT:.0%}): the conversion is broken"
        )
    return runner, check


def export(cfg: ExportConfig, exporters: list[Exporter]) -> dict:
    """Build, validate and commit the artifacts; return the manifest."""
    exports = Path(cfg.exports)
    manifest_path = exports / artifacts.MANIFEST
    if manifest_path.exists() and not cfg.force:
        raise UsageError(
            f"{manifest_path} already exists; refusing to overwrite it",
            hint="pass --force to replace the export, or --exports DIR for a new one",
        )
    if cfg.calibration_samples < 1 or cfg.calibration_samples > 55_000:
        raise UsageError(f"--calibration-samples must be in 1..55000, got {cfg.calibration_samples}")
    if cfg.opset < 17:
        raise UsageError(f"--opset must be 17 or newer, got {cfg.opset}")
    model_path = Path(cfg.model) if cfg.model else exports / MODEL_FILE
    model = load_keras_model(model_path)
    data = load_mnist(cfg.data_dir)
    idx = calibration_indices(cfg.calibration_samples, seed=cfg.calibration_seed, population=len(data.train))
    calibration = data.train.images[idx]
    if not np.isfinite(calibration).all():
        raise DataError("calibration images contain NaN or Inf values", hint=f"check the MNIST files in {data.source}")
    check_images = data.test.images[: cfg.check_samples]
    reference = KerasRunner(model).infer(check_images)

    gen_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    staging = artifacts.new_staging_dir(exports, gen_id)
    workdir = staging / ".work"
    workdir.mkdir()
    ctx = ExportContext(
        model=model, model_path=model_path, workdir=workdir, calibration_images=calibration,
        calibration_method=cfg.calibration_method, opset=cfg.opset,
    )
    entries = []
    committed = False
    try:
        _log(cfg, f"exporting {len(exporters)} variant(s) of {model_path} into {exports}/")
        for exporter in exporters:
            filename = f"{exporter.variant}{exporter.suffix}"
            path = staging / filename
            start = time.perf_counter()
            try:
                extra = exporter.build(ctx, path)
            except Exception as exc:
                failed_write = artifacts.as_write_error(path, exc)
                if failed_write:
                    raise failed_write from None
                raise
            seconds = time.perf_counter() - start
            runner, check = _check_against_reference(exporter, path, check_images, reference)
            entry = {
                "variant": exporter.variant,
                "format": exporter.format,
                "quantization": exporter.quantization,
                "path": f"{artifacts.GENERATION_PREFIX}{gen_id}/{filename}",
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
                "inputs": [runner.input_spec.to_json()],
                "outputs": [runner.output_spec.to_json()],
                "conversion_seconds": round(seconds, 3),
                "check": check,
                **{k: v for k, v in extra.items() if k != "calibration"},
            }
            if exporter.calibrated:
                entry["calibration"] = {
                    "count": len(idx),
                    "source": "training split (55,000 images), fixed-seed sample",
                    "seed": cfg.calibration_seed,
                    "indices_sha256": sha256_bytes(idx.astype(np.int64).tobytes()),
                    **extra.get("calibration", {}),
                }
            if exporter.format in ("tflite", "tflite-micro"):
                entry["ops"] = sorted(set(runner.op_names()))
            for companion in entry.get("companions", []):  # files that belong to the artifact
                companion["path"] = f"{artifacts.GENERATION_PREFIX}{gen_id}/{companion['path']}"
            entries.append(entry)
            _log(
                cfg,
                f"  {exporter.variant:<15} {entry['bytes'] / 1e6:7.2f} MB  {seconds:6.1f} s  "
                f"check: {check['agreement']:.1%} agreement on {check['images']} test images",
            )
        shutil.rmtree(workdir)
        train_record = model_path.parent / RECORD_FILE
        manifest = {
            "schema_version": artifacts.SCHEMA_VERSION,
            "generation": gen_id,
            "source_model": {
                # relative to the export directory when inside it, so the directory can move
                "path": _relative_or_absolute(model_path, exports),
                "sha256": sha256_file(model_path),
                "parameters": int(model.count_params()),
                "train_record_sha256": sha256_file(train_record) if train_record.is_file() else None,
            },
            "data": {"source": data.source},
            "artifacts": entries,
            "provenance": provenance(),
        }
        artifacts.commit_generation(exports, staging, gen_id, manifest)
        committed = True
    except OSError as exc:
        raise WriteError(f"export into {exports} failed: {exc}") from None
    finally:
        if not committed:
            shutil.rmtree(staging, ignore_errors=True)
    artifacts.remove_stale(exports, keep={f"{artifacts.GENERATION_PREFIX}{gen_id}"})
    return manifest
