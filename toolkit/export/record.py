"""The records an export writes: its manifest (the table of contents, committed last), labels.txt beside the
artifacts, the accuracy search's recipe, and the summary lines the commands print from a manifest."""

from __future__ import annotations

from pathlib import Path

from toolkit import artifacts, schema
from toolkit.accuracy_control import RECIPE_SCHEMA
from toolkit.config import ExportConfig
from toolkit.datasets import recorded_options
from toolkit.datasets.base import validation_note
from toolkit.export.inputs import Inputs
from toolkit.exportdir import ExportDir, Generation
from toolkit.exporters import Exporter
from toolkit.provenance import provenance, sha256_file


def _relative_or_absolute(path: Path, root: Path) -> str:
    path, root = Path(path).resolve(), Path(root).resolve()
    return str(path.relative_to(root)) if root in path.parents else str(path)


def write_labels(generation: Generation, data, info) -> dict:
    """labels.txt beside the artifacts: the class name of each output, in output order (one per line;
    outputs beyond the dataset's classes are named by their index), what an app on the device reads."""
    names = list(data.class_names) + [str(k) for k in range(len(data.class_names), info.classes)]
    path = generation.labels_path
    artifacts.atomic_write_text(path, "".join(f"{n}\n" for n in names[: info.classes]))
    return {"path": generation.recorded(path.name), "sha256": sha256_file(path),
            "bytes": path.stat().st_size, "classes": info.classes}


def manifest_record(cfg: ExportConfig, exporters: list[Exporter], inp: Inputs, entries: list, failed: list,
                    op_support: dict, generation: Generation) -> dict:
    """The manifest of one export (what every other command reads through ExportDir)."""
    model_path, data, prep = inp.model_path, inp.data, inp.prep
    train_record = ExportDir(model_path.parent).train_path
    return schema.Manifest.versioned({
        "generation": generation.prefix.removeprefix(artifacts.GENERATION_PREFIX),
        "source_model": {
            # relative to the export directory when inside it, so the directory can move
            "path": _relative_or_absolute(model_path, cfg.exports.root),
            "sha256": sha256_file(model_path),
            "framework": inp.source.framework.name,
            "parameters": int(inp.info.parameters),
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
            "max_slowdown": cfg.max_slowdown,
            "recipe": str(Path(cfg.recipe).resolve()) if cfg.recipe else None,
            "fine_tune": cfg.fine_tune, "fine_tune_epochs": cfg.fine_tune_epochs,
            "fine_tune_images": cfg.fine_tune_images, "learned_rounding": cfg.learned_rounding,
            "npu": list(cfg.npu),
            "dataset": data.spec,
            **recorded_options(data.options),
            "preprocess": {"scale": prep.scale, "color_mode": prep.color_mode, "resize": prep.resize,
                           "mean": list(prep.mean) if prep.mean else None,
                           "std": list(prep.std) if prep.std else None,
                           "input_size": list(cfg.preprocess.input_size) if cfg.preprocess.input_size
                           else None},
        },
        "artifacts": entries,
        "labels": write_labels(generation, data, inp.info),
        "failed": failed,
        "provenance": provenance(),
    })


def write_recipe(cfg: ExportConfig, manifest: dict, recipes: dict) -> None:
    """quantization-recipe.json: what the accuracy search chose, replayable with --recipe."""
    artifacts.atomic_write_json(cfg.exports.recipe_path, {
        "schema": RECIPE_SCHEMA,
        "generation": manifest["generation"],
        "source_model": manifest["source_model"],
        "calibration": {"samples": cfg.calibration_samples, "seed": cfg.calibration_seed,
                        "method": cfg.calibration_method},
        "variants": recipes,
        "provenance": manifest["provenance"],
    })


def warning_lines(manifest: dict) -> list[str]:
    """One line per committed variant whose check agreement is low (int8 that loses much of the model)."""
    return [f"WARNING {e['variant']}: {e['check']['warning']}" for e in manifest["artifacts"]
            if e.get("check", {}).get("warning")]


def failure_lines(manifest: dict) -> list[str]:
    """One line per variant that could not be exported (for summaries)."""
    return [f"{f['variant']}: not exported ({f['stage']}): {f['reason']}" for f in manifest.get("failed", [])]
