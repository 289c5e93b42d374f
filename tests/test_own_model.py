"""Your own model and your own data: Keras classifiers that toolkit/model.py does not define,
on an image folder and an .npz made here, through export, parity, bench, verify and run.

The four models cover what users bring: Sequential and functional; inputs (H, W) without a
channel axis (the TensorFlow quickstart), (H, W, 1), (H, W, 3) and flat; softmax and logits
outputs; 3, 4, 5 and 12 classes; one with its own Rescaling layer (it takes raw 0..255 pixels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from userdata import fit, make_images, write_folder, write_npz

from toolkit.cli import main

SIZE = 16
GRAY_CLASSES = ["cat", "dog", "fox"]
RGB_CLASSES = ["apple", "banana", "cherry", "date", "elderberry"]
NPZ12_CLASSES = [f"glyph-{chr(ord('a') + k)}" for k in range(12)]
ALL = ["tflite", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx", "onnx-int8", "tflite-micro", "openvino",
       "openvino-fp16"]


@dataclass
class Case:
    name: str
    model: Path
    dataset: Path
    kind: str
    classes: list[str]
    output: str
    input_shape: list
    scale: str
    test_x: np.ndarray  # the test images as the user's own pipeline feeds the model
    test_y: np.ndarray


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("userdata")
    return {
        "gray": write_folder(root / "gray", GRAY_CLASSES, 60, 20, SIZE, 1, seed=0),
        "rgb": write_folder(root / "rgb", RGB_CLASSES, 40, 12, SIZE, 3, seed=10),
        "npz4": write_npz(root / "four.npz", 4, 240, 80, SIZE, channels=None, seed=20),
        "npz12": write_npz(root / "twelve.npz", 12, 480, 120, SIZE, channels=1, class_names=NPZ12_CLASSES, seed=30),
        "root": root,
    }


def _quickstart(k):
    """Sequential, (H, W) input, softmax output: the TensorFlow beginner quickstart's shape."""
    L = k.layers
    return k.Sequential([k.Input((SIZE, SIZE)), L.Flatten(), L.Dense(32, activation="relu"),
                         L.Dense(len(GRAY_CLASSES), activation="softmax")], name="quickstart")


def _rgb_rescaling(k):
    """Functional, (H, W, 3) input with its own Rescaling layer, logits out."""
    L = k.layers
    x = inp = k.Input((SIZE, SIZE, 3), name="pixels")
    x = L.Rescaling(1 / 255.0)(x)
    x = L.Conv2D(8, 3, activation="relu")(x)
    x = L.MaxPooling2D()(x)
    out = L.Dense(len(RGB_CLASSES))(L.Flatten()(x))
    return k.Model(inp, out, name="rgb_rescaling")


def _flat(k):
    """Functional, flat (H*W) input, logits out."""
    L = k.layers
    inp = k.Input((SIZE * SIZE,), name="vector")
    return k.Model(inp, L.Dense(4)(L.Dense(32, activation="relu")(inp)), name="flat_mlp")


def _conv_softmax(k):
    """Sequential, (H, W, 1) input, 12 classes, softmax."""
    L = k.layers
    return k.Sequential([k.Input((SIZE, SIZE, 1)), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(),
                         L.Flatten(), L.Dense(12, activation="softmax")], name="conv_softmax")


