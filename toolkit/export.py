"""`toolkit export`: every requested variant, validated, committed atomically with a manifest.

Any Keras image classifier: the model's input shape, class count and output kind are read from
the model (toolkit/modelinfo.py); the dataset (``--dataset``) gives the calibration and check
images, through the one preprocessing recorded in the manifest (toolkit/preprocess.py).

Partial success: before any variant is built, each format's op-support check runs (the
converters are the authority on what their formats take). A variant that cannot be made (an op
with no int8 kernel, an op TFLM lacks, a tf2onnx failure) is listed in the manifest's ``failed``
with its stage and reason; the others are still committed, and the command exits 3.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from toolkit import artifacts, schema
from toolkit.accuracy_control import RECIPE_FILE, RECIPE_SCHEMA
from toolkit.config import ExportConfig, PreprocessOptions
from toolkit.datasets import open_dataset, recorded_options, reopen, sample_indices
from toolkit.datasets.base import validation_note
from toolkit.errors import (
    ConversionError,
    DataError,
    DeviceUnavailableError,
    UsageError,
    WriteError,
    first_line,
)
from toolkit.exporters import OP_CHECKS, ExportContext, Exporter, get_format, require_controllable
from toolkit.modelinfo import confirm_output, inspect_model
from toolkit.preprocess import resolve
from toolkit.progress import bar as progress_bar
from toolkit.progress import say
from toolkit.provenance import provenance, sha256_bytes, sha256_file
from toolkit.runners import runner_for
from toolkit.runners.keras import KerasRunner, load_keras_model
from toolkit.train import MODEL_FILE, RECORD_FILE

# A fresh export must agree with Keras on at least this share of the check batch, or it is
# broken beyond what parity's statistics are for (full parity is `toolkit parity`).
GROSS_MIN_AGREEMENT = 0.95
# An int8 variant below GROSS_MIN_AGREEMENT is a quantization-quality outcome, not a broken file: it is
# committed with a warning (parity gives the verdict; --max-accuracy-drop can repair it) unless it is
# this far off, where its predictions are no longer the model's (wrong scales or layout, or at chance).
INT8_BROKEN_AGREEMENT = 0.5


def _relative_or_absolute(path: Path, root: Path) -> str:
    path, root = Path(path).resolve(), Path(root).resolve()
    return str(path.relative_to(root)) if root in path.parents else str(path)


def _log(cfg: ExportConfig, message: str) -> None:
    say(message, cfg.verbose)


def _check_against_reference(exporter: Exporter, path: Path, images: np.ndarray, ref: np.ndarray):
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
        check["warning"] = (f"agrees with Keras on only {agreement:.1%} of {len(images)} test images: int8 loses "
                            "much of this model; `toolkit parity` gives the verdict, --max-accuracy-drop PTS searches "
                            "for a model that keeps it, `toolkit parity --diagnose` names the layers")
    elif agreement < GROSS_MIN_AGREEMENT:
        raise DataError(
            f"{exporter.variant}: agrees with Keras on only {agreement:.1%} of {len(images)} test images "
            f"(< {GROSS_MIN_AGREEMENT:.0%}): the conversion is broken"
        )
    return runner, check


def _train_record(model_path: Path) -> dict | None:
    path = Path(model_path).parent / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = artifacts.read_json(path)
    except DataError:
        return None
    # only a record of this very model speaks for it
    return record if record.get("model", {}).get("sha256") == sha256_file(model_path) else None


LABELS_FILE = schema.LABELS


def _write_labels(staging: Path, gen_id: str, data, info) -> dict:
    """labels.txt beside the artifacts: the class name of each output, in output order (one per line;
    outputs beyond the dataset's classes are named by their index), what an app on the device reads."""
    names = list(data.class_names) + [str(k) for k in range(len(data.class_names), info.classes)]
    path = staging / LABELS_FILE
    artifacts.atomic_write_text(path, "".join(f"{n}\n" for n in names[: info.classes]))
    return {"path": f"{artifacts.GENERATION_PREFIX}{gen_id}/{LABELS_FILE}", "sha256": sha256_file(path),
            "bytes": path.stat().st_size, "classes": info.classes}


def fixed_size(model, input_shape: tuple):
    """The model with its dynamic height and width fixed (``--input-size``): a new input of that shape
    calling the same layers (the same weights, nothing copied). Every format then gets one size
    (LiteRT's XNNPack, for one, cannot reshape a dynamic-size convolution at run time)."""
    from toolkit._quiet import keras

    k = keras()
    image = k.Input(shape=tuple(input_shape), name=model.inputs[0].name.split(":")[0] or "image")
    return k.Model(image, model(image), name=model.name)


def _dataset_and_preprocessing(cfg: ExportConfig, model, model_path: Path):
    """The dataset and preprocessing for this model: as given, else as it was trained with."""
    record = _train_record(model_path)
    if cfg.dataset is not None:
        dataset = open_dataset(cfg.dataset, data_dir=cfg.data_dir, **dict(cfg.dataset_options))
    elif record and record.get("dataset"):
        dataset = reopen(record["dataset"], data_dir=cfg.data_dir)
    else:
        dataset = open_dataset(None, data_dir=cfg.data_dir)
    options = cfg.preprocess
    if not options.given and record and record.get("preprocessing"):
        trained = record["preprocessing"]  # what the model was trained on, unless flags say otherwise
        options = PreprocessOptions(scale=trained["scale"], color_mode=trained["color_mode"],
                                    mean=tuple(trained["mean"]) if trained.get("mean") else None,
                                    std=tuple(trained["std"]) if trained.get("std") else None)
    info = inspect_model(model, model_path)
    return dataset, resolve(dataset, info, options), info


def _failure(exporter: Exporter, stage: str, exc: BaseException) -> dict:
    failure = {"variant": exporter.variant, "format": exporter.format, "stage": stage, "reason": first_line(exc, None)}
    if isinstance(exc, ConversionError):
        failure["unsupported_ops"] = exc.ops
    detail = getattr(exc, "detail", None)
    if detail:
        failure["detail"] = detail
    return failure


def _op_support(ctx: ExportContext, exporters: list[Exporter], cfg: ExportConfig) -> dict:
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
        _log(cfg, f"  ops  {fmt:<13} {verdict}")
    return results


@dataclass
class _Inputs:
    """What every variant of one export is made from and checked against."""

    model: object  # keras.Model (its height and width fixed when the model takes any)
    model_path: Path
    data: object  # toolkit.datasets.Dataset
    prep: object  # toolkit.preprocess.Preprocessing
    info: object  # toolkit.modelinfo.ModelInfo
    idx: np.ndarray  # the calibration sample's indices in the training split
    population: int  # training images the sample was drawn from
    calibration: np.ndarray
    check_images: np.ndarray
    reference: np.ndarray  # Keras' scores on the check images


def _check_flags(cfg: ExportConfig, manifest_path: Path) -> None:
    if manifest_path.exists() and not cfg.force:
        raise UsageError(
            f"{manifest_path} already exists; refusing to overwrite it",
            hint="pass --force to replace the export, or --exports DIR for a new one",
        )
    if cfg.calibration_samples < 1:
        raise UsageError(f"--calibration-samples must be at least 1, got {cfg.calibration_samples}")
    if cfg.opset < 17:
        raise UsageError(f"--opset must be 17 or newer, got {cfg.opset}")


def _inputs(cfg: ExportConfig, exports: Path) -> _Inputs:
    """The model, its data and preprocessing, the calibration sample and Keras' scores on the check images."""
    model_path = Path(cfg.model) if cfg.model else exports / MODEL_FILE
    model = load_keras_model(model_path)
    data, prep, info = _dataset_and_preprocessing(cfg, model, model_path)
    if info.image_size is not None and None in info.image_size:
        model = fixed_size(model, prep.input_shape)
        info = replace(info, input_shape=tuple(prep.input_shape), fixed_at_export="--input-size "
                       f"{prep.image_size[0]}x{prep.image_size[1]} (the model takes any height and width)")
    population = len(data.train)
    count = min(cfg.calibration_samples, population)
    idx = sample_indices(count, population, seed=cfg.calibration_seed)
    calibration = prep.load(data.train, idx)
    if not np.isfinite(calibration).all():
        raise DataError("calibration images contain NaN or Inf values", hint=f"check the data in {data.source}")
    check_images = prep.load(data.test, np.arange(min(cfg.check_samples, len(data.test))))
    reference = KerasRunner(model).infer(check_images)
    info = confirm_output(info, reference)
    return _Inputs(model, model_path, data, prep, info, idx, population, calibration, check_images, reference)


def _build_variant(cfg: ExportConfig, exporter: Exporter, ctx: ExportContext, inp: _Inputs, staging: Path,
                   gen_id: str, failed: list) -> dict | None:
    """One variant built, checked against Keras and described; None (its failure appended) when it cannot be."""
    filename = f"{exporter.variant}{exporter.suffix}"
    path = staging / filename
    start = time.perf_counter()
    try:
        extra = exporter.build(ctx, path)
    except Exception as exc:
        failed_write = artifacts.as_write_error(path, exc)
        if failed_write:
            raise failed_write from None
        if isinstance(exc, (WriteError, UsageError, DeviceUnavailableError)):
            raise  # a flag that cannot work, a missing tool: not this variant's failure
        failed.append(_failure(exporter, "convert", exc))
        _log(cfg, f"  {exporter.variant:<15} FAILED to convert: {first_line(exc)}")
        return None
    # the conversions the op checks already ran count for the first variant that uses them
    seconds = time.perf_counter() - start + extra.pop("shared_seconds", 0.0)
    try:
        runner, check = _check_against_reference(exporter, path, inp.check_images, inp.reference)
    except DataError as exc:
        failed.append(_failure(exporter, "check", exc))
        _log(cfg, f"  {exporter.variant:<15} FAILED its check: {first_line(exc)}")
        path.unlink(missing_ok=True)
        return None
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
        "reproducible": exporter.reproducible,
        "check": check,
        **{k: v for k, v in extra.items() if k != "calibration"},
    }
    if exporter.calibrated:
        entry["calibration"] = {
            "count": len(inp.idx),
            "requested": cfg.calibration_samples,
            "source": f"{inp.data.kind} training split ({inp.population:,} images), fixed-seed sample",
            "seed": cfg.calibration_seed,
            "indices_sha256": sha256_bytes(inp.idx.astype(np.int64).tobytes()),
            **extra.get("calibration", {}),
        }
    if get_format(exporter.format).lists_ops:
        entry["ops"] = sorted(set(runner.op_names()))
    for companion in entry.get("companions", []):  # files that belong to the artifact
        companion["path"] = f"{artifacts.GENERATION_PREFIX}{gen_id}/{companion['path']}"
    _log(cfg, f"  {exporter.variant:<15} {schema.model_bytes(entry) / 1e6:7.2f} MB  {seconds:6.1f} s  "
              f"check: {check['agreement']:.1%} agreement on {check['images']} test images")
    return entry


