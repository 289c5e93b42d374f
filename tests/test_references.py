"""Models from PyTorch and ONNX (toolkit/references/): a small PyTorch CNN trained here on MNIST (depthwise and
pointwise convolutions, hard-swish, as MobileNets are written), saved with torch.export.save, and the same network
exported by PyTorch's own ONNX exporter (a file this toolkit did not make, NCHW input, weights in a .data file
beside it). Each goes through export, parity and bench; its float files must agree with it in its own framework on
the whole test set, and a file an exporter broke must not pass."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from userdata import torch_mnist_net

from toolkit.cli import main

torch = pytest.importorskip("torch")  # the [torch] extra ([dev] installs it)


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory, mnist):
    """(net.pt2, net.onnx): the same trained network, saved by torch.export and exported by torch.onnx."""
    pt2, onnx_path = torch_mnist_net(tmp_path_factory.mktemp("torch"), mnist.train.images, mnist.train.labels)
    assert onnx_path.with_name("net.onnx.data").is_file()  # its weights beside it: read from there
    return pt2, onnx_path


def _export(tmp, model: Path, *formats: str) -> tuple[int, dict]:
    out = tmp / "exports"
    code = main(["export", "--model", str(model), "--exports", str(out), "--format", *formats, "--quiet"])
    return code, json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def pt2_run(torch_models, tmp_path_factory) -> Path:
    """`toolkit run --model net.pt2 --quick` (four formats and three runtimes, for the suite's time): export,
    parity, bench and the report, as a Keras model gets them."""
    out = tmp_path_factory.mktemp("pt2") / "exports"
    code = main(["run", "--model", str(torch_models[0]), "--exports", str(out), "--quick", "--format", "onnx",
                 "openvino", "tflite", "tflite-micro", "--runtimes", "litert", "onnxruntime", "torch", "--quiet"])
    assert code == 0  # every variant exported, every parity gate passed, every benchmark row measured or skipped
    return out


def test_a_pytorch_model_runs_through_every_command_and_passes_parity_against_pytorch(pt2_run, mnist):
    manifest = json.loads((pt2_run / "manifest.json").read_text())
    model = manifest["model"]
    assert (model["framework"], model["data_format"], model["input_shape"]) == ("torch", "channels_first", [28, 28, 1])
    assert manifest["source_model"]["framework"] == "torch"
    entries = {e["variant"]: e for e in manifest["artifacts"]}
    assert set(entries) == {"tflite", "tflite-int8", "onnx", "onnx-int8", "openvino", "tflite-micro"}
    assert entries["onnx"]["inputs"][0]["shape"] == [None, 1, 28, 28]  # the model's own layout, kept
    # litert-torch's float file: NCHW too, its batch fixed at 1 (this network flattens: no symbolic batch there)
    assert entries["tflite"]["converter"].startswith("litert-torch") and entries["tflite"]["batch"] == "fixed at 1"
    assert entries["tflite"]["inputs"][0]["shape"] == [1, 1, 28, 28]
    # its int8 form from ai-edge-quantizer: int8 in and out, as the toolkit's other tflite-int8 files
    int8 = entries["tflite-int8"]
    assert int8["quantizer"].startswith("ai-edge-quantizer") and int8["inputs"][0]["dtype"] == "int8"

    parity = json.loads((pt2_run / "parity.json").read_text())
    assert parity["reference"]["framework"] == "torch" and parity["reference"]["runtime"] == "torch"
    assert parity["reference"]["accuracy"] > 0.9
    for name in ("tflite", "onnx", "openvino"):  # every float file agrees with PyTorch eager on the whole test set
        v = parity["variants"][name]
        assert v["agreement"] >= 0.9995 and v["max_abs_logit_diff"] < 1e-3, (name, v)
    for name in ("tflite-int8", "onnx-int8"):  # judged by the same gates as a Keras model's int8
        v = parity["variants"][name]
        assert {(g["metric"], g["bound"]) for g in v["gates"]} == {("accuracy_loss_points", 0.3),
                                                                   ("agreement_percent", 99.5)}, v["gates"]
        assert v["verdict"] in ("pass", "inconclusive"), (name, v["gates"])
    assert parity["variants"]["tflite-micro"]["verdict"] in ("pass", "inconclusive")

    # bench: PyTorch eager is the reference row; a file whose batch is fixed at 1 is timed at batch 1 and its
    # batch 32 is a skip that says why, not a failed row
    bench = json.loads((pt2_run / "bench.json").read_text())
    rows = {(r["variant"], r["runtime"], r["batch_size"]) for r in bench["results"]}
    assert {("keras", "torch", 1), ("keras", "torch", 32), ("onnx", "onnxruntime", 32), ("tflite", "litert", 1)} <= rows
    assert ("tflite", "litert", 32) not in rows and not bench["failed"]
    fixed = [s for s in bench["skipped"] if s["variant"] == "tflite" and s["runtime"] == "litert"]
    assert fixed and fixed[0]["batch_sizes"] == [32] and "batch is fixed at 1" in fixed[0]["reason"]
    report = (pt2_run / "report.md").read_text()
    assert "torch (reference)" in report and "tflite-int8" in report

    from toolkit.errors import DataError
    from toolkit.runners.litert import LiteRTRunner

    tflite = LiteRTRunner.load(pt2_run / entries["tflite"]["path"])  # batch fixed at 1
    assert tflite.infer(mnist.test.images[:3]).shape == (3, 10)  # fed in pieces of its batch
    with pytest.raises(DataError, match="batch is fixed at 1"):  # bench's timed call takes only its own batch
        tflite.run_raw(tflite.prepare(mnist.test.images[:3]))


def test_a_pytorch_export_rebuilds_byte_identical_and_passes_the_gate_against_itself(pt2_run, torch_models,
                                                                                      tmp_path):
    # the same .pt2, data and settings give the same bytes in this process too (OpenVINO numbers its models per
    # process; torch.onnx, litert-torch and ai-edge-quantizer must not depend on what ran before)
    assert main(["verify", "--exports", str(pt2_run), "--rebuild", "--quiet"]) == 0
    # A/A: the gate passes the export against itself; footprint reads its int8 files as a Keras model's
    assert main(["gate", "--baseline", str(pt2_run), "--exports", str(pt2_run), "--latency-rounds", "0",
                 "--json", str(tmp_path / "gate.json"), "--quiet"]) == 0
    assert main(["footprint", "--exports", str(pt2_run), "--json", str(tmp_path / "fp.json"), "--quiet"]) == 0
    rows = {r["variant"]: r for r in json.loads((tmp_path / "fp.json").read_text())["variants"]}
    entry = next(e for e in json.loads((pt2_run / "manifest.json").read_text())["artifacts"]
                 if e["variant"] == "tflite-int8")
    assert rows["tflite-int8"]["model_bytes"] == entry["bytes"] and rows["tflite-int8"]["arena_bytes"] > 0


def test_an_onnx_model_from_another_exporter_is_the_reference_of_its_own_exports(torch_models, tmp_path):
    out = tmp_path / "exports"
    code = main(["run", "--model", str(torch_models[1]), "--exports", str(out), "--quick", "--format", "onnx",
                 "openvino", "tflite", "--runtimes", "onnxruntime", "--quiet"])
    assert code == 7  # TFLite from ONNX: failed rows with their reason (no converter installable beside TensorFlow)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failed"] and all("no converter from onnx to TFLite" in f["reason"] for f in manifest["failed"])
    assert manifest["model"]["framework"] == "onnx" and manifest["model"]["data_format"] == "channels_first"
    parity = json.loads((out / "parity.json").read_text())
    assert parity["reference"]["runtime"] == "onnxruntime"
    assert parity["variants"]["onnx"]["agreement"] == 1.0 and parity["variants"]["openvino"]["agreement"] >= 0.9995
    assert parity["variants"]["onnx-int8"]["verdict"] in ("pass", "inconclusive")
    report = (out / "report.md").read_text()  # the same report, the failed variants named in it with their reason
    assert "onnx (reference)" in report and "no converter from onnx to TFLite" in report


def test_a_file_an_exporter_broke_does_not_pass(torch_models, pt2_run, tmp_path, monkeypatch):
    """torch.onnx.export writing a wrong graph (here: the stem's 3x3 kernels transposed, the mistake a layout
    conversion makes) is caught: refused by export's check, or failed by parity; never passed."""
    from onnx import numpy_helper

    from toolkit.references import FRAMEWORKS

    framework = FRAMEWORKS.get("torch")

    def broken(reference, opset):
        proto = framework.to_onnx(reference, opset)
        for init in proto.graph.initializer:
            if init.name.endswith("stem.weight"):
                init.CopyFrom(numpy_helper.from_array(np.swapaxes(numpy_helper.to_array(init), 2, 3).copy(), init.name))
                return proto
        raise AssertionError("no stem.weight initializer")

    monkeypatch.setitem(FRAMEWORKS._entries, "torch", replace(framework, to_onnx=broken))
    code, manifest = _export(tmp_path, torch_models[0], "onnx")
    if "onnx" not in {e["variant"] for e in manifest["artifacts"]}:  # caught at export: the check refused it
        failure = next(f for f in manifest["failed"] if f["variant"] == "onnx")
        assert failure["stage"] == "check" and "broken" in failure["reason"]
        return
    assert main(["parity", "--exports", str(tmp_path / "exports"), "--quiet"]) != 0
    parity = json.loads((tmp_path / "exports" / "parity.json").read_text())
    assert parity["variants"]["onnx"]["verdict"] == "fail"
    # A/B: the gate against the good export fails it on that file's own checks (not only on what disappeared)
    assert main(["gate", "--baseline", str(pt2_run), "--exports", str(tmp_path / "exports"), "--latency-rounds",
                 "0", "--json", str(tmp_path / "gate.json"), "--quiet"]) == 4
    checks = json.loads((tmp_path / "gate.json").read_text())["checks"]
    assert {c["kind"] for c in checks if c["status"] == "fail" and c["name"] == "onnx"}, checks


def test_where_the_dynamo_exporter_writes_a_wrong_file_the_torchscript_one_is_tried(torch_models, tmp_path,
                                                                                     monkeypatch, capsys):
    """Both of PyTorch's ONNX exporters are tried: dynamo's file computing something else on the fixed-seed probe
    (here its stem kernels transposed) is not used; the TorchScript exporter's file is, and the manifest names it."""
    from onnx import numpy_helper

    from toolkit.references import torch as torch_framework

    real = torch_framework._dynamo

    def wrong(reference, opset, runner):
        proto = real(reference, opset, runner)
        init = next(i for i in proto.graph.initializer if i.name.endswith("stem.weight"))
        init.CopyFrom(numpy_helper.from_array(np.swapaxes(numpy_helper.to_array(init), 2, 3).copy(), init.name))
        return proto

    monkeypatch.setattr(torch_framework, "_dynamo", wrong)
    code, manifest = _export(tmp_path, torch_models[0], "onnx")
    assert code == 0
    entry = next(e for e in manifest["artifacts"] if e["variant"] == "onnx")
    assert entry["producer"].startswith("torch.onnx.export (TorchScript") and entry["opset"] == 17
    assert entry["check"]["agreement"] == 1.0

    monkeypatch.setattr(torch_framework, "_torchscript", wrong)  # both wrong: refused, naming both
    assert main(["export", "--model", str(torch_models[0]), "--exports", str(tmp_path / "both"), "--format", "onnx",
                 "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "dynamo=True: its file computes something else" in err
    assert "TorchScript, dynamo=False: its file computes something else" in err


def test_the_accuracy_search_makes_a_pytorch_models_failing_int8_pass(tmp_path, mnist):
    """A PyTorch MLP with one hidden channel 200 times the others: plain int8 fails parity's gates; the search
    (--max-accuracy-drop) raises the layers reading it, judged on validation images the model never trained on,
    and the files it accepts pass parity on the test set against PyTorch."""
    from userdata import torch_outlier_mlp

    x, y = mnist.train.images[5000:17000], mnist.train.labels[5000:17000]  # not the validation split's 5,000
    model = torch_outlier_mlp(tmp_path, x, y, scale=200.0)
    out = tmp_path / "exports"
    assert main(["export", "--model", str(model), "--exports", str(out), "--format", "onnx", "tflite", "--quantize",
                 "int8", "--max-accuracy-drop", "0.3", "--quiet"]) == 0
    entries = {e["variant"]: e for e in json.loads((out / "manifest.json").read_text())["artifacts"]}
    for variant in ("tflite-int8", "onnx-int8"):
        record = entries[variant]["accuracy_control"]
        assert record["plain"]["drop_upper_points"] > 0.3 and record["met"] and record["layers"], record
    assert main(["parity", "--exports", str(out), "--quiet"]) == 0
    parity = json.loads((out / "parity.json").read_text())
    for variant in ("tflite-int8", "onnx-int8"):
        assert parity["variants"][variant]["verdict"] == "pass"
        would = parity["variants"][f"{variant}:plain"]["gates_if_enforced"]  # the plain file beside it fails
        assert any(g["status"] == "fail" for g in would), would


def test_an_onnx_file_listing_its_weights_as_inputs_with_a_fixed_batch_is_read(tmp_path):
    """Older exporters list every initializer among the graph's inputs (here before the image) and fix the
    batch: the image input is found by name, its batch made dynamic and checked on two images."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(784, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["pixels"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["scores"])],
        "old_exporter", [helper.make_tensor_value_info("w", TensorProto.FLOAT, [784, 10]),
                         helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 10])], [numpy_helper.from_array(w, "w")])
    path = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    code, manifest = _export(tmp_path, path, "onnx")
    assert code == 0 and manifest["model"]["data_format"] == "channels_first"
    entry = next(e for e in manifest["artifacts"] if e["variant"] == "onnx")
    assert entry["inputs"][0]["shape"] == [None, 1, 28, 28]  # the batch made dynamic, the layout kept


def test_a_pickled_pytorch_file_is_refused_unread(tmp_path):
    path = tmp_path / "net.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), path)  # a whole pickled module
    code = main(["export", "--model", str(path), "--exports", str(tmp_path / "e"), "--quiet"])
    assert code == 3  # not a model file the toolkit reads: a pickle is never loaded
    renamed = path.rename(tmp_path / "net.pt2")
    from toolkit.errors import DataError
    from toolkit.runners.torch import check_archive

    with pytest.raises(DataError, match="not a torch.export archive|legacy"):
        check_archive(renamed)


def test_without_pytorch_a_pt2_model_gets_one_line_saying_how_to_install_it(torch_models, tmp_path, monkeypatch,
                                                                           capsys):
    from toolkit.references import FRAMEWORKS

    monkeypatch.setitem(FRAMEWORKS._entries, "torch", replace(FRAMEWORKS.get("torch"), available=lambda: False))
    code = main(["export", "--model", str(torch_models[0]), "--exports", str(tmp_path / "e")])
    assert code == 6
    err = capsys.readouterr().err
    assert "torch is not installed" in err and "pip install -e '.[torch]'" in err


def test_fine_tuning_is_refused_for_a_model_that_is_not_keras(torch_models, tmp_path):
    code = main(["export", "--model", str(torch_models[0]), "--exports", str(tmp_path / "e"), "--fine-tune",
                 "--quiet"])
    assert code == 2