@pytest.fixture(scope="module")
def cases(data, tmp_path_factory) -> dict[str, Case]:
    from toolkit._quiet import keras

    k = keras()
    root = tmp_path_factory.mktemp("usermodels")
    out = {}

    def save(model, name):
        path = root / f"{name}.keras"
        model.save(path)
        return path

    # the images each folder/npz was written from, regenerated as a user's pipeline would hold them
    x, y = make_images(60 * 3, 3, SIZE, 1, seed=0)
    tx, ty = make_images(20 * 3, 3, SIZE, 1, seed=1)
    m = fit(_quickstart(k), x[..., 0] / 255.0, y, from_logits=False)
    out["quickstart"] = Case("quickstart", save(m, "quickstart"), data["gray"], "folder", GRAY_CLASSES,
                             "probabilities", [SIZE, SIZE], "unit", tx[..., 0] / 255.0, ty)
    x, y = make_images(40 * 5, 5, SIZE, 3, seed=10)
    tx, ty = make_images(12 * 5, 5, SIZE, 3, seed=11)
    m = fit(_rgb_rescaling(k), x.astype(np.float32), y)
    out["rgb_rescaling"] = Case("rgb_rescaling", save(m, "rgb_rescaling"), data["rgb"], "folder", RGB_CLASSES,
                                "logits", [SIZE, SIZE, 3], "raw", tx.astype(np.float32), ty)
    x, y = make_images(240, 4, SIZE, 1, seed=20)
    tx, ty = make_images(80, 4, SIZE, 1, seed=21)
    m = fit(_flat(k), x.reshape(len(x), -1) / 255.0, y)
    out["flat_mlp"] = Case("flat_mlp", save(m, "flat_mlp"), data["npz4"], "npz", ["0", "1", "2", "3"], "logits",
                           [SIZE * SIZE], "unit", tx.reshape(len(tx), -1) / 255.0, ty)
    x, y = make_images(480, 12, SIZE, 1, seed=30)
    tx, ty = make_images(120, 12, SIZE, 1, seed=31)
    m = fit(_conv_softmax(k), x / 255.0, y, from_logits=False, epochs=25)
    out["conv_softmax"] = Case("conv_softmax", save(m, "conv_softmax"), data["npz12"], "npz", NPZ12_CLASSES,
                               "probabilities", [SIZE, SIZE, 1], "unit", tx / 255.0, ty)
    return out


class _Runs(dict):
    """`toolkit run --model M --dataset D --quick` per case, made on first use (a deselected case costs nothing)."""

    def __init__(self, cases, tmp_path_factory):
        super().__init__()
        self.cases, self.tmp = cases, tmp_path_factory

    def __missing__(self, name):
        case = self.cases[name]
        exports = self.tmp.mktemp(f"run-{name}")
        # every variant's runtimes, without OpenVINO's bf16 second pass over each (tests/test_bench.py has it)
        rc = main(["run", "--model", str(case.model), "--dataset", str(case.dataset), "--exports", str(exports),
                   "--quick", "--runtimes", "litert", "onnxruntime", "tflm", "tensorflow", "openvino"])
        self[name] = (rc, exports)
        return self[name]


@pytest.fixture(scope="module")
def runs(cases, tmp_path_factory):
    return _Runs(cases, tmp_path_factory)


@pytest.fixture(scope="module")
def rgb_export(cases, tmp_path_factory) -> Path:
    """The RGB folder model (its own Rescaling: raw pixels) exported to the four files the commands below read,
    with parity (`toolkit run` on it, every variant, is the slow test above)."""
    case, exports = cases["rgb_rescaling"], tmp_path_factory.mktemp("rgb-export")
    assert main(["export", "--model", str(case.model), "--dataset", str(case.dataset), "--exports", str(exports),
                 "--format", "tflite", "onnx", "--quantize", "none", "int8", "--quiet"]) == 0
    return exports


# two cases in the default suite (about a minute each); all four with -m slow
_SLOW = pytest.mark.slow
# the RGB folder model runs `toolkit run` behind the slow marker (the default suite's time): its folder source and
# RGB preprocessing are checked in tests/test_user_files.py and tests/test_sources.py
NAMES = ["quickstart", pytest.param("rgb_rescaling", marks=_SLOW), pytest.param("flat_mlp", marks=_SLOW),
         pytest.param("conv_softmax", marks=_SLOW)]