def _manifest(cfg: ExportConfig, exporters: list[Exporter], inp: _Inputs, exports: Path, gen_id: str,
              entries: list, failed: list, op_support: dict, staging: Path) -> dict:
    model_path, data, prep = inp.model_path, inp.data, inp.prep
    train_record = model_path.parent / RECORD_FILE
    return {
        "schema_version": schema.VERSIONS[schema.MANIFEST],
        "generation": gen_id,
        "source_model": {
            # relative to the export directory when inside it, so the directory can move
            "path": _relative_or_absolute(model_path, exports),
            "sha256": sha256_file(model_path),
            "parameters": int(inp.model.count_params()),
            "train_record_sha256": sha256_file(train_record) if train_record.is_file() else None,
        },
        "model": inp.info.to_json(),
        "data": {"source": data.source},
        "dataset": data.describe(),
        # where the int8 choices (range estimator, accuracy search, fine-tuning) were judged
        "validation": {"images": len(data.validation), "named": data.validation_named,
                       **({"note": validation_note(data)} if validation_note(data) else {})},
        "preprocessing": prep.to_json(),
        "op_support": {fmt: {k: v for k, v in r.items() if k != "error"} for fmt, r in op_support.items()},
        # what `toolkit verify --rebuild` needs to make the same export again
        "export_config": {
            "variants": [e.variant for e in exporters],
            "calibration_samples": cfg.calibration_samples,
            "calibration_seed": cfg.calibration_seed,
            "calibration_method": cfg.calibration_method,
            "opset": cfg.opset,
            "check_samples": cfg.check_samples,
            "max_accuracy_drop": cfg.max_accuracy_drop,
            "max_fallback_layers": cfg.max_fallback_layers,
            "min_agreement": cfg.min_agreement,
            "recipe": str(Path(cfg.recipe).resolve()) if cfg.recipe else None,
            "fine_tune": cfg.fine_tune, "fine_tune_epochs": cfg.fine_tune_epochs,
            "fine_tune_images": cfg.fine_tune_images,
            "dataset": data.spec,
            **recorded_options(data.options),
            "preprocess": {"scale": prep.scale, "color_mode": prep.color_mode, "resize": prep.resize,
                           "mean": list(prep.mean) if prep.mean else None,
                           "std": list(prep.std) if prep.std else None,
                           "input_size": list(cfg.preprocess.input_size) if cfg.preprocess.input_size
                           else None},
        },
        "artifacts": entries,
        "labels": _write_labels(staging, gen_id, data, inp.info),
        "failed": failed,
        "provenance": provenance(),
    }


