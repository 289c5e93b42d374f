"""`toolkit parity --diagnose VARIANT`: where an int8 model loses accuracy, layer by layer.

- ``tflite-int8``: LiteRT's QuantizationDebugger. It re-runs the converter with the
  calibration images recorded in the manifest (same count and seed) and adds NumericVerify
  ops that compare each quantized layer's output with the float op fed the same dequantized
  inputs: the *local* error of each layer. We check that the re-converted model is
  byte-identical to the exported artifact and say so.
- ``onnx-int8``: onnxruntime's qdq_loss_debug. Both the float and the QDQ model are
  augmented to output every activation; for each tensor we report the SQNR of the QDQ
  model's activation against the float model's (cumulative error) and against its own
  dequantized value (local quantization error).

Layers are ranked by their local error; the worst is named.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np

from toolkit import artifacts
from toolkit.config import ParityConfig
from toolkit.datasets import sample_indices
from toolkit.errors import DataError, UsageError
from toolkit.provenance import provenance

DEBUG_IMAGES = 200  # test images run through the debug models


def _entries(manifest: dict) -> dict[str, dict]:
    return {e["variant"]: e for e in manifest["artifacts"]}


def diagnose(cfg: ParityConfig) -> dict:
    exports = Path(cfg.exports)
    with artifacts.reading(exports) as manifest:  # hold this generation while reading it
        entries = _entries(manifest)
        variant = cfg.diagnose
        if variant not in entries:
            raise UsageError(f"--diagnose {variant}: not in the manifest (exported: {', '.join(entries)})")
        entry = entries[variant]
        if entry.get("quantization") != "int8":
            raise UsageError(f"--diagnose works on int8 variants; {variant} is {entry.get('quantization')}")
        if entry["format"] not in ("tflite", "onnx"):
            raise UsageError(f"--diagnose works on tflite-int8 and onnx-int8; {variant} is format {entry['format']}"
                             + (" (diagnose tflite-int8: the same model bytes)" if entry["format"] == "tflite-micro" else ""))
        path = artifacts.verify_entry(exports, entry)
        from toolkit.inputs import data_for, reference_model
        from toolkit.modelinfo import inspect_model
        from toolkit.runners.keras import load_keras_model

        model_path = reference_model(cfg, manifest)
        dataset, prep, _ = data_for(cfg, manifest, inspect_model(load_keras_model(model_path), model_path))
        images = prep.load(dataset.test, np.arange(min(DEBUG_IMAGES, len(dataset.test))))
        if entry["format"] == "tflite":
            cal = entry["calibration"]
            idx = sample_indices(cal["count"], len(dataset.train), seed=cal["seed"])
            result = _tflite(model_path, path, prep.load(dataset.train, idx), images)
        else:
            if "onnx" not in entries:
                raise UsageError("--diagnose onnx-int8 compares with the float ONNX model: export it too "
                                 "(`toolkit export --format onnx --force`)")
            float_path = artifacts.verify_entry(exports, entries["onnx"])
            result = _onnx(float_path, path, images)
        layers = result["layers"]
        worst = max(layers, key=lambda row: row["local_error"]) if layers else None
        doc = {
            "variant": variant,
            "method": result["method"],
            "metric": result["metric"],
            "debug_images": len(images),
            "worst_layer": worst["layer"] if worst else None,
            "layers": layers,
            **{k: v for k, v in result.items() if k not in ("layers", "method", "metric")},
            "provenance": provenance(),
        }
        json_path = exports / f"diagnose-{variant}.json"
        artifacts.atomic_write_json(json_path, doc)
        doc["json_path"] = json_path
        return doc


def _tflite(model_path: Path, artifact: Path, calibration: np.ndarray, images: np.ndarray) -> dict:
    import csv
    import io

    from toolkit._quiet import quiet_stderr, tf
    from toolkit.runners.keras import load_keras_model

    tf = tf()
    model = load_keras_model(model_path)
    # The debugger uses the deprecated tf.lite.Interpreter inside: its warning is not ours to show.
    with tempfile.TemporaryDirectory() as tmp, quiet_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.export(f"{tmp}/sm", format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(f"{tmp}/sm")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calibration[i : i + 1]] for i in range(len(calibration)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: ([images[i : i + 1]] for i in range(len(images))),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(fully_quantize=True),
        )
        debugger.run()
        buf = io.StringIO()
        debugger.layer_statistics_dump(buf)
        rebuilt = debugger.get_nondebug_quantized_model()
    from toolkit.runners.litert import LiteRTRunner

    same = LiteRTRunner(rebuilt).infer(images).argmax(1) == LiteRTRunner.load(artifact).infer(images).argmax(1)
    layers = []
    for row in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(row["scale"])
        mse = float(row["mean_squared_error"])
        layers.append({
            "layer": row["tensor_name"],
            "op": row["op_name"],
            # RMSE in units of the quantization step: 1/sqrt(12) ~ 0.29 is pure rounding noise.
            "local_error": math.sqrt(mse) / scale if scale else float("inf"),
            "rmse": math.sqrt(mse),
            "max_abs_error": float(row["max_abs_error"]),
            "mean_error": float(row["mean_error"]),
            "scale": scale,
            "zero_point": int(float(row["zero_point"])),
        })
    return {
        "method": "LiteRT QuantizationDebugger (NumericVerify, per-layer local error)",
        "metric": "rmse/scale: RMSE of the layer output in quantization steps (0.29 = rounding noise)",
        "debug_model_identical_to_artifact": rebuilt == artifact.read_bytes(),
        # The debugger quantizes through its own path, so its model need not be byte-identical
        # to the exported one; how often the two agree tells whether the table applies.
        "debug_model_agreement_with_artifact": float(same.mean()),
        "layers": layers,
    }


def _onnx(float_path: Path, qdq_path: Path, images: np.ndarray) -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization import qdq_loss_debug as qdq

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(range(0, len(images), 20))

        def get_next(self):
            i = next(self._it, None)
            return None if i is None else {"image": images[i : i + 20]}

    with tempfile.TemporaryDirectory() as tmp:
        aug_float, aug_qdq = f"{tmp}/float.onnx", f"{tmp}/qdq.onnx"
        try:
            qdq.modify_model_output_intermediate_tensors(str(float_path), aug_float)
            qdq.modify_model_output_intermediate_tensors(str(qdq_path), aug_qdq)
            float_acts = qdq.collect_activations(aug_float, Reader())
            qdq_acts = qdq.collect_activations(aug_qdq, Reader())
        except Exception as exc:  # onnxruntime's own error types
            raise DataError(f"cannot instrument the ONNX models: {exc}") from None
    errors = qdq.compute_activation_error(qdq.create_activation_matching(qdq_acts, float_acts))
    scales = {}
    model = onnx.load(str(qdq_path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in inits:
            s = inits[node.input[1]]
            scales[node.input[0]] = float(s) if s.size == 1 else None
    # Topological order = order of first appearance as a node output in the QDQ graph.
    order = {}
    for node in model.graph.node:
        for out in node.output:
            order.setdefault(out, len(order))
    layers, previous = [], None
    for tensor in sorted((t for t in errors if "xmodel_err" in errors[t]), key=lambda t: order.get(t, 1 << 30)):
        cumulative = float(errors[tensor]["xmodel_err"])
        # Ranked by SQNR against the float model (the dequantized activation vs the float one).
        # The QDQ-local SQNR is recorded too but not ranked on: the quantizer folds ReLU into
        # QuantizeLinear's clamp, so for a ReLU output it measures the ReLU, not the rounding.
        drop = 0.0 if previous is None else previous - cumulative
        previous = cumulative
        layers.append({
            "layer": tensor,
            "local_error": -cumulative,
            "sqnr_vs_float_model_db": cumulative,
            "sqnr_drop_db": drop,
            "sqnr_qdq_local_db": float(errors[tensor].get("qdq_err", float("nan"))),
            "scale": scales.get(tensor),
        })
    # per weight SQNR; scalar weights (a Rescaling layer's scale, say) as 1-element arrays, which
    # qdq.compute_weight_error fails on (it takes a 0-d array for a list)
    weights = {name: qdq.compute_signal_to_quantization_noice_ratio(
                   np.atleast_1d(np.asarray(m["float"], np.float32)), np.atleast_1d(np.asarray(m["dequantized"])))
               for name, m in qdq.create_weight_matching(str(float_path), str(qdq_path)).items()}
    return {
        "method": "onnxruntime qdq_loss_debug (activation SQNR, per tensor)",
        "metric": "SQNR of each activation against the float model's, in dB (higher is better); "
                  "drop = SQNR lost relative to the previous tensor; the lowest SQNR loses most",
        "weights_sqnr_db": {k: float(v) for k, v in weights.items()},
        "layers": layers,
    }


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
    return "\n".join(lines)
