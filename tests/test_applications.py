"""Architectures people deploy, through the whole toolkit (slow: `python -m pytest -m slow tests/test_applications.py`).

A Keras Applications model (``weights=None``) at 32x32 RGB, trained briefly on MNIST upsampled to RGB (an .npz
the test makes: 6,000 training images, 2,000 test images), then `toolkit export` (TFLite and ONNX, float and
int8), `toolkit parity` and `toolkit bench` at batch 1. What must hold: every variant exports; the float files
predict what Keras predicts on every test image and pass the logit gate, while parity's 99.95% agreement gate
stays inconclusive: 2,000 images cannot show it (Wilson's lower bound for 2,000 of 2,000 is 99.81%), so
inconclusive, never pass, is the float files' verdict here; parity's exit code is its verdict's; int8 stays
within 1 point of Keras on the test set (these briefly trained models are far from converged: the comparison
with the peers, on more images, is benchmarks/PTQ.md), the manifest says which activation-range estimator the
validation split chose, and every row of the benchmark is measured.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rgb_npz(tmp_path_factory, mnist):
    import tensorflow as tf

    def rgb(x):
        up = tf.image.resize(x.astype(np.float32) * 255, (32, 32), "bilinear").numpy()
        return np.repeat(np.clip(np.round(up), 0, 255).astype(np.uint8), 3, axis=-1)

    path = tmp_path_factory.mktemp("rgb") / "mnist32rgb.npz"
    np.savez(path, x_train=rgb(mnist.train.images[:6000]), y_train=mnist.train.labels[:6000],
             x_test=rgb(mnist.test.images[:2000]), y_test=mnist.test.labels[:2000])
    return path


@pytest.mark.parametrize("application", ["MobileNetV2", "EfficientNetB0"])
def test_application_through_export_parity_and_bench(application, rgb_npz, tmp_path):
    import keras

    from toolkit.cli import main

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, application)(weights=None, input_shape=(32, 32, 3), classes=10,
                                                      classifier_activation=None)
    for layer in model.layers:  # trained briefly: BatchNormalization's moving statistics must keep up
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = 0.9
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = np.load(rgb_npz)
    rescales = any(type(layer).__name__ == "Rescaling" for layer in model.layers[:4])  # the toolkit's --scale auto
    model.fit(data["x_train"].astype(np.float32) / (1.0 if rescales else 255.0), data["y_train"], epochs=2,
              batch_size=64, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    exports = tmp_path / "e"
    assert main(["export", "--model", str(path), "--dataset", str(rgb_npz), "--exports", str(exports),
                 "--format", "tflite", "onnx", "--quantize", "none", "int8", "--quiet"]) == 0
    manifest = json.loads((exports / "manifest.json").read_text())
    assert manifest["preprocessing"]["scale"] == ("raw" if rescales else "unit")
    for entry in manifest["artifacts"]:
        if entry["quantization"] == "int8":
            assert entry["calibration"]["estimator"] in ("minmax", "mean-minmax", "tail-aware")
            assert entry["calibration"]["chosen_on"]
    rc = main(["parity", "--exports", str(exports), "--quiet"])
    doc = json.loads((exports / "parity.json").read_text())
    assert rc == {"pass": 0, "inconclusive": 0, "fail": 4}[doc["verdict"]], (rc, doc["verdict"])  # not --strict
    assert doc["reference"]["accuracy"] > 0.5  # a model that learned something (not a constant prediction)
    from toolkit.stats import wilson_interval

    lower = 100 * wilson_interval(2000, 2000)[0]
    assert 99.8 < lower < 99.95  # so agreement on every image is inconclusive against 99.95%, not a pass
    for name, v in doc["variants"].items():
        if name in ("tflite", "onnx"):
            gates = {g["metric"]: g for g in v["gates"]}
            assert v["agreement"] == 1.0 and v["images"] == 2000, (name, v["gates"])
            assert gates["agreement_percent"]["status"] == "inconclusive", (name, v["gates"])
            assert gates["agreement_percent"]["interval"][0] == pytest.approx(lower)
            assert gates["max_abs_logit_diff"]["status"] == "pass", (name, v["gates"])
            assert v["verdict"] == "inconclusive"
        else:
            assert abs(v["accuracy_diff_points"]) <= 1.0, (name, v["accuracy_diff_points"])
    assert main(["bench", "--exports", str(exports), "--batch-sizes", "1", "--threads", "1", "--min-runs", "20",
                 "--min-seconds", "0.2", "--runtimes", "litert", "onnxruntime", "--no-plots", "--quiet"]) == 0
    bench = json.loads((exports / "bench.json").read_text())
    assert not bench["failed"] and {r["variant"] for r in bench["results"]} >= {"tflite-int8", "onnx-int8"}