def _write_recipe(cfg: ExportConfig, exports: Path, manifest: dict, recipes: dict) -> None:
    artifacts.atomic_write_json(exports / RECIPE_FILE, {
        "schema": RECIPE_SCHEMA,
        "generation": manifest["generation"],
        "source_model": manifest["source_model"],
        "calibration": {"samples": cfg.calibration_samples, "seed": cfg.calibration_seed,
                        "method": cfg.calibration_method},
        "variants": recipes,
        "provenance": manifest["provenance"],
    })


def _context(cfg: ExportConfig, exporters: list[Exporter], inp: _Inputs, workdir: Path) -> ExportContext:
    ctx = ExportContext(
        model=inp.model, model_path=inp.model_path, workdir=workdir, calibration_images=inp.calibration,
        calibration_method=cfg.calibration_method, opset=cfg.opset,
    )
    control = _control_settings(cfg, exporters)
    # the validation split (loaded on first use): the int8 range estimator and accuracy control choose on it
    ctx.log = lambda message: _log(cfg, message)
    ctx.validation = _validation_loader(inp.data, inp.prep, inp.model, ctx.log)
    if control is not None:
        ctx.control = control
    return ctx


def export(cfg: ExportConfig, exporters: list[Exporter]) -> dict:
    """Build, validate and commit the artifacts; return the manifest (``failed`` lists the
    variants that could not be made; the caller decides the exit code)."""
    exports = Path(cfg.exports)
    with artifacts.writing(exports, cfg.verbose):  # a second export waits for this one
        _check_flags(cfg, exports / artifacts.MANIFEST)
        artifacts.check_current(exports)
        inp = _inputs(cfg, exports)
        gen_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        staging = artifacts.new_staging_dir(exports, gen_id)
        workdir = staging / ".work"
        workdir.mkdir()
        ctx = _context(cfg, exporters, inp, workdir)
        from toolkit.control_search import check_budget

        check_budget(ctx)  # a budget the validation images cannot resolve: refused before any conversion
        entries, failed = [], []
        committed = False
        stack = contextlib.ExitStack()
        try:
            _log(cfg, f"exporting {len(exporters)} variant(s) of {inp.model_path} ({inp.info.layout} "
                      f"{inp.info.input_shape}, {inp.info.classes} classes, {inp.info.output}) into {exports}/")
            _log(cfg, f"  data {inp.data.kind} {inp.data.source}; preprocessing: {inp.prep.describe()}")
            try:
                op_support = _op_support(ctx, exporters, cfg)
            except Exception as exc:
                failed_write = artifacts.as_write_error(workdir, exc)
                if failed_write:
                    raise failed_write from None
                raise
            tuned: list = []  # (context, record) of the fine-tuned model, made for the first int8 variant
            bar = stack.enter_context(progress_bar(len(exporters), "export", unit="variant", verbose=cfg.verbose))
            for exporter in exporters:
                bar.update(1)
                bar.set_postfix_str(exporter.variant)
                support = op_support[exporter.format]
                if not support["supported"]:
                    failed.append(_failure(exporter, "op-check", support["error"]))
                    continue
                use = ctx
                if cfg.fine_tune and exporter.quantization == "int8":
                    if not tuned:
                        from toolkit.quantize.step import fine_tuned_context

                        tuned.append(fine_tuned_context(cfg, ctx, inp.data, inp.prep, inp.info, staging,
                                                        f"{artifacts.GENERATION_PREFIX}{gen_id}"))
                    use = tuned[0][0]
                entry = _build_variant(cfg, exporter, use, inp, staging, gen_id, failed)
                if entry is not None and use is not ctx:
                    entry["weights"] = "fine-tuned toward the model (manifest: fine_tuning)"
                if entry is not None:
                    entries.append(entry)
            if not entries:
                raise ConversionError(
                    "no variant could be exported: " + "; ".join(f"{f['variant']}: {f['reason']}" for f in failed),
                    hint="the previous export, if any, is unchanged")
            shutil.rmtree(workdir)
            manifest = _manifest(cfg, exporters, inp, exports, gen_id, entries, failed, op_support, staging)
            if tuned:
                manifest["fine_tuning"] = tuned[0][1]
            recipes = {e["variant"]: e["accuracy_control"] for e in entries if e.get("accuracy_control")}
            if recipes:
                manifest["accuracy_control"] = {"recipe": RECIPE_FILE, "validation": ctx.validation().description}
            artifacts.commit_generation(exports, staging, gen_id, manifest)
            committed = True
            if recipes:
                _write_recipe(cfg, exports, manifest, recipes)
        except OSError as exc:
            raise WriteError(f"export into {exports} failed: {exc}") from None
        finally:
            stack.close()
            if not committed:
                shutil.rmtree(staging, ignore_errors=True)
        artifacts.remove_stale(exports, keep={f"{artifacts.GENERATION_PREFIX}{gen_id}"})
        return manifest


