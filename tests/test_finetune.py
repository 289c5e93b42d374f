"""Quantization-aware fine-tuning (toolkit/quantize/finetune.py, `export --fine-tune`).

The model: a small functional CNN with the blocks the Keras Applications models are made of (convolution
with BatchNormalization and swish, a depthwise convolution with ReLU6, a squeeze-excite gate, a residual
Add), trained briefly on MNIST so that its BatchNormalization statistics are not the identity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolkit.cli import main


@pytest.fixture(scope="module")
def mobile_cnn(tmp_path_factory, mnist):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("swish", name="stem_swish")(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = layers.BatchNormalization(name="dw_bn")(y)
    y = layers.ReLU(6.0, name="dw_relu6")(y)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(y)
    s = layers.Conv2D(4, 1, activation="swish", name="se_reduce")(s)
    s = layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    y = layers.Multiply(name="se_mul")([y, s])
    y = layers.Conv2D(16, 1, use_bias=False, name="project")(y)
    y = layers.BatchNormalization(name="project_bn")(y)
    x = layers.Add(name="residual")([x, y])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inp, layers.Dense(10, name="logits")(x), name="mobile_cnn")
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(mnist.train.images[:3000], mnist.train.labels[:3000], batch_size=64, epochs=2, verbose=0)
    path = tmp_path_factory.mktemp("finetune") / "model.keras"
    model.save(path)
    return path


def test_the_simulation_is_the_float_model_and_close_to_the_tflite_int8_file(mobile_cnn, mnist, data_dir, tmp_path):
    """Without quantization the simulated forward pass is the model (BatchNormalization folded as the converter
    folds it); with it, it predicts what the exported full-integer tflite-int8 file predicts on nearly every
    image: the fine-tuning trains what the exporter builds."""
    from toolkit.quantize.finetune import Simulation
    from toolkit.runners.keras import load_keras_model
    from toolkit.runners.litert import LiteRTRunner

    model = load_keras_model(mobile_cnn)
    sim = Simulation(model)
    assert {m.name for m in sim.folded_layers()} == {"stem", "dw", "project"}
    images = mnist.test.images[:1000]
    assert np.abs(np.asarray(sim(images, quantize=False)) - np.asarray(model(images, training=False))).max() < 1e-4
    exports = tmp_path / "e"
    assert main(["export", "--model", str(mobile_cnn), "--data-dir", str(data_dir), "--exports", str(exports),
                 "--format", "tflite", "--quantize", "int8", "--calibration-method", "tail-aware", "--quiet"]) == 0
    manifest = json.loads((exports / "manifest.json").read_text())
    entry = manifest["artifacts"][0]
    sim.calibrate(load_calibration(manifest, data_dir), "tail-aware")
    simulated = np.asarray(sim(images, quantize=True)).argmax(1)
    litert = LiteRTRunner((exports / entry["path"]).read_bytes()).infer_batched(images, 250).argmax(1)
    assert np.mean(simulated == litert) >= 0.98


def load_calibration(manifest: dict, data_dir) -> np.ndarray:
    """The export's own calibration images (the fixed-seed sample its manifest records)."""
    from toolkit.config import ExportConfig
    from toolkit.datasets import open_dataset, sample_indices
    from toolkit.preprocess import Preprocessing

    data = open_dataset("mnist", data_dir=data_dir)
    prep = Preprocessing.from_json(manifest["preprocessing"])
    n = ExportConfig().calibration_samples
    return prep.load(data.train, sample_indices(n, len(data.train), 0)).astype(np.float32)


def test_fine_tune_exports_full_integer_files_the_same_every_time(mobile_cnn, data_dir, tmp_path, monkeypatch):
    """`export --fine-tune`: seeded, so two runs write the same bytes; the int8 files stay full-integer (int8 in
    and out); the manifest records each epoch's simulated agreement on the validation images and which weights
    were kept (the model's own when no epoch improves), and parity still judges against the user's model."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    runs = []
    for name in ("a", "b"):
        exports = tmp_path / name
        assert main(["export", "--model", str(mobile_cnn), "--data-dir", str(data_dir), "--exports", str(exports),
                     "--format", "tflite", "--quantize", "int8", "--fine-tune", "--fine-tune-epochs", "1",
                     "--fine-tune-images", "1000", "--quiet"]) == 0
        manifest = json.loads((exports / "manifest.json").read_text())
        entry = manifest["artifacts"][0]
        runs.append((exports / entry["path"]).read_bytes())
    tuned = manifest["fine_tuning"]
    assert runs[0] == runs[1]
    assert [e["epoch"] for e in tuned["epochs"]] == [0, 1] and tuned["kept_epoch"] in (0, 1)
    assert all(0.9 < e["validation_agreement"] <= 1.0 for e in tuned["epochs"])
    assert entry["inputs"][0]["dtype"] == "int8" and entry["outputs"][0]["dtype"] == "int8"
    if tuned["kept_epoch"] == 1:
        assert entry["weights"].startswith("fine-tuned") and tuned["model"]["sha256"]
        assert (tmp_path / "b" / tuned["model"]["path"]).is_file()
    else:
        assert "weights" not in entry and "model" not in tuned
    assert main(["parity", "--exports", str(tmp_path / "b"), "--data-dir", str(data_dir), "--quiet"]) in (0, 4)
    parity = json.loads((tmp_path / "b" / "parity.json").read_text())
    assert Path(parity["reference"]["path"]).resolve() == mobile_cnn.resolve()  # the user's model, not the tuned one


def test_fine_tune_flags_are_checked(capsys):
    assert main(["export", "--fine-tune-epochs", "2"]) == 2
    assert "apply with --fine-tune" in capsys.readouterr().err
