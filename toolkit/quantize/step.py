"""The weight steps of `toolkit export` (learned rounding, fine-tuning): the user's model transformed once per
export (toolkit/quantize/rounding.py, finetune.py), saved in the generation beside the files made from it, and an
export context whose model is the transformed one, for the int8 variants only. The float variants, every check and
parity's reference stay the user's own model."""

from __future__ import annotations

import numpy as np


def settings_from(cfg):
    """The fine-tuning settings an ExportConfig asks for."""
    from toolkit.quantize.finetune import FineTuneSettings
    from toolkit.ranges import ESTIMATORS

    d = FineTuneSettings()
    return FineTuneSettings(epochs=cfg.fine_tune_epochs or d.epochs, max_images=cfg.fine_tune_images or d.max_images,
                            estimator=cfg.calibration_method if cfg.calibration_method in ESTIMATORS else d.estimator)


def _saved(ctx, model, path, record: dict, generation, workname: str):
    """``model`` saved at ``path`` in the generation (normalized as every Keras archive the toolkit writes), its
    entry in ``record``, and the export context made from it."""
    from toolkit.provenance import sha256_file
    from toolkit.reproducible import source_date_epoch

    model.save(path)
    epoch = source_date_epoch()
    if epoch is not None:
        from toolkit.reproducible import normalize_keras_archive

        normalize_keras_archive(path, epoch)
    record["model"] = {"path": generation.recorded(path.name), "sha256": sha256_file(path),
                       "bytes": path.stat().st_size}
    workdir = ctx.workdir / workname
    workdir.mkdir()
    return ctx.derived(model=model, model_path=path, workdir=workdir)


def _rounding_cannot_help(ctx, val, calibration: np.ndarray, settings) -> dict | None:
    """The learned-rounding record of a grid where the validation images show that even float weights (no weight
    rounding at all) would not make the simulated int8 model agree with the model on more of them beyond noise
    (toolkit/quantize/sources.py): learned rounding, which only chooses how the weights round, could then not pass
    its own judge (the same paired 95% test), so it is not run (benchmarks/INT8_ERROR.md: on EfficientNetB0 and the
    MobileNets the activations cause the error; it ran for minutes there and kept the own weights). Else None (also
    without validation images)."""
    if val is None:
        return None
    from toolkit.quantize.sources import error_sources

    sources = error_sources(ctx.model, val.images, calibration, settings.estimator, settings.levels)
    cost = sources["costs"]["weights"]
    if cost["beyond_noise"]:
        return None
    lo, hi = cost["ci_points"]
    why = (f"not run: with float weights the simulated int8 model would agree with the model on {cost['points']:+.2f} "
           f"points of the {sources['images']:,} validation images (95% CI {lo:+.2f} to {hi:+.2f}), not more beyond "
           "noise, and learned rounding only chooses how the weights round")
    ctx.log(f"  learned rounding onto -{settings.levels}..{settings.levels}: {why}; the int8 variants on this grid use "
            "the model's own weights (`toolkit parity --diagnose` shows what the activations cost)")
    return {"validation": val.description, "skipped": why,
            "error_sources": {k: sources[k] for k in ("images", "estimator", "weight_grid", "rows", "activation_share",
                                                      "weight_share", "costs")},
            "what": "learned weight rounding (AdaRound) and bias correction (toolkit/quantize/rounding.py): " + why +
                    ", so the int8 variants on this grid are made from the model's own weights"}


