"""`toolkit parity --diagnose VARIANT`: where an int8 model loses accuracy, layer by layer.

Each format that can say declares how, beside its exporter (``Format.diagnose`` names the module):
the TFLite one runs LiteRT's QuantizationDebugger (each quantized layer's *local* error against the
float op fed the same dequantized inputs), the ONNX one onnxruntime's qdq_loss_debug (each
activation's SQNR against the float model's). Layers are ranked by their local error; the worst is
named. Then, for a Keras model, whether the weights' rounding or the activations' steps cause the error
(toolkit/quantize/sources.py), which says which option can remove it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit import artifacts, exporters
from toolkit.config import ParityConfig
from toolkit.datasets import sample_indices
from toolkit.errors import UsageError
from toolkit.exportdir import ExportDir
from toolkit.provenance import provenance

DEBUG_IMAGES = 200  # test images run through the debug models
# test images the error's sources are measured on (toolkit/quantize/sources.py: three simulated passes, no debug
# model): enough for a paired interval to show a point or two of agreement
SOURCE_IMAGES = 2_000


@dataclass(frozen=True)
class Diagnosis:
    """What a format's diagnose(d) gets (``Format.diagnose`` names the module, beside its exporter)."""

    exports: ExportDir
    entries: dict  # variant -> manifest entry
    entry: dict  # the variant diagnosed
    path: Path  # its verified file
    model_path: Path  # the Keras model
    dataset: object  # toolkit.datasets.Dataset
    prep: object  # toolkit.preprocess.Preprocessing
    images: np.ndarray  # DEBUG_IMAGES test images, preprocessed

    def calibration(self) -> tuple[np.ndarray, bool]:
        """(the calibration images the manifest records for the variant: its count and seed drawn again from the
        training split, whether their indices are the recorded ones (the sha256; not where the data changed))."""
        from toolkit.provenance import sha256_bytes

        cal = self.entry["calibration"]
        idx = sample_indices(int(cal["count"]), len(self.dataset.train), seed=int(cal["seed"]))
        same = sha256_bytes(idx.astype(np.int64).tobytes()) == cal.get("indices_sha256")
        return self.prep.load(self.dataset.train, idx), same
  # test images run through the debug models


def _entries(manifest: dict) -> dict[str, dict]:
    return {e["variant"]: e for e in manifest["artifacts"]}


def diagnose(cfg: ParityConfig) -> dict:
    exports = cfg.exports
    with exports.reading() as manifest:  # hold this generation while reading it
        entries = _entries(manifest)
        variant = cfg.diagnose
        if variant not in entries:
            raise UsageError(f"--diagnose {variant}: not in the manifest (exported: {', '.join(entries)})")
        entry = entries[variant]
        if entry.get("quantization") != "int8":
            raise UsageError(f"--diagnose works on int8 variants; {variant} is {entry.get('quantization')}")
        fmt = exporters.load_all().get(entry["format"])
        if fmt is None or fmt.diagnose is None:
            able = [e.variant for e in exporters.REGISTRY.values()
                    if e.calibrated and exporters.get_format(e.format).diagnose]
            raise UsageError(f"--diagnose works on {' and '.join(able)}; {variant} is format {entry['format']}"
                             + (f" (diagnose {fmt.diagnose_instead}: the same model bytes)" if fmt and fmt.diagnose_instead else ""))
        path = exports.verified(entry)
        from toolkit.inputs import data_for, reference_model
        from toolkit.modelinfo import for_export

        model_path = reference_model(cfg, manifest)
        dataset, prep, _ = data_for(cfg, manifest, for_export(manifest, model_path))
        images = prep.load(dataset.test, np.arange(min(DEBUG_IMAGES, len(dataset.test))))
        d = Diagnosis(exports=exports, entries=entries, entry=entry, path=path, model_path=model_path,
                      dataset=dataset, prep=prep, images=images)
        result = importlib.import_module(fmt.diagnose).diagnose(d)
        layers = result["layers"]
        worst = max(layers, key=lambda row: row["local_error"]) if layers else None
        sources = _error_sources(d)
        doc = {
            "variant": variant,
            "method": result["method"],
            "metric": result["metric"],
            "debug_images": len(images),
            "worst_layer": worst["layer"] if worst else None,
            "layers": layers,
            **{k: v for k, v in result.items() if k not in ("layers", "method", "metric")},
            "error_sources": sources,
            "provenance": provenance(),
        }
        json_path = exports.diagnose_path(variant)
        artifacts.atomic_write_json(json_path, doc)
        doc["json_path"] = json_path
        return doc


