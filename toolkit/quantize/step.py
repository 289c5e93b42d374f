"""Fine-tuning as a step of `toolkit export`: the user's model fine-tuned once per export (toolkit/quantize/
finetune.py), saved in the generation beside the files made from it, and an export context whose model is
the fine-tuned one, for the int8 variants only. The float variants, every check and parity's reference stay
the user's own model."""

from __future__ import annotations

import numpy as np


def settings_from(cfg):
    """The fine-tuning settings an ExportConfig asks for."""
    from toolkit.quantize.finetune import FineTuneSettings
    from toolkit.ranges import ESTIMATORS

    d = FineTuneSettings()
    return FineTuneSettings(epochs=cfg.fine_tune_epochs or d.epochs, max_images=cfg.fine_tune_images or d.max_images,
                            estimator=cfg.calibration_method if cfg.calibration_method in ESTIMATORS else d.estimator)


def fine_tuned_context(cfg, ctx, data, prep, info, generation):
    """(the export context of the fine-tuned model, the manifest's ``fine_tuning`` record); its weights saved in
    ``generation`` (toolkit.exportdir.Generation)."""
    import time

    from toolkit.datasets import sample_indices
    from toolkit.provenance import sha256_file
    from toolkit.quantize.finetune import fine_tune
    from toolkit.reproducible import source_date_epoch
    from toolkit.runners.keras import KerasRunner

    settings = settings_from(cfg)
    started = time.perf_counter()
    population = len(data.train)
    count = min(settings.max_images, population)
    idx = sample_indices(count, population, seed=settings.seed)
    ctx.log(f"  fine-tuning toward the float model (quantization-aware, {settings.epochs} epoch(s) on {count:,} "
            f"training images; the model's own logits are the targets)")
    images = prep.load(data.train, idx).astype(np.float32)
    runner = KerasRunner(ctx.model)
    val = ctx.validation() if ctx.validation is not None else None
    model, record = fine_tune(ctx.model, images, ctx.calibration_images, settings, runner.infer, log=ctx.log,
                              probabilities=info.output == "probabilities",
                              validation=(val.images, val.reference) if val is not None else None)
    record["validation"] = val.description if val is not None else None
    if record.get("kept_epoch") == 0:  # no epoch improved on the model's own weights: nothing to build from
        record.update(what="quantization-aware fine-tuning toward the float model (toolkit/quantize/finetune.py): "
                           "no epoch made the simulated int8 model agree better with the model on the validation "
                           "images, so the int8 variants are made from the model's own weights",
                      total_seconds=round(time.perf_counter() - started, 1))
        ctx.log("  fine-tuning: no epoch improved on the model's own weights; the int8 variants use them")
        return ctx, record
    path = generation.finetuned_model_path
    model.save(path)
    epoch = source_date_epoch()
    if epoch is not None:
        from toolkit.reproducible import normalize_keras_archive

        normalize_keras_archive(path, epoch)
    record.update(
        what="quantization-aware fine-tuning toward the float model (toolkit/quantize/finetune.py): the int8 "
             "variants are made from these weights; parity's reference is the user's model",
        model={"path": generation.recorded(path.name), "sha256": sha256_file(path), "bytes": path.stat().st_size},
        training_images={"count": count, "source": f"{data.kind} training split ({population:,} images), fixed-seed "
                                                  "sample" if count < population else f"{data.kind} training split"},
        total_seconds=round(time.perf_counter() - started, 1),
        variants="the int8 variants (tflite-int8, tflite-micro, onnx-int8)",
    )
    workdir = ctx.workdir / "finetuned"
    workdir.mkdir()
    return ctx.derived(model=model, model_path=path, workdir=workdir), record