def _control_settings(cfg: ExportConfig, exporters: list[Exporter]):
    """Accuracy-control settings from the flags, or None when neither flag is given."""
    if cfg.max_accuracy_drop is None and cfg.recipe is None:
        return None
    from toolkit.accuracy_control import ControlSettings, read_recipe

    if cfg.max_accuracy_drop is not None and cfg.recipe is not None:
        raise UsageError("--max-accuracy-drop searches, --recipe replays a search: give one of them")
    if cfg.max_accuracy_drop is not None and not cfg.max_accuracy_drop > 0:
        raise UsageError(f"--max-accuracy-drop must be a positive number of points, got {cfg.max_accuracy_drop}")
    if cfg.max_fallback_layers < 1:
        raise UsageError(f"--max-fallback-layers must be at least 1, got {cfg.max_fallback_layers}")
    require_controllable(exporters)
    if cfg.min_agreement is not None and not 0 < cfg.min_agreement <= 100:
        raise UsageError(f"--min-agreement must be a percentage in (0, 100], got {cfg.min_agreement}")
    return ControlSettings(max_drop=cfg.max_accuracy_drop, max_layers=cfg.max_fallback_layers,
                           recipe=read_recipe(cfg.recipe) if cfg.recipe is not None else None,
                           min_agreement=cfg.min_agreement)