@pytest.mark.parametrize("name", NAMES)
def test_run_takes_the_model_through_everything(name, cases, runs):
    case = cases[name]
    rc, exports = runs[name]
    assert rc == 0
    manifest = json.loads((exports / "manifest.json").read_text())
    assert [e["variant"] for e in manifest["artifacts"]] == ALL and manifest["failed"] == []
    assert manifest["model"]["input_shape"] == case.input_shape
    assert manifest["model"]["classes"] == len(case.classes) and manifest["model"]["output"] == case.output
    assert manifest["dataset"]["kind"] == case.kind and manifest["dataset"]["class_names"] == case.classes
    assert len(manifest["dataset"]["fingerprint"]["sha256"]) == 64
    assert manifest["preprocessing"]["scale"] == case.scale
    for e in manifest["artifacts"]:
        batch = 1 if e["format"] == "tflite-micro" else None
        assert e["inputs"][0]["shape"] == [batch, *case.input_shape]
        assert e["outputs"][0]["shape"] == [batch, len(case.classes)]
    parity = json.loads((exports / "parity.json").read_text())
    # a few dozen test images: gates may be inconclusive (the images cannot tell), never failed
    assert parity["verdict"] != "fail", {n: [g for g in v["gates"] if g["status"] == "fail"]
                                         for n, v in parity["variants"].items()}
    assert parity["class_names"] == case.classes and parity["reference"]["output"] == case.output
    assert parity["dataset"]["fingerprint"] == manifest["dataset"]["fingerprint"] and parity["dataset_matches_export"]
    assert set(parity["variants"]) == set(ALL)
    md = (exports / "parity.md").read_text()
    assert all(f"| {c} |" in md for c in case.classes)  # the per-class table names the classes
    bench = json.loads((exports / "bench.json").read_text())
    assert {r["variant"] for r in bench["results"]} == {*ALL, "keras"}
    report = (exports / "report.md").read_text()
    assert f"it outputs **{case.output}**" in report and manifest["preprocessing"]["description"] in report
    assert main(["verify", "--exports", str(exports)]) == 0