def _error_sources(d: Diagnosis) -> dict:
    """toolkit/quantize/sources.py's split of the error (weights' rounding or activations') on SOURCE_IMAGES test
    images, for the variant's grid, estimator and calibration images, or why it was not measured."""
    from toolkit.ranges import ESTIMATORS
    from toolkit.references import load_reference

    cal = d.entry.get("calibration") or {}
    estimator = cal.get("estimator")
    if estimator not in ESTIMATORS:
        return {"skipped": f"its ranges come from {cal.get('method') or 'a calibrator'}, which the simulation does not "
                           "reproduce"}
    source = load_reference(d.model_path)
    if not source.keras:
        return {"skipped": "the simulation reads Keras models; this export's model is not one"}
    calibration, same = d.calibration()
    if not same:
        return {"skipped": "the calibration images the file was made from cannot be found again in this dataset"}
    from toolkit.errors import UsageError
    from toolkit.quantize.sources import error_sources
    from toolkit.runners import runner_for

    images = d.prep.load(d.dataset.test, np.arange(min(SOURCE_IMAGES, len(d.dataset.test))))
    classes = runner_for(d.entry["format"], d.path).infer_batched(images).argmax(1)
    try:
        return error_sources(source.model, images, calibration.astype(np.float32), estimator,
                             exporters.REGISTRY[d.entry["variant"]].weight_levels, file_classes=classes)
    except UsageError as e:  # a subclassed model: no graph to walk
        return {"skipped": str(e)}


def format_table(doc: dict) -> str:
    rows = doc["layers"]
    lines = [f"{doc['variant']}: {doc['method']} on {doc['debug_images']} test images", f"metric: {doc['metric']}"]
    if "debug_model_identical_to_artifact" in doc:
        if doc["debug_model_identical_to_artifact"]:
            lines.append("the debugger's re-quantized model is byte-identical to the artifact")
        else:
            lines.append("the debugger's re-quantized model is not byte-identical to the artifact; it agrees "
                         f"with it on {doc['debug_model_agreement_with_artifact']:.1%} of the debug images")
    if "sqnr_drop_db" in (rows[0] if rows else {}):
        lines.append(f"{'layer (graph order)':<60} {'SQNR vs float dB':>16} {'drop dB':>8} {'scale':>10}")
        for r in rows:
            scale = f"{r['scale']:.4g}" if r["scale"] is not None else "-"
            lines.append(f"{r['layer'][:60]:<60} {r['sqnr_vs_float_model_db']:>16.2f} "
                         f"{r['sqnr_drop_db']:>8.2f} {scale:>10}")
    else:
        lines.append(f"{'layer':<60} {'op':<16} {'rmse/scale':>10} {'max abs err':>11} {'scale':>10}")
        for r in sorted(rows, key=lambda r: r["local_error"], reverse=True):
            lines.append(f"{r['layer'][:60]:<60} {r['op']:<16} {r['local_error']:>10.3f} "
                         f"{r['max_abs_error']:>11.4g} {r['scale']:>10.4g}")
    lines.append(f"loses most: {doc['worst_layer']}")
    if doc.get("error_sources"):
        from toolkit.quantize.sources import lines as source_lines

        lines.extend(source_lines(doc["error_sources"]))
    return "\n".join(lines)
