"""The parity suite (`-m parity`, part of the default run): gates on a quickly trained model,
a deliberately broken artifact, and agreement with an independent evaluation."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from toolkit import artifacts
from toolkit.cli import main
from toolkit.config import ParityConfig
from toolkit.parity import run_parity
from toolkit.provenance import sha256_file

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def parity_doc(quick_parity) -> dict:
    """parity.json of one full `toolkit parity` of the quick export (conftest.py; the gate's baseline reads it too)."""
    return json.loads((quick_parity / "parity.json").read_text())


def test_every_variant_passes_its_gates(parity_doc):
    assert set(parity_doc["variants"]) == {"tflite", "tflite-fp16", "tflite-dynamic", "tflite-int8",
                                           "onnx", "onnx-int8", "tflite-micro", "openvino", "openvino-fp16"}
    failures = [(name, g) for name, v in parity_doc["variants"].items() for g in v["gates"] if g["status"] == "fail"]
    assert not failures
    assert parity_doc["passed"] is True and all(v["passed"] for v in parity_doc["variants"].values())
    for name in ("tflite", "onnx"):
        assert parity_doc["variants"][name]["max_abs_logit_diff"] < 1e-3


def test_full_test_set_and_statistics(parity_doc):
    ref = parity_doc["reference"]
    assert ref["images"] == 10_000
    for name, m in parity_doc["variants"].items():
        assert m["images"] == (1000 if name == "tflite-micro" else 10_000)  # TFLM: --micro-images
        lo, hi = m["accuracy_ci95"]
        assert lo <= m["accuracy"] <= hi
        dlo, dhi = m["accuracy_diff_ci95_points"]
        assert dlo - 1e-9 <= m["accuracy_diff_points"] <= dhi + 1e-9
        assert 0 <= m["mcnemar_p"] <= 1
        assert m["disagreements"] == round((1 - m["agreement"]) * m["images"])
        assert len(m["per_class_accuracy_diff_points"]) == 10


def _independent_tflite_accuracy(path: Path, images, labels) -> tuple[float, np.ndarray]:
    """Plain LiteRT, one image at a time, quantizing by hand: no toolkit code involved."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=path.read_bytes())
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zp = inp["quantization"]
    preds = []
    for img in images:
        x = np.clip(np.round(img[None] / scale) + zp, -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], x)
        it.invoke()
        preds.append(int(it.get_tensor(out["index"])[0].argmax()))
    preds = np.array(preds)
    return float((preds == labels).mean()), preds


def test_numbers_match_an_independent_evaluation(quick_parity, parity_doc, mnist):
    import onnxruntime as ort

    manifest = artifacts.read_manifest(quick_parity)
    paths = {e["variant"]: quick_parity / e["path"] for e in manifest["artifacts"]}
    acc, preds = _independent_tflite_accuracy(paths["tflite-int8"], mnist.test.images, mnist.test.labels)
    assert acc == parity_doc["variants"]["tflite-int8"]["accuracy"]
    with np.load(quick_parity / parity_doc["predictions_file"]) as saved:
        np.testing.assert_array_equal(preds, saved["variant:tflite-int8"])
    sess = ort.InferenceSession(str(paths["onnx-int8"]), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"image": mnist.test.images})[0]
    assert float((logits.argmax(1) == mnist.test.labels).mean()) == parity_doc["variants"]["onnx-int8"]["accuracy"]


def test_cli_writes_json_markdown_png(export_copy, data_dir, capsys):
    """The command's outputs and printed table (three variants: every variant's gates are the test above's)."""
    assert main(["parity", "--exports", str(export_copy), "--data-dir", str(data_dir), "--variants", "tflite",
                 "tflite-int8", "onnx-int8"]) == 0
    doc = json.loads((export_copy / "parity.json").read_text())
    assert doc["passed"] is True and doc["reference"]["accuracy"] > 0.96
    for name, v in doc["variants"].items():
        assert {"accuracy", "agreement", "disagreements", "max_abs_logit_diff", "passed"} <= set(v), name
    out = capsys.readouterr().out
    # every printed accuracy is the one in parity.json
    for name, v in doc["variants"].items():
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert f"{v['accuracy']:.2%}" in line and f" {v['bytes']:,} " in line  # and its deployable size
    md = (export_copy / "parity.md").read_text()
    assert "| tflite-int8 |" in md and "McNemar" in md
    png = (export_copy / "parity-disagreements.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def _break_input_scale(exports: Path) -> None:
    """Replace the float ONNX with one that multiplies its input by 255 (a model expecting
    0..255 pixels: the classic wrong-input-scale bug), and make the manifest agree."""
    import onnx
    from onnx import helper, numpy_helper

    manifest = artifacts.read_manifest(exports)
    entry = next(e for e in manifest["artifacts"] if e["variant"] == "onnx")
    path = exports / entry["path"]
    model = onnx.load(path)
    for node in model.graph.node:
        node.input[:] = ["image_scaled" if i == "image" else i for i in node.input]
    model.graph.initializer.append(numpy_helper.from_array(np.array(255.0, np.float32), "k255"))
    model.graph.node.insert(0, helper.make_node("Mul", ["image", "k255"], ["image_scaled"]))
    onnx.save(model, path)
    entry["bytes"], entry["sha256"] = path.stat().st_size, sha256_file(path)
    artifacts.atomic_write_json(exports / "manifest.json", manifest)


def test_broken_artifact_fails_gate_exit_4(export_copy, data_dir, capsys):
    _break_input_scale(export_copy)
    rc = main(["parity", "--exports", str(export_copy), "--data-dir", str(data_dir), "--variants", "onnx"])
    assert rc == 4
    err = capsys.readouterr().err
    assert "gate failed: onnx: agreement_percent" in err and "must be >= 99.95" in err
    doc = json.loads((export_copy / "parity.json").read_text())
    assert doc["passed"] is False and doc["variants"]["onnx"]["passed"] is False


def test_gate_override_flag(export_copy, data_dir, capsys):
    rc = main(["parity", "--exports", str(export_copy), "--data-dir", str(data_dir),
               "--variants", "tflite-int8", "--gate", "int8_min_agreement=100.01"])
    assert rc == 4
    assert "tflite-int8: agreement_percent" in capsys.readouterr().err
    assert main(["parity", "--exports", str(export_copy), "--gate", "nonsense=1"]) == 2


def test_edited_artifact_and_changed_model_exit_3(export_copy, data_dir, capsys):
    entry = artifacts.read_manifest(export_copy)["artifacts"][0]
    path = export_copy / entry["path"]
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert main(["parity", "--exports", str(export_copy), "--data-dir", str(data_dir)]) == 3
    assert "changed after export" in capsys.readouterr().err
    assert main(["verify", "--exports", str(export_copy)]) == 3
    path.write_bytes(original)
    assert main(["verify", "--exports", str(export_copy)]) == 0
    model = export_copy / "model.keras"
    model.write_bytes(model.read_bytes() + b"\0")
    assert main(["parity", "--exports", str(export_copy), "--data-dir", str(data_dir)]) == 3
    assert "changed since the export" in capsys.readouterr().err


@pytest.mark.full
def test_fully_trained_model_passes_every_gate(data_dir, mnist):
    """`pytest -m full`: the same gates against the fully trained export in exports/
    (or $TOOLKIT_EXPORTS)."""
    exports = Path(os.environ.get("TOOLKIT_EXPORTS", Path(__file__).resolve().parent.parent / "exports"))
    if not (exports / "manifest.json").is_file():
        pytest.fail(f"no export in {exports}: run `toolkit train && toolkit export` first")
    report = run_parity(ParityConfig(exports=exports, data_dir=data_dir, verbose=False))
    assert report.reference["accuracy"] >= 0.992
    assert not [(n, str(g)) for n, g in report.failures()]
    # and the int8 numbers agree exactly with an evaluation that uses no toolkit code
    test = mnist.test
    entry = next(e for e in artifacts.read_manifest(exports)["artifacts"] if e["variant"] == "tflite-int8")
    acc, preds = _independent_tflite_accuracy(exports / entry["path"], test.images, test.labels)
    assert acc == report.variants["tflite-int8"].metrics["accuracy"]
    np.testing.assert_array_equal(preds, report.variants["tflite-int8"].predictions)


@pytest.mark.parametrize("variant", ["tflite-int8", "onnx-int8"])
def test_diagnose_names_the_worst_layer(export_copy, data_dir, variant, capsys):
    assert main(["parity", "--exports", str(export_copy), "--data-dir", str(data_dir),
                 "--diagnose", variant]) == 0
    out = capsys.readouterr().out
    doc = json.loads((export_copy / f"diagnose-{variant}.json").read_text())
    assert doc["worst_layer"] and f"loses most: {doc['worst_layer']}" in out
    layers = doc["layers"]
    assert len(layers) >= 5
    assert any("conv2" in row["layer"] for row in layers)
    assert all("scale" in row for row in layers)
    worst = max(layers, key=lambda r: r["local_error"])
    assert worst["layer"] == doc["worst_layer"]
    # where the error comes from: the simulation of plain int8 stands for this (plain) file, and the two parts'
    # shares add up; the text names the part and its lever
    sources = doc["error_sources"]
    assert sources["same_class_as_file"] >= 0.98 and sources["images"] == 2000
    assert sources["weight_grid"] == ("-127..127" if variant == "tflite-int8" else "-64..64")
    assert set(sources["rows"]) == {"everything", "activations only", "weights only"}
    assert sources["activation_share"] + sources["weight_share"] == pytest.approx(1.0)
    assert f"the {sources['main']} cause" in out and "with the weights in float it would agree on" in out
    for part, cost in sources["costs"].items():  # points: the part in float minus everything quantized
        row = sources["rows"]["activations only" if part == "weights" else "weights only"]
        assert cost["points"] == pytest.approx(100 * (row["agreement"] - sources["rows"]["everything"]["agreement"]))
        assert cost["ci_points"][0] <= cost["points"] <= cost["ci_points"][1]
    if variant == "tflite-int8":
        # the table is about the model we shipped: the debugger's rebuild agrees with it
        assert doc["debug_model_agreement_with_artifact"] >= 0.99
        assert all(r["local_error"] >= 0 for r in layers)


def test_diagnose_refuses_float_variant(export_copy, capsys):
    assert main(["parity", "--exports", str(export_copy), "--diagnose", "tflite"]) == 2
    assert "int8 variants" in capsys.readouterr().err
