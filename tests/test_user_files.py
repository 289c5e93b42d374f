"""Users' odd files: decoded by a documented rule that keeps their information, or refused in one
line naming the file (exit 2 or 3, never a traceback), with the previous export byte-identical.

The worst outcome is a pass on data the toolkit changed: 16-bit greyscale PNGs used to reach the
model as white images (Pillow's convert("L") clips every 16-bit value above 255), and export and
parity passed every gate on them. The first tests pin that the same pictures at 8 and 16 bits (and
as palette, alpha and CMYK files) give the same predictions.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import snapshot
from PIL import Image
from userdata import fit, make_images, write_folder

from toolkit.cli import main

SIZE = 16


@pytest.fixture(scope="module")
def k():
    from toolkit._quiet import keras

    return keras()


@pytest.fixture(scope="module")
def gray(tmp_path_factory, k):
    """An 8-bit greyscale folder (3 classes) and a model trained on it with plain Keras."""
    root = tmp_path_factory.mktemp("files")
    data = write_folder(root / "gray8", ["a", "b", "c"], 20, 8, SIZE, 1)
    x, y = make_images(60, 3, SIZE, 1, seed=0)
    L = k.layers
    model = fit(k.Sequential([k.Input((SIZE, SIZE, 1)), L.Flatten(), L.Dense(16, activation="relu"), L.Dense(3)]),
                x / 255.0, y)
    path = root / "gray.keras"
    model.save(path)
    return data, path


def _rewrite(src, dest, convert) -> None:
    """The same pictures, each saved again by ``convert(8-bit L image, path)``."""
    for f in sorted(src.rglob("*.png")):
        out = dest / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as img:
            convert(img.convert("L"), out)


def _as_16bit(img, out):
    Image.fromarray(np.asarray(img).astype(np.uint16) * 257).save(out)  # 0..255 -> 0..65535, mode I;16


CONVERSIONS = {
    "16-bit greyscale (I;16)": _as_16bit,
    "palette (P)": lambda img, out: img.convert("P").save(out),
    "greyscale with alpha (LA)": lambda img, out: img.convert("LA").save(out),
    "RGBA": lambda img, out: img.convert("RGBA").save(out),
}


def _export_and_check(model, data, exports) -> dict:
    # --color-mode grayscale: RGBA files are colour files (luma of equal channels is the grey itself)
    assert main(["export", "--model", str(model), "--dataset", str(data), "--exports", str(exports), "--format",
                 "tflite", "--quantize", "none", "int8", "--color-mode", "grayscale", "--quiet"]) == 0
    assert main(["parity", "--exports", str(exports), "--quiet"]) == 0
    return json.loads((exports / "parity.json").read_text())


@pytest.mark.parametrize("kind", list(CONVERSIONS))
def test_the_same_pictures_in_another_mode_give_the_same_predictions(gray, kind, tmp_path):
    data8, model = gray
    other = tmp_path / "other"
    _rewrite(data8, other, CONVERSIONS[kind])
    if kind.startswith("16-bit"):
        with Image.open(next(other.rglob("*.png"))) as img:
            assert img.mode == "I;16"  # really 16-bit on disk
    base, changed = _export_and_check(model, data8, tmp_path / "e8"), _export_and_check(model, other, tmp_path / "e")
    assert base["reference"]["accuracy"] >= 0.9  # a model that really classifies these pictures
    for name in ("reference", "variants"):
        assert json.dumps(changed[name]["accuracy"] if name == "reference" else
                          {v: m["accuracy"] for v, m in changed[name].items()}) == json.dumps(
            base[name]["accuracy"] if name == "reference" else {v: m["accuracy"] for v, m in base[name].items()})
    # and the calibration saw the same pixels: the int8 model is the same bytes
    m8, m16 = (json.loads((d / "manifest.json").read_text()) for d in (tmp_path / "e8", tmp_path / "e"))
    sha = lambda m: {e["variant"]: e["sha256"] for e in m["artifacts"]}  # noqa: E731
    assert sha(m8)["tflite-int8"] == sha(m16)["tflite-int8"]


def test_16bit_values_are_scaled_not_clipped(tmp_path):
    from toolkit.datasets.folder import to_8bit

    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as img:
        assert np.asarray(to_8bit(img, 1, "a.png")).tolist() == [[0, 1, 128, 255]]
        assert np.asarray(to_8bit(img, 3, "a.png"))[0, 2].tolist() == [128, 128, 128]


def test_resize_resizes_the_one_odd_image_among_model_sized_ones(gray, tmp_path, capsys):
    data8, model = gray
    data = tmp_path / "d"
    shutil.copytree(data8, data)
    odd = next((data / "test" / "b").glob("*.png"))
    with Image.open(odd) as img:
        img.resize((20, 24)).save(odd)
    rc = main(["export", "--model", str(model), "--dataset", str(data), "--exports", str(tmp_path / "e"),
               "--format", "tflite", "--quantize", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and str(odd) in err[-1] and "--resize" in err[-1]
    assert main(["export", "--model", str(model), "--dataset", str(data), "--exports", str(tmp_path / "e"),
                 "--format", "tflite", "--quantize", "none", "--resize", "--quiet"]) == 0
    assert main(["parity", "--exports", str(tmp_path / "e"), "--quiet"]) == 0
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["preprocessing"]["resize"] is True


def _one_line(capsys, rc, code, command, *needles) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code, err
    assert err and err[-1].startswith(f"toolkit {command}: error: "), err
    assert not any("Traceback" in line for line in err), err
    for needle in needles:
        assert needle in err[-1], (needle, err[-1])
    return err[-1]


@pytest.fixture
def exported(gray, tmp_path):
    """An export of the 8-bit folder, to check that a failed export leaves it byte-identical."""
    data8, model = gray
    exports = tmp_path / "e"
    assert main(["export", "--model", str(model), "--dataset", str(data8), "--exports", str(exports), "--format",
                 "tflite", "--quantize", "none", "--quiet"]) == 0
    return exports, snapshot(exports)


def _bad_copy(gray, tmp_path, where: str, make) -> tuple:
    """A copy of the folder with one bad file in ``where`` (train: in the split export calibrates on,
    not in the 10% validation split, which export does not read)."""
    from toolkit.datasets.base import validation_split

    data8, _ = gray
    data = tmp_path / "bad"
    shutil.copytree(data8, data)
    existing = sorted(str(p) for p in (data / where).rglob("*.png"))
    for name in ("zz-bad.png", "aa-bad.png", "m-bad.png", "0-bad.png"):
        target = data / where / "a" / name
        position = sorted([*existing, str(target)]).index(str(target))
        if where != "train" or position not in validation_split(len(existing) + 1)[1]:
            break
    make(target)
    return data, target


BAD = {
    "decompression bomb (14000x14000)": (lambda p: Image.new("L", (14000, 14000)).save(p), "too large to decode"),
    "dangling link": (lambda p: os.symlink(p.parent / "gone.png", p), "which does not exist"),
    "empty file": (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    "truncated PNG": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"), "cannot decode image"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("where", ["train", "test"])
def test_a_bad_file_is_one_line_naming_it_and_the_export_is_untouched(gray, exported, tmp_path, capsys, case, where):
    _, model = gray
    exports, before = exported
    data, bad = _bad_copy(gray, tmp_path, where, BAD[case][0])
    # train: the calibration images (1000 asked: every image of the fit split); test: export's check images
    rc = main(["export", "--model", str(model), "--dataset", str(data), "--exports", str(exports), "--force",
               "--format", "tflite", "--calibration-samples", "1000"])
    _one_line(capsys, rc, 3, "export", str(bad), BAD[case][1])
    assert snapshot(exports) == before


@pytest.mark.parametrize("case", list(BAD))
def test_train_on_a_folder_with_a_bad_file_is_one_line(gray, tmp_path, capsys, case):
    data, bad = _bad_copy(gray, tmp_path, "train", BAD[case][0])
    rc = main(["train", "--dataset", str(data), "--exports", str(tmp_path / "t"), "--arch", "softmax", "--epochs", "1",
               "--quiet"])
    _one_line(capsys, rc, 3, "train", str(bad), BAD[case][1])
    assert not (tmp_path / "t" / "model.keras").exists()


@pytest.mark.slow  # ~30 s: a dynamic-size model through every format
def test_a_model_of_any_height_and_width_needs_input_size(k, gray, tmp_path, capsys):
    data8, _ = gray
    L = k.layers
    x, y = make_images(60, 3, SIZE, 3, seed=0)
    k.utils.set_random_seed(0)  # the initial weights too: run alone or after other tests, the same model
    model = k.Sequential([k.Input((None, None, 3)), L.Conv2D(8, 3, activation="relu"), L.GlobalAveragePooling2D(),
                          L.Dense(3)])
    fit(model, x / 255.0, y, epochs=30)
    path = tmp_path / "dynamic.keras"
    model.save(path)
    args = ["export", "--model", str(path), "--dataset", str(data8), "--exports", str(tmp_path / "e"),
            "--color-mode", "rgb", "--quantize", "none", "int8"]
    _one_line(capsys, main(args), 2, "export", "takes images of any height and width", "--input-size 16x16")
    assert not (tmp_path / "e").exists()  # a failed export into a new directory leaves nothing behind
    assert main([*args, "--input-size", "16x16", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["model"]["input_shape"] == [16, 16, 3]
    assert "--input-size 16x16" in manifest["model"]["fixed_at_export"]
    assert all(e["inputs"][0]["shape"][1:] == [16, 16, 3] for e in manifest["artifacts"])
    # the classes differ by where a patch lies, which a model that pools over any size cannot see: its scores are
    # near-ties (chance accuracy), on which int8's argmax flips, so parity's int8 gates say nothing here (they failed
    # or passed with the order tests ran in). The float files must match Keras; every file is rebuilt by verify.
    assert main(["parity", "--exports", str(tmp_path / "e"), "--variants", "tflite", "onnx", "--quiet"]) == 0
    assert main(["verify", "--exports", str(tmp_path / "e"), "--rebuild"]) == 0


def test_input_size_on_a_fixed_size_model_is_refused(gray, tmp_path, capsys):
    data8, model = gray
    rc = main(["export", "--model", str(model), "--dataset", str(data8), "--exports", str(tmp_path / "e"),
               "--input-size", "32x32"])
    _one_line(capsys, rc, 2, "export", "--input-size applies to models that take any height and width",
              "takes 16x16 images")


def test_savedmodel_directory_and_h5_get_what_to_do(k, gray, tmp_path, capsys):
    data8, model_path = gray
    model = k.models.load_model(model_path)
    model.export(tmp_path / "saved")  # a TensorFlow SavedModel directory
    rc = main(["export", "--model", str(tmp_path / "saved"), "--dataset", str(data8), "--exports", str(tmp_path / "e")])
    _one_line(capsys, rc, 3, "export", "is a TensorFlow SavedModel directory", "model.save('model.keras')")
    model.save(tmp_path / "m.h5")
    rc = main(["export", "--model", str(tmp_path / "m.h5"), "--dataset", str(data8), "--exports", str(tmp_path / "e")])
    _one_line(capsys, rc, 3, "export", "legacy HDF5 Keras file", "re-save it once")
    assert not (tmp_path / "e").exists()