def rounded_context(cfg, ctx, generation, levels: int):
    """(the export context of the model with learned rounding on a grid of -levels..levels (the exporter's), the
    manifest's record of it): the same ``ctx`` when the rounding did not agree better with the model beyond noise
    on the validation images, or was not run because even float weights would not agree better there beyond noise."""
    import time

    from toolkit.quantize.rounding import RoundingSettings, judge, learn_rounding
    from toolkit.ranges import ESTIMATORS

    d = RoundingSettings()
    settings = RoundingSettings(estimator=cfg.calibration_method if cfg.calibration_method in ESTIMATORS
                                else d.estimator, levels=levels)
    started = time.perf_counter()
    images = ctx.calibration_images.astype(np.float32)
    val = ctx.validation() if ctx.validation is not None else None
    skipped = _rounding_cannot_help(ctx, val, images, settings)
    if skipped is not None:
        skipped["total_seconds"] = round(time.perf_counter() - started, 1)
        return ctx, skipped
    ctx.log(f"  learned rounding (AdaRound, then bias correction) onto int8 weights -{levels}..{levels}, on "
            f"{min(len(images), settings.images):,} calibration images, {settings.iterations:,} steps per layer")
    model, record = learn_rounding(ctx.model, images, settings, log=ctx.log)
    record["validation"] = val.description if val is not None else None
    what = "learned weight rounding (AdaRound) and bias correction (toolkit/quantize/rounding.py)"
    if val is not None:
        record["judged"] = verdict = judge(ctx.model, model, (val.images, val.reference), images, settings.estimator,
                                                   levels)
        lo, hi = verdict["learned_minus_own_ci_points"]
        ctx.log(f"  learned rounding: simulated int8 agrees with the model on {100 * verdict['learned_agreement']:.2f}% "
                f"of {verdict['validation_images']:,} validation images (own weights: "
                f"{100 * verdict['own_agreement']:.2f}%; difference 95% CI {lo:+.2f} "
                f"to {hi:+.2f} points)")
        if verdict["kept"] == "own":
            record.update(what=what + ": not better than the model's own weights beyond noise on the validation "
                                      "images, so the int8 variants on this grid are made from the model's own "
                                      "weights",
                          total_seconds=round(time.perf_counter() - started, 1))
            ctx.log("  learned rounding: not better beyond noise; the int8 variants on this grid use the model's own "
                    "weights")
            return ctx, record
    record.update(what=what + ": the int8 variants are made from these weights (on the exporters' grid); parity's "
                              "reference is the user's model")
    derived = _saved(ctx, model, generation.rounded_model_path(levels), record, generation, f"rounded-w{levels}")
    record["total_seconds"] = round(time.perf_counter() - started, 1)
    return derived, record


def fine_tuned_context(cfg, ctx, data, prep, info, generation, levels: int):
    """(the export context of the model fine-tuned through int8 weights of -levels..levels (the exporter's grid),
    the manifest's record of it); its weights saved in ``generation`` (toolkit.exportdir.Generation)."""
    import time

    from toolkit.datasets import sample_indices
    from toolkit.quantize.finetune import fine_tune
    from toolkit.runners.keras import KerasRunner

    settings = settings_from(cfg)
    started = time.perf_counter()
    population = len(data.train)
    count = min(settings.max_images, population)
    idx = sample_indices(count, population, seed=settings.seed)
    ctx.log(f"  fine-tuning toward the float model (quantization-aware, int8 weights -{levels}..{levels}, "
            f"{settings.epochs} epoch(s) on {count:,} training images; the model's own logits are the targets)")
    images = prep.load(data.train, idx).astype(np.float32)
    runner = KerasRunner(ctx.model)
    val = ctx.validation() if ctx.validation is not None else None
    model, record = fine_tune(ctx.model, images, ctx.calibration_images, settings, runner.infer, log=ctx.log,
                              probabilities=info.output == "probabilities",
                              validation=(val.images, val.reference) if val is not None else None,
                              weight_levels=levels)
    record["validation"] = val.description if val is not None else None
    if record.get("kept_epoch") == 0:  # no epoch improved on the model's own weights: nothing to build from
        record.update(what="quantization-aware fine-tuning toward the float model (toolkit/quantize/finetune.py): "
                           "no epoch made the simulated int8 model agree better with the model on the validation "
                           "images, so the int8 variants on this grid are made from the model's own weights",
                      total_seconds=round(time.perf_counter() - started, 1))
        ctx.log("  fine-tuning: no epoch improved on the model's own weights; the int8 variants on this grid use them")
        return ctx, record
    record.update(
        what="quantization-aware fine-tuning toward the float model (toolkit/quantize/finetune.py): the int8 "
             "variants on this grid are made from these weights; parity's reference is the user's model",
        training_images={"count": count, "source": f"{data.kind} training split ({population:,} images), fixed-seed "
                                                  "sample" if count < population else f"{data.kind} training split"},
    )
    derived = _saved(ctx, model, generation.finetuned_model_path(levels), record, generation, f"finetuned-w{levels}")
    record["total_seconds"] = round(time.perf_counter() - started, 1)
    return derived, record
