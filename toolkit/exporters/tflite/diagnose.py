"""`toolkit parity --diagnose tflite-int8`: LiteRT's QuantizationDebugger (NumericVerify ops comparing
each quantized layer's output with the float op fed the same dequantized inputs: the layer's *local*
error). It re-runs the converter with the calibration images the manifest records (same count and
seed); whether the re-converted model is byte-identical to the artifact is said."""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np

from toolkit.errors import UsageError


def diagnose(d) -> dict:
    """d: toolkit.diagnose.Diagnosis."""
    from toolkit.references import framework_for

    framework = framework_for(d.model_path).name
    if framework != "keras":
        raise UsageError(f"--diagnose {d.entry['variant']} re-runs the TFLite converter's debugger on the Keras model; "
                         f"this export's model is a {framework} model", hint="diagnose its ONNX int8 file instead")
    return _tflite(d.model_path, d.path, d.calibration()[0], d.images)


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
