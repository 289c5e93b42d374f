"""Learned weight rounding (toolkit/quantize/rounding.py, `export --learned-rounding`).

The model: a small CNN trained briefly on MNIST training images 5,000-34,999 (the first 5,000 are the
validation split the toolkit judges on), with one dead ReLU channel whose outgoing weights are 60 times the next
layer's largest: each of that layer's per-channel int8 grids is then coarse for every other weight, so rounding to
nearest loses agreement (plain int8 fails parity on both formats), the case learned rounding is for
(benchmarks/LEARNED_ROUNDING.md measures the same model and the benchmark's MobileNets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import dead_channel_model

from toolkit.cli import main


@pytest.fixture(scope="module")
def dead_channel_cnn(tmp_path_factory, mnist):
    return dead_channel_model(tmp_path_factory.mktemp("rounding") / "model.keras", mnist, 60.0)


def _on_grid(kernel: np.ndarray, levels: int) -> np.ndarray:
    """The integers of a kernel (output channels last) on the grid -levels..levels; asserts it lies on it."""
    flat = kernel.reshape(-1, kernel.shape[-1])
    scale = np.abs(flat).max(0) / levels
    q = flat / scale
    assert np.abs(q - np.round(q)).max() < 1e-3
    assert np.all(np.abs(np.round(q)).max(0) == levels)
    return np.round(q).reshape(kernel.shape).astype(np.int64)


@pytest.mark.parametrize("levels", [127, 64])
def test_learned_rounding_lies_on_the_grid_and_reproduces_the_layer_better(dead_channel_cnn, mnist, levels):
    """Every kernel of the result lies on the grid (each channel's largest magnitude on its end, so an exporter
    computes the same step); on the planted layer the learned rounding reproduces the float output better than
    rounding to nearest, and the simulated int8 model agrees with the float model on more unseen images (MNIST
    training images 40,000-41,999) than the model's own weights, beyond noise."""
    import keras

    from toolkit.quantize.rounding import RoundingSettings, judge, learn_rounding

    model = keras.models.load_model(dead_channel_cnn)
    calibration = mnist.train.images[35000:35500]
    rounded, record = learn_rounding(model, calibration, RoundingSettings(levels=levels))
    for name in ("conv1", "conv2", "logits"):
        _on_grid(rounded.get_layer(name).get_weights()[0], levels)
    rows = {r["layer"]: r for r in record["layers"]}
    assert rows["conv2"]["kept"] == "learned"
    assert rows["conv2"]["held_out_error_learned"] < 0.5 * rows["conv2"]["held_out_error_nearest"]
    val = mnist.train.images[40000:42000]
    reference = np.asarray(model(val)).argmax(1)
    verdict = judge(model, rounded, (val, reference), calibration, "auto", levels)
    assert verdict["kept"] == "learned" and verdict["learned_minus_own_ci_points"][0] > 0


def _tflite_kernel(path, shape) -> np.ndarray:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    found = [interpreter.get_tensor(d["index"]) for d in interpreter.get_tensor_details()
             if d["dtype"] == np.int8 and tuple(d["shape"]) == shape]
    assert len(found) == 1
    return found[0]


def _onnx_kernel(path, shape) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    found = [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
             if i.data_type == onnx.TensorProto.INT8 and tuple(i.dims) == shape]
    assert len(found) == 1
    return found[0]


def _export(model, data_dir, exports, *flags) -> dict:
    assert main(["export", "--model", str(model), "--data-dir", str(data_dir), "--exports", str(exports),
                 "--format", "tflite", "onnx", "--quantize", "int8", *flags, "--quiet"]) == 0
    return json.loads((exports / "manifest.json").read_text())


def _verdicts(exports, data_dir) -> dict:
    assert main(["parity", "--exports", str(exports), "--data-dir", str(data_dir), "--quiet"]) in (0, 4)
    return json.loads((exports / "parity.json").read_text())["variants"]


