"""Every way a user's model and data can fail to fit: one line on stderr naming both sides,
the documented exit code (2 when a flag fixes it, 3 when the data cannot), no traceback. And a
model with a real op one format cannot take: the other variants land, exit 3."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from userdata import fit, make_images, write_folder, write_npz

from toolkit.cli import main

SIZE = 16


@pytest.fixture(scope="module")
def k():
    from toolkit._quiet import keras

    return keras()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("errdata")
    return {
        "gray3": write_folder(root / "gray3", ["a", "b", "c"], 8, 4, SIZE, 1),
        "gray2": write_folder(root / "gray2", ["a", "b"], 8, 4, SIZE, 1),
        "gray3_big": write_folder(root / "gray3_big", ["a", "b", "c"], 8, 4, 20, 1),
        "npz12": write_npz(root / "twelve.npz", 12, 48, 24, SIZE, channels=1),
        "root": root,
    }


def _save(model, path):
    model.save(path)
    return path


@pytest.fixture(scope="module")
def models(k, tmp_path_factory):
    root = tmp_path_factory.mktemp("errmodels")
    L = k.layers
    return {
        "rgb3": _save(k.Sequential([k.Input((SIZE, SIZE, 3)), L.Flatten(), L.Dense(3)]), root / "rgb3.keras"),
        "gray3": _save(k.Sequential([k.Input((SIZE, SIZE, 1)), L.Flatten(), L.Dense(3)]), root / "gray3.keras"),
        "gray10": _save(k.Sequential([k.Input((SIZE, SIZE)), L.Flatten(), L.Dense(10)]), root / "gray10.keras"),
        "flat300": _save(k.Sequential([k.Input((300,)), L.Dense(3)]), root / "flat300.keras"),
        "two_inputs": _save(_two_inputs(k), root / "two_inputs.keras"),
    }


def _two_inputs(k):
    a, b = k.Input((SIZE, SIZE, 1)), k.Input((4,))
    return k.Model([a, b], k.layers.Dense(3)(k.layers.Concatenate()([k.layers.Flatten()(a), b])))


def _export(model, dataset, exports, *extra):
    return main(["export", "--model", str(model), "--dataset", str(dataset), "--exports", str(exports),
                 "--format", "tflite", "--quantize", "none", *extra])


def _one_line(capsys, code_expected, rc, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code_expected, err
    assert len(err) == 1 and err[0].startswith("toolkit export: error: "), err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


def test_rgb_model_on_grayscale_data_exit_2(models, folders, tmp_path, capsys):
    rc = _export(models["rgb3"], folders["gray3"], tmp_path / "e")
    _one_line(capsys, 2, rc, "takes RGB (3 channels) images", "grayscale (1 channel) images", "--color-mode rgb",
              str(folders["gray3"]))
    assert not (tmp_path / "e" / "manifest.json").exists()


def test_color_mode_rgb_converts_grayscale_data(models, folders, tmp_path, capsys):
    assert _export(models["rgb3"], folders["gray3"], tmp_path / "e", "--color-mode", "rgb") == 0
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["preprocessing"]["color_mode"] == "rgb"


def test_color_mode_that_contradicts_the_model_exit_2(models, folders, tmp_path, capsys):
    rc = _export(models["gray3"], folders["gray3"], tmp_path / "e", "--color-mode", "rgb")
    _one_line(capsys, 2, rc, "--color-mode rgb gives RGB (3 channels)", "takes grayscale (1 channel)")


def test_more_classes_than_outputs_exit_3(models, folders, tmp_path, capsys):
    rc = _export(models["gray10"], folders["npz12"], tmp_path / "e")
    _one_line(capsys, 3, rc, "has 10 outputs", "has 12 classes (labels 0..11)")


def test_folder_with_fewer_classes_than_outputs_exit_3(models, folders, tmp_path, capsys):
    rc = _export(models["gray3"], folders["gray2"], tmp_path / "e")
    _one_line(capsys, 3, rc, "has 3 outputs", "2 class folders (a, b)")


def test_wrong_size_without_resize_exit_2_and_with_resize_works(models, folders, tmp_path, capsys):
    rc = _export(models["gray3"], folders["gray3_big"], tmp_path / "e")
    _one_line(capsys, 2, rc, "takes 16x16 images", "has 20x20 images", "--resize")
    assert _export(models["gray3"], folders["gray3_big"], tmp_path / "e", "--resize") == 0
    prep = json.loads((tmp_path / "e" / "manifest.json").read_text())["preprocessing"]
    assert prep["resize"] and prep["image_size"] == [16, 16]


def test_flat_model_of_another_length_exit_2(models, folders, tmp_path, capsys):
    rc = _export(models["flat300"], folders["gray3"], tmp_path / "e")
    _one_line(capsys, 2, rc, "flat vectors of 300 values", "16x16 grayscale (1 channel) images = 256 values")


def test_two_input_model_exit_3(models, folders, tmp_path, capsys):
    rc = _export(models["two_inputs"], folders["gray3"], tmp_path / "e")
    _one_line(capsys, 3, rc, "has 2 input(s) and 1 output(s)")


def test_standard_scale_without_mean_exit_2(models, folders, tmp_path, capsys):
    rc = _export(models["gray3"], folders["gray3"], tmp_path / "e", "--scale", "standard")
    _one_line(capsys, 2, rc, "--scale standard needs --mean and --std")


def test_standard_scale_with_wrong_channel_count_exit_2(models, folders, tmp_path, capsys):
    rc = _export(models["gray3"], folders["gray3"], tmp_path / "e", "--scale", "standard", "--mean", "0.1", "0.2",
                 "--std", "0.3")
    _one_line(capsys, 2, rc, "--mean takes 1 value for grayscale (1 channel) images, got 2")


def test_no_such_dataset_exit_3(models, tmp_path, capsys):
    rc = _export(models["gray3"], tmp_path / "nowhere", tmp_path / "e")
    _one_line(capsys, 3, rc, "no such file or directory")


def test_not_a_dataset_exit_3(models, tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("a,b\n")
    rc = _export(models["gray3"], tmp_path / "labels.csv", tmp_path / "e")
    _one_line(capsys, 3, rc, "not a dataset this toolkit reads", ".npz")


def test_npz_without_the_keras_keys_exit_3(models, tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, SIZE, SIZE), np.uint8))
    rc = _export(models["gray3"], tmp_path / "bad.npz", tmp_path / "e")
    _one_line(capsys, 3, rc, "lacks x_train, y_train, x_test, y_test")


def test_corrupt_image_is_named_exit_3(models, folders, tmp_path, capsys):
    import shutil

    d = shutil.copytree(folders["gray3"], tmp_path / "d")
    bad = sorted((d / "test" / "b").iterdir())[0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG")
    rc = _export(models["gray3"], d, tmp_path / "e")
    _one_line(capsys, 3, rc, "cannot decode image", bad.name)


def test_an_image_of_another_size_is_named_exit_2(models, folders, tmp_path, capsys):
    import shutil

    d = shutil.copytree(folders["gray3"], tmp_path / "d")
    odd = d / "test" / "c" / "odd.png"
    Image.fromarray(np.zeros((12, 12), np.uint8), "L").save(odd)
    rc = _export(models["gray3"], d, tmp_path / "e")
    _one_line(capsys, 2, rc, "odd.png is 12x12", "16x16", "--resize")


def test_train_and_test_folders_must_come_together(models, tmp_path, capsys):
    write_folder(tmp_path / "d", ["a", "b", "c"], 4, 2, SIZE, 1)
    import shutil

    shutil.rmtree(tmp_path / "d" / "test")
    rc = _export(models["gray3"], tmp_path / "d", tmp_path / "e")
    _one_line(capsys, 3, rc, "has train/ but not test/")


# ----------------------------------------------------------------------------- partial success
def _gelu_model(k, x, y):
    """GELU, the activation of ViTs and ConvNeXt. LiteRT has a GELU builtin with int8 kernels, OpenVINO a
    Gelu op; TFLM's
    op resolver has no GELU kernel; and Keras 3 computes the exact GELU with Erfc, which tf2onnx has
    no ONNX mapping for (it only logs that and writes a graph onnxruntime cannot load)."""
    L = k.layers
    m = k.Sequential([k.Input((SIZE, SIZE, 1)), L.Flatten(), L.Dense(24, activation="gelu"), L.Dense(4)],
                     name="gelu_mlp")
    return fit(m, x / 255.0, y)


def _lstm_model(k, x, y):
    """The classic 'MNIST with an RNN' classifier: an LSTM reads the image row by row. With a dynamic
    batch the TFLite converter cannot lower its TensorList ops to builtins; tf2onnx maps it to ONNX."""
    L = k.layers
    m = k.Sequential([k.Input((SIZE, SIZE)), L.LSTM(16), L.Dense(4)], name="row_lstm")
    return fit(m, x[..., 0] / 255.0, y, epochs=5)


def test_gelu_model_lands_in_litert_but_not_tflm_or_onnx_exit_7(k, tmp_path, capsys):
    data = write_npz(tmp_path / "d.npz", 4, 160, 40, SIZE, channels=1)
    x, y = make_images(160, 4, SIZE, 1, seed=0)
    model = _save(_gelu_model(k, x, y), tmp_path / "gelu.keras")
    exports = tmp_path / "e"
    rc = main(["export", "--model", str(model), "--dataset", str(data), "--exports", str(exports)])
    captured = capsys.readouterr()
    assert rc == 7
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("toolkit export: error: 3 of 9 variant(s) could not be exported "
                          "(onnx, onnx-int8, tflite-micro); the others were committed")
    assert "tflite-micro: not exported (op-check): TFLM cannot run the model: TFLM has no kernel for op(s) GELU" \
        in captured.out
    assert "onnx: not exported (op-check): ONNX opset 17 has no tf2onnx conversion for op(s) Erfc" in captured.out
    manifest = json.loads((exports / "manifest.json").read_text())
    assert [e["variant"] for e in manifest["artifacts"]] == ["tflite", "tflite-fp16", "tflite-dynamic", "tflite-int8",
                                                             "openvino", "openvino-fp16"]
    failed = {f["variant"]: f for f in manifest["failed"]}
    assert set(failed) == {"onnx", "onnx-int8", "tflite-micro"}
    assert all(f["stage"] == "op-check" for f in failed.values())
    assert failed["tflite-micro"]["unsupported_ops"] == ["GELU"] and failed["onnx"]["unsupported_ops"] == ["Erfc"]
    support = manifest["op_support"]
    assert support["tflite"]["supported"] and not support["onnx"]["supported"]
    assert not support["tflite-micro"]["supported"]
    assert "GELU" in next(e for e in manifest["artifacts"] if e["variant"] == "tflite-int8")["ops"]
    assert main(["verify", "--exports", str(exports)]) == 0
    assert main(["parity", "--exports", str(exports)]) == 0
    assert main(["footprint", "--exports", str(exports)]) == 0  # tflite-int8 noted as not runnable on TFLM
    fp = json.loads((exports / "footprint.json").read_text())
    assert "TFLM cannot run it" in fp["variants"][0]["note"]


def test_lstm_model_lands_only_in_onnx_exit_7(k, tmp_path, capsys):
    data = write_folder(tmp_path / "d", ["a", "b", "c", "d"], 30, 10, SIZE, 1)
    x, y = make_images(120, 4, SIZE, 1, seed=0)
    model = _save(_lstm_model(k, x, y), tmp_path / "lstm.keras")
    exports = tmp_path / "e"
    rc = main(["export", "--model", str(model), "--dataset", str(data), "--exports", str(exports)])
    assert rc == 7
    manifest = json.loads((exports / "manifest.json").read_text())
    landed = [e["variant"] for e in manifest["artifacts"]]
    assert "onnx" in landed and not any(v.startswith("tflite") for v in landed)
    failed = {f["variant"]: f for f in manifest["failed"]}
    assert set(failed) >= {"tflite", "tflite-fp16", "tflite-dynamic", "tflite-int8", "tflite-micro"}
    assert "tf.TensorListReserve" in failed["tflite"]["unsupported_ops"]
    assert failed["tflite"]["reason"].startswith("TFLite float32 conversion failed: LiteRT builtins cannot express")
    assert "Traceback" not in capsys.readouterr().err
    assert main(["verify", "--exports", str(exports)]) == 0


def test_nothing_exportable_keeps_the_previous_export(k, tmp_path, capsys):
    from conftest import snapshot

    data = write_folder(tmp_path / "d", ["a", "b", "c", "d"], 30, 10, SIZE, 1)
    x, y = make_images(120, 4, SIZE, 1, seed=0)
    model = _save(_lstm_model(k, x, y), tmp_path / "lstm.keras")
    exports = tmp_path / "e"
    assert main(["export", "--model", str(model), "--dataset", str(data), "--exports", str(exports),
                 "--format", "onnx", "--quantize", "none"]) == 0
    before = snapshot(exports)
    rc = main(["export", "--model", str(model), "--dataset", str(data), "--exports", str(exports), "--force",
               "--format", "tflite"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and err[-1].startswith("toolkit export: error: no variant could be exported")
    assert snapshot(exports) == before
