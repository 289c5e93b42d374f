"""TFLM against LiteRT on the same int8 bytes, one operator at a time (issue #35, item 6).

    python benchmarks/tflm_kernels.py [--from-json]

TFLM and LiteRT disagree on up to a fifth of the test images on the same `tflite-int8` file of a small-data
EfficientNetB0 (PTQ.md). To see which kernels differ, each case here is a Keras model of one operator (or the
operator behind the op that feeds it) converted to a full-integer int8 file by the TFLite converter (int8 in and
out, calibrated on 64 fixed-seed normal inputs of standard deviation 3), run on the same 256 further inputs by
TFLM (the toolkit's `tflm` runner) and by LiteRT (XNNPACK, the toolkit's `litert` runner). Reported per case: the
largest difference of the two outputs in the output's quantization steps, the mean, and the share of output
values that differ at all. A difference of one step is a rounding choice; more is a kernel computing something
else.

Writes results/tflm-kernels.json and TFLM_KERNELS.md (every number from the JSON).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from _common import BENCHMARKS, RESULTS, parser, provenance_line

from toolkit.artifacts import atomic_write_json, atomic_write_text, read_json
from toolkit.provenance import provenance

SHAPE = (8, 8, 16)
CALIBRATION, INPUTS = 64, 256


def _cases():
    """(name, what the ops are, builder of the output from the input tensor)."""
    from keras import layers

    return [
        ("conv", "CONV_2D 3x3", lambda t: layers.Conv2D(16, 3, padding="same")(t)),
        ("depthwise", "DEPTHWISE_CONV_2D 3x3", lambda t: layers.DepthwiseConv2D(3, padding="same")(t)),
        ("dense", "FULLY_CONNECTED", lambda t: layers.Dense(10)(layers.Flatten()(t))),
        ("add", "ADD of the input and a 1x1 convolution of it", lambda t: layers.Add()([t, layers.Conv2D(16, 1)(t)])),
        ("mean", "MEAN over height and width (global average pooling)", lambda t: layers.GlobalAveragePooling2D()(t)),
        ("se-gate", "MUL of the input by LOGISTIC of its MEAN (a squeeze-excite gate without its convolutions)",
         lambda t: layers.Multiply()([t, layers.Activation("sigmoid")(layers.GlobalAveragePooling2D(keepdims=True)(t))])),
        ("logistic", "LOGISTIC", lambda t: layers.Activation("sigmoid")(t)),
        ("swish", "swish: LOGISTIC then MUL", lambda t: layers.Activation("swish")(t)),
        ("hard-swish", "HARD_SWISH", lambda t: layers.Activation("hard_swish")(t)),
        ("relu", "RELU, standalone", lambda t: layers.ReLU()(t)),
        ("relu6", "RELU6, standalone (on the input)", lambda t: layers.ReLU(6.0)(t)),
        ("relu6-after-concat", "RELU6 after CONCATENATION (standalone: nothing to fuse into)",
         lambda t: layers.ReLU(6.0)(layers.Concatenate()([t, layers.Conv2D(8, 1)(t)]))),
        ("relu6-after-add", "RELU6 after ADD (fused into the ADD)",
         lambda t: layers.ReLU(6.0)(layers.Add()([t, layers.Conv2D(16, 1)(t)]))),
        ("leaky-relu", "LEAKY_RELU 0.1", lambda t: layers.LeakyReLU(0.1)(t)),
        ("softmax", "SOFTMAX after FULLY_CONNECTED", lambda t: layers.Softmax()(layers.Dense(10)(layers.Flatten()(t)))),
    ]


def _int8(model, calibration: np.ndarray) -> bytes:
    import tensorflow as tf

    def representative():
        for i in range(len(calibration)):
            yield [calibration[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def measure() -> list[dict]:
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from toolkit.runners.litert import LiteRTRunner
    from toolkit.runners.tflm import TFLMRunner

    rows = []
    for name, ops, build in _cases():
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        inp = keras.Input(SHAPE)
        model = keras.Model(inp, build(inp))
        calibration = (3.0 * rng.standard_normal((CALIBRATION, *SHAPE))).astype(np.float32)
        inputs = (3.0 * rng.standard_normal((INPUTS, *SHAPE))).astype(np.float32)
        content = _int8(model, calibration)
        interpreter = Interpreter(model_content=content)
        step = float(interpreter.get_output_details()[0]["quantization"][0])
        diff = np.abs(TFLMRunner(content).infer_batched(inputs, 64) - LiteRTRunner(content).infer_batched(inputs, 64))
        steps = diff / step
        rows.append({"case": name, "ops": ops, "outputs": int(diff.size), "max_steps": float(np.round(steps.max(), 3)),
                     "mean_steps": float(steps.mean()), "differing_share": float(np.mean(steps > 1e-3))})
        print(f"{name}: max {steps.max():.2f} steps, {100 * np.mean(steps > 1e-3):.2f}% differ", file=sys.stderr)
    return rows


def markdown(doc: dict) -> str:
    lines = ["# TFLM against LiteRT, one operator at a time", "",
             "Written by `" + doc["command"] + "` from `results/tflm-kernels.json`. Each case is a one-operator Keras "
             f"model made full-integer int8 by the TFLite converter (TensorFlow {doc['tensorflow']}), run on "
             f"{doc['inputs']} fixed-seed inputs by TFLM ({doc['tflm']}) and by LiteRT ({doc['litert']}, XNNPACK) "
             "from the same bytes. Differences are in the output's quantization steps.", "",
             "| case | operators | largest difference (steps) | mean (steps) | outputs that differ |",
             "|---|---|---:|---:|---:|"]
    for r in doc["rows"]:
        lines.append(f"| {r['case']} | {r['ops']} | {r['max_steps']:g} | {r['mean_steps']:.4f} | "
                     f"{100 * r['differing_share']:.2f}% |")
    wrong = [r["case"] for r in doc["rows"] if r["max_steps"] > 2]
    rounding = [r["case"] for r in doc["rows"] if 0 < r["max_steps"] <= 2 and r["differing_share"] > 0.05]
    lines += ["",
              ("Cases more than two steps apart on some output (a kernel computing something else, not a rounding "
               "choice): "
               + ", ".join(f"`{c}`" for c in wrong) + "." if wrong else "No case is more than two steps apart."),
              ("Cases where one-step rounding differences touch over 5% of the outputs: "
               + ", ".join(f"`{c}`" for c in rounding) + "." if rounding else ""),
              "", "A one-step difference inside a network is amplified by every later layer; a file whose int8 "
              "predictions sit close to the float model's decision boundaries (PTQ.md's small-data EfficientNetB0) "
              "then gives different classes on the two runtimes. `toolkit parity` runs `tflite-micro` on TFLM and "
              "checks it against LiteRT on the test set, so no file is assumed to run the same on both.", "",
              provenance_line(doc["provenance"]),
              ""]
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--from-json", action="store_true", help="only rewrite TFLM_KERNELS.md from the JSON")
    args = p.parse_args()
    out = args.out / "tflm-kernels.json"
    if args.from_json:
        atomic_write_text(BENCHMARKS / "TFLM_KERNELS.md", markdown(read_json(out)))
        return
    prov = provenance()
    command = ("python benchmarks/tflm_kernels.py " + " ".join(sys.argv[1:])).rstrip()
    doc = {"rows": measure(), "inputs": INPUTS, "command": command,
           "tensorflow": prov["versions"].get("tensorflow"), "tflm": prov["versions"].get("tflite-micro"),
           "litert": prov["versions"].get("ai-edge-litert"), "provenance": prov}
    atomic_write_json(out, doc)
    atomic_write_text(BENCHMARKS / "TFLM_KERNELS.md", markdown(doc))
    print(f"wrote {out} and {BENCHMARKS / 'TFLM_KERNELS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