def _validation_loader(data, prep, model, log=None):
    """() -> the validation split, preprocessed, with the Keras model's predictions (loaded once)."""
    from toolkit.accuracy_control import Validation

    cache: list = []

    def load() -> Validation:
        if not cache:
            split = data.validation
            if len(split) == 0:
                raise DataError(f"{data.source} has no validation images: accuracy control measures on them")
            images = prep.load(split)
            reference = KerasRunner(model).infer_batched(images, 500).argmax(1)
            unseen = "" if data.validation_named else ", a share of the training images: the model may have seen them"
            cache.append(Validation(images, np.asarray(split.labels), reference,
                                    f"{data.kind} validation split ({len(split):,} images{unseen})"))
            if log is not None and validation_note(data):
                log(f"  note: {validation_note(data)}")
        return cache[0]

    return load


def warning_lines(manifest: dict) -> list[str]:
    """One line per committed variant whose check agreement is low (int8 that loses much of the model)."""
    return [f"WARNING {e['variant']}: {e['check']['warning']}" for e in manifest["artifacts"]
            if e.get("check", {}).get("warning")]


def failure_lines(manifest: dict) -> list[str]:
    """One line per variant that could not be exported (for summaries)."""
    return [f"{f['variant']}: not exported ({f['stage']}): {f['reason']}" for f in manifest.get("failed", [])]