def test_learned_rounding_makes_a_failing_int8_model_pass(dead_channel_cnn, data_dir, tmp_path, monkeypatch):
    """Plain int8 fails parity on the test set in both formats; `--learned-rounding` (judged on the validation
    split, never on the test set) makes the tflite-int8 file pass and the onnx-int8 file agree with the model on more
    test images (here: two points more). The files hold the learned integers (each on its own format's grid:
    onnxruntime's are 7-bit), stay full-integer, and two runs write the same bytes; parity's reference is the user's model."""
    import keras

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    _export(dead_channel_cnn, data_dir, tmp_path / "plain")
    plain = _verdicts(tmp_path / "plain", data_dir)
    assert plain["tflite-int8"]["verdict"] == "fail" and plain["onnx-int8"]["verdict"] == "fail"
    # `parity --diagnose` names the weights' rounding as the cause, and learned rounding as a lever
    assert main(["parity", "--exports", str(tmp_path / "plain"), "--data-dir", str(data_dir), "--quiet",
                 "--diagnose", "tflite-int8"]) == 0
    sources = json.loads((tmp_path / "plain" / "diagnose-tflite-int8.json").read_text())["error_sources"]
    assert sources["main"] == "weights" and sources["weight_share"] > 0.9
    assert sources["costs"]["weights"]["beyond_noise"] and "--learned-rounding" in sources["levers"]["weights"]
    assert sources["rows"]["weights only"]["agreement"] < sources["rows"]["activations only"]["agreement"]
    runs = [_export(dead_channel_cnn, data_dir, tmp_path / name, "--learned-rounding") for name in ("a", "b")]
    assert [e["sha256"] for e in runs[0]["artifacts"]] == [e["sha256"] for e in runs[1]["artifacts"]]
    manifest, exports = runs[1], tmp_path / "b"
    grids = manifest["learned_rounding"]
    assert set(grids) == {"-127..127", "-64..64"}
    assert all(g["judged"]["kept"] == "learned" for g in grids.values())
    entries = {e["variant"]: e for e in manifest["artifacts"]}
    assert "-127..127" in entries["tflite-int8"]["weights"] and "-64..64" in entries["onnx-int8"]["weights"]
    assert entries["tflite-int8"]["inputs"][0]["dtype"] == "int8"
    for variant, levels, read, layout in (("tflite-int8", 127, _tflite_kernel, (3, 0, 1, 2)),
                                          ("onnx-int8", 64, _onnx_kernel, (3, 2, 0, 1))):
        tuned = keras.models.load_model(exports / grids[f"-{levels}..{levels}"]["model"]["path"])
        learned = _on_grid(tuned.get_layer("conv2").get_weights()[0], levels).transpose(layout)
        assert np.array_equal(read(exports / entries[variant]["path"], learned.shape), learned)
    rounded = _verdicts(exports, data_dir)
    assert rounded["tflite-int8"]["verdict"] == "pass"
    assert rounded["onnx-int8"]["verdict"] != "fail"
    assert rounded["onnx-int8"]["agreement"] > plain["onnx-int8"]["agreement"] + 0.01


def test_learned_rounding_flags_are_checked(capsys, tmp_path):
    assert main(["export", "--learned-rounding", "--fine-tune"]) == 2
    assert "need --max-accuracy-drop" in capsys.readouterr().err
    onnx_model = tmp_path / "model.onnx"
    onnx_model.write_bytes(b"")
    assert main(["export", "--model", str(onnx_model), "--learned-rounding"]) == 2
    assert "--learned-rounding rounds the Keras model's weights" in capsys.readouterr().err


def test_the_report_says_which_weights_each_grid_used():
    """The report's int8 lines (toolkit/report.py) give each grid's validation figures and which weights the int8
    variants on it were made from."""
    from toolkit.report import _int8_choice_lines

    judged = {"validation_images": 5000, "own_agreement": 0.9886, "learned_agreement": 0.9974}
    manifest = {"learned_rounding": {
        "-127..127": {"judged": judged, "model": {"path": "g/int8-rounded-w127.keras"}, "total_seconds": 12.0,
                      "variants": "the int8 variants (tflite-int8, tflite-micro, onnx-int8)"},
        "-64..64": {"judged": {**judged, "learned_agreement": 0.9890}, "total_seconds": 11.0}}}
    first, second = _int8_choice_lines(manifest)
    assert "-127..127" in first and "98.86%" in first and "99.74%" in first and "made from it: the int8" in first
    assert "-64..64" in second and "model's own weights" in second
    skipped = {"skipped": "not run: with float weights it would agree on +0.10 points", "total_seconds": 2.0}
    (line,) = _int8_choice_lines({"learned_rounding": {"-127..127": skipped}})
    assert "-127..127: not run: with float weights it would agree on +0.10" in line and "model's own weights" in line


def test_a_layer_with_large_inputs_learns_on_fewer_images():
    """A layer's kept inputs and outputs are capped (rounding.LAYER_MEMORY): an early convolution of a 224x224 model
    (about 20 MB per image) learns on the minimum number of images, a small one on all of them."""
    import keras

    from toolkit.quantize import rounding

    big, small = keras.layers.Conv2D(96, 3, padding="same"), keras.layers.Conv2D(16, 3)
    keras.Model(a := keras.Input((224, 224, 3)), big(a))
    keras.Model(b := keras.Input((28, 28, 1)), small(b))
    assert rounding.LAYER_MEMORY // (4 * 224 * 224 * (3 + 96)) < rounding.MIN_IMAGES  # the cap bites: the minimum
    assert rounding._images_for(big, 512) == rounding.MIN_IMAGES
    assert rounding._images_for(small, 512) == 512
