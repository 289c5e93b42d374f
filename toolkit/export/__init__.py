"""`toolkit export`: every requested variant, validated, committed atomically with a manifest.

Any Keras image classifier: the model's input shape, class count and output kind are read from
the model (toolkit/modelinfo.py); the dataset (``--dataset``) gives the calibration and check
images, through the one preprocessing recorded in the manifest (toolkit/preprocess.py).

Partial success: before any variant is built, each format's op-support check runs (the
converters are the authority on what their formats take). A variant that cannot be made (an op
with no int8 kernel, an op TFLM lacks, a tf2onnx failure) is listed in the manifest's ``failed``
with its stage and reason; the others are still committed, and the command exits 3.

The package, along its seams: inputs.py (the model, data, calibration sample and export context),
variant.py (one variant built and checked), record.py (the manifest, labels, recipe); this module
orchestrates them inside the export directory's writer lock (toolkit/exportdir.py).
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from datetime import datetime, timezone

from toolkit import artifacts
from toolkit.config import ExportConfig
from toolkit.errors import ConversionError, WriteError
from toolkit.export.inputs import check_flags, context, load_inputs, log
from toolkit.export.record import failure_lines, manifest_record, warning_lines, write_recipe
from toolkit.export.variant import (
    VariantFailed,
    build_variant,
    calibration_record,
    op_support,
    variant_failure,
)
from toolkit.exportdir import Generation
from toolkit.exporters import Exporter
from toolkit.progress import bar as progress_bar

__all__ = ["export", "failure_lines", "warning_lines"]


def export(cfg: ExportConfig, exporters: list[Exporter]) -> dict:
    """Build, validate and commit the artifacts; return the manifest (``failed`` lists the
    variants that could not be made; the caller decides the exit code)."""
    exports = cfg.exports
    with exports.writing(cfg.verbose):  # a second export waits for this one
        check_flags(cfg, exporters)
        artifacts.check_current(exports.root)
        inp = load_inputs(cfg)
        gen_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        staging = artifacts.new_staging_dir(exports.root, gen_id)
        generation = Generation(staging)
        workdir = generation.work_path
        workdir.mkdir()
        ctx = context(cfg, exporters, inp, workdir)
        calibration = calibration_record(cfg, inp)
        from toolkit.control_search import check_budget

        check_budget(ctx)  # a budget the validation images cannot resolve: refused before any conversion
        committed = False
        stack = contextlib.ExitStack()
        try:
            log(cfg, f"exporting {len(exporters)} variant(s) of {inp.model_path} ({inp.info.layout} "
                      f"{inp.info.input_shape}, {inp.info.classes} classes, {inp.info.output}) into {exports}/")
            log(cfg, f"  data {inp.data.kind} {inp.data.source}; preprocessing: {inp.prep.describe()}")
            try:
                support_by_format = op_support(ctx, exporters, lambda line: log(cfg, line))
            except Exception as exc:
                failed_write = artifacts.as_write_error(workdir, exc)
                if failed_write:
                    raise failed_write from None
                raise
            bar = stack.enter_context(progress_bar(len(exporters), "export", unit="variant", verbose=cfg.verbose))
            entries, failed, made = _variants(cfg, exporters, ctx, inp, generation, calibration,
                                              support_by_format, bar)
            if not entries:
                raise ConversionError(
                    "no variant could be exported: " + "; ".join(f"{f['variant']}: {f['reason']}" for f in failed),
                    hint="the previous export, if any, is unchanged")
            shutil.rmtree(workdir)
            manifest = manifest_record(cfg, exporters, inp, entries, failed, support_by_format, generation)
            if made:
                from toolkit.export.ladder import ROUNDED_WEIGHTS, TUNED_WEIGHTS, grid_name, step_record

                ladder = cfg.max_accuracy_drop is not None
                for (step, levels), (_, record) in made.items():
                    # one record per weight grid (the formats' grids differ: onnxruntime's is 7-bit)
                    grid = grid_name(levels)
                    weights = (TUNED_WEIGHTS if step == "fine_tuning" else ROUNDED_WEIGHTS).format(grid=grid)
                    manifest.setdefault(step, {})[grid] = step_record(record, entries, ladder, weights)
            recipes = {e["variant"]: e["accuracy_control"] for e in entries if e.get("accuracy_control")}
            if recipes:
                manifest["accuracy_control"] = {"recipe": exports.recipe_path.name,
                                                "validation": ctx.validation().description}
            artifacts.commit_generation(exports.root, staging, gen_id, manifest)
            committed = True
            if recipes:
                write_recipe(cfg, manifest, recipes)
        except OSError as exc:
            raise WriteError(f"export into {exports} failed: {exc}") from None
        finally:
            stack.close()
            if not committed:
                shutil.rmtree(staging, ignore_errors=True)
        artifacts.remove_stale(exports.root, keep={f"{artifacts.GENERATION_PREFIX}{gen_id}"})
        return manifest


def _steps(cfg: ExportConfig, exporter: Exporter, ctx, inp, generation: Generation, made: dict) -> list:
    """The weight steps the flags ask for (toolkit/export/ladder.py's rungs) for an int8 ``exporter``, each made
    once per export and weight grid on first use and kept in ``made`` ((step, levels) -> (context, record))."""
    from toolkit.export import ladder

    def once(key, make):
        def context():
            if key not in made:
                made[key] = make()
            return made[key][0]
        return context

    steps = []
    levels = exporter.weight_levels
    if cfg.learned_rounding:
        from toolkit.quantize.step import rounded_context

        steps.append(ladder.Rung(
            ladder.ROUNDING, once(("learned_rounding", levels), lambda: rounded_context(cfg, ctx, generation, levels)),
            ladder.ROUNDED_WEIGHTS.format(grid=ladder.grid_name(levels)),
            lambda: "learned rounding " + made[("learned_rounding", levels)][1].get(
                "skipped", "was not better than the model's own weights beyond noise") + ": the file before it stands"))
    if cfg.fine_tune:
        from toolkit.quantize.step import fine_tuned_context

        steps.append(ladder.Rung(ladder.SECOND, once(("fine_tuning", levels), lambda: fine_tuned_context(
            cfg, ctx, inp.data, inp.prep, inp.info, generation, levels)),
            ladder.TUNED_WEIGHTS.format(grid=ladder.grid_name(levels)), "fine-tuning kept the model's own weights (no "
            "epoch agreed better beyond noise): the file before it stands"))
    return steps


def _variants(cfg: ExportConfig, exporters: list[Exporter], ctx, inp, generation: Generation, calibration: dict,
              support_by_format: dict, bar) -> tuple[list, list, dict]:
    """Every variant built into the generation: (manifest entries, failure records, {manifest key: (the context,
    the record)} of the weight steps --learned-rounding and --fine-tune made for the int8 variants)."""
    entries, failed, made = [], [], {}
    for exporter in exporters:
        bar.update(1)
        bar.set_postfix_str(exporter.variant)
        support = support_by_format[exporter.format]
        if not support["supported"]:
            failed.append(variant_failure(exporter, "op-check", support["error"]))
            continue
        stepped = _steps(cfg, exporter, ctx, inp, generation, made) if exporter.quantization == "int8" else []

        def build(context, exporter=exporter):
            return build_variant(exporter, context, inp, generation, calibration, lambda line: log(cfg, line))

        try:
            if stepped and cfg.max_accuracy_drop is not None:  # the ladder: a weight step only where the search fails
                from toolkit.export.ladder import climb

                entry = climb(build, ctx, stepped, generation, lambda line: log(cfg, line))
            elif stepped:  # without a budget, the one step asked for (config refuses two)
                use = stepped[0].context()
                entry = build(use)
                if use is not ctx:
                    entry["weights"] = stepped[0].weights
            else:
                entry = build(ctx)
        except VariantFailed as exc:
            failed.append(exc.record)
            continue
        if cfg.npu:
            _npu_rows(cfg, exporter, entry, generation)
        entries.append(entry)
    return entries, failed, made


def _npu_rows(cfg: ExportConfig, exporter: Exporter, entry: dict, generation: Generation) -> None:
    """``entry["npu"]``: what each --npu configuration's compiler makes of this file (Vela's estimates)."""
    from pathlib import Path

    from toolkit.artifacts import atomic_write_bytes
    from toolkit.targets import manifest_rows

    source = Path(entry["path"]).name
    rows = manifest_rows(cfg.npu, exporter.format, exporter.quantization, generation.file(source))
    if rows is not None:
        for r in rows:  # the compiled file beside its source, checked by verify like the artifact itself
            name = f"{Path(source).stem}.{r['target']}.vela{Path(source).suffix}"
            content = r.pop("compiled_content")
            atomic_write_bytes(generation.file(name), content)
            entry.setdefault("companions", []).append({
                "path": generation.recorded(name), "bytes": len(content), "sha256": r["compiled_sha256"],
                "role": "npu-compiled", "target": r["target"],
                "what": f"{entry['variant']}'s bytes compiled by Vela for {r['target']}: it runs only with the Ethos-U "
                        "driver (its NPU part is a command stream)"})
        entry["npu"] = rows
        for r in rows:
            log(cfg, f"  {exporter.variant:<15} {r['target']}: {r['operators']['npu']} of {r['operators']['total']} "
                     f"operators on the NPU, SRAM {r['sram_kib']:.1f} KiB, estimated {r['inference_ms']:.3f} ms "
                     "(Vela's estimate)")