@pytest.mark.parametrize("name", NAMES)
def test_reference_accuracy_matches_the_users_own_evaluation(name, cases, runs):
    """The toolkit's preprocessing feeds the model what the user's own pipeline feeds it: the
    reference accuracy equals plain Keras on the same test images, prepared without toolkit code."""
    from toolkit._quiet import keras

    case = cases[name]
    model = keras().saving.load_model(case.model)
    accuracy = float((np.asarray(model(case.test_x.astype(np.float32))).argmax(1) == case.test_y).mean())
    parity = json.loads((runs[name][1] / "parity.json").read_text())
    assert parity["reference"]["images"] == len(case.test_y)
    assert parity["reference"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert accuracy >= 0.9  # the model learned the task: the checks above are about a working model


def test_bench_and_parity_commands_on_a_user_export(rgb_export):
    exports = rgb_export
    assert main(["parity", "--exports", str(exports), "--variants", "tflite-int8", "onnx-int8",
                 "--json", str(exports / "int8.json")]) == 0
    doc = json.loads((exports / "int8.json").read_text())
    assert doc["preprocessing"]["scale"] == "raw" and doc["dataset"]["kind"] == "folder"
    assert main(["bench", "--exports", str(exports), "--variants", "tflite-int8", "--batch-sizes", "1,4",
                 "--threads", "1", "--min-runs", "5", "--min-seconds", "0", "--warmup", "1", "--warmup-seconds", "0",
                 "--no-plots", "--json", str(exports / "b.json")]) == 0
    rows = json.loads((exports / "b.json").read_text())["results"]
    from toolkit.runners.openvino import cpu_has_bf16

    runtimes = ["litert", "openvino", *(["openvino-bf16"] if cpu_has_bf16() else [])]  # OpenVINO's default there
    assert [(r["batch_size"], r["runtime"]) for r in rows] == [(b, rt) for rt in runtimes for b in (1, 4)]


def test_a_moved_reference_model_is_found_with_model(cases, rgb_export, tmp_path):
    exports = rgb_export
    moved = tmp_path / "moved.keras"
    moved.write_bytes(cases["rgb_rescaling"].model.read_bytes())
    assert main(["parity", "--exports", str(exports), "--model", str(moved), "--variants", "onnx",
                 "--json", str(tmp_path / "p.json")]) == 0
    assert main(["parity", "--exports", str(exports), "--model", str(cases["quickstart"].model)]) == 3


def test_parity_decodes_each_test_image_once_a_batch_at_a_time(cases, runs, monkeypatch, tmp_path):
    """Memory bounded by the batch: every runner sees each batch while it is decoded; no image is
    decoded twice (except the few shown in the disagreement plot) and no batch exceeds --batch-size."""
    from toolkit.datasets import folder

    decoded, batches = [], []
    real_decode, real_reader = folder._decode, folder._file_reader

    def counting_reader(files, channels, size):
        read = real_reader(files, channels, size)

        def wrapped(idx, c, s):
            batches.append(len(idx))
            return read(idx, c, s)

        return wrapped

    monkeypatch.setattr(folder, "_decode", lambda path, *a: decoded.append(path) or real_decode(path, *a))
    monkeypatch.setattr(folder, "_file_reader", counting_reader)
    _, exports = runs["quickstart"]
    assert main(["parity", "--exports", str(exports), "--images-per-call", "7", "--json", str(tmp_path / "p.json")]) == 0
    parity = json.loads((tmp_path / "p.json").read_text())
    n = parity["reference"]["images"]
    shown = sum(v["disagreements"] for v in parity["variants"].values())
    assert len(decoded) - len(set(decoded)) <= shown
    assert len(set(decoded)) == n and max(batches) <= max(7, shown)  # the plot reads its few images at once


def test_train_on_a_folder_then_export_without_naming_it_again(data, tmp_path):
    """`toolkit train --dataset DIR` builds the architecture for the images' size and the folder's
    classes, streams the folder, is reproducible, and export reads the dataset from train.json."""
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    for out in (out_a, out_b):
        assert main(["train", "--arch", "mlp", "--dataset", str(data["gray"]), "--epochs", "1", "--exports", str(out)]) == 0
    a = json.loads((out_a / "train.json").read_text())
    assert a["model"]["weights_sha256"] == json.loads((out_b / "train.json").read_text())["model"]["weights_sha256"]
    assert a["dataset"]["kind"] == "folder" and a["dataset"]["class_names"] == GRAY_CLASSES
    assert a["data"]["train_images"] == 162 and a["dataset"]["splits"]["validation"] == 18  # 10% held out
    assert main(["export", "--exports", str(out_a), "--format", "tflite", "--quantize", "none"]) == 0
    manifest = json.loads((out_a / "manifest.json").read_text())
    assert manifest["dataset"]["fingerprint"] == a["dataset"]["fingerprint"]
    assert manifest["model"]["input_shape"] == [SIZE, SIZE, 1] and manifest["model"]["classes"] == 3


def test_training_preprocessing_carries_over_to_export(data, tmp_path):
    out = tmp_path / "m"
    assert main(["train", "--arch", "softmax", "--dataset", str(data["npz4"]), "--epochs", "1", "--scale",
                 "symmetric", "--exports", str(out)]) == 0
    assert json.loads((out / "train.json").read_text())["preprocessing"]["scale"] == "symmetric"
    assert main(["export", "--exports", str(out), "--format", "onnx", "--quantize", "none"]) == 0
    assert json.loads((out / "manifest.json").read_text())["preprocessing"]["scale"] == "symmetric"
    assert main(["parity", "--exports", str(out)]) == 0


@pytest.mark.parametrize("variant", ["tflite-int8", "onnx-int8"])
def test_diagnose_on_a_user_model_with_a_scalar_weight(variant, rgb_export, capsys):
    """The Rescaling layer's scale is a 0-d weight, which onnxruntime's compute_weight_error fails on."""
    exports = rgb_export
    assert main(["parity", "--exports", str(exports), "--diagnose", variant]) == 0
    doc = json.loads((exports / f"diagnose-{variant}.json").read_text())
    assert doc["worst_layer"] and doc["debug_images"] == 60
    assert any("conv2d" in row["layer"] for row in doc["layers"])
