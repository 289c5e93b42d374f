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


def test_a_pytorch_model_exports_to_every_format_and_passes_parity_against_pytorch(torch_models, tmp_path, mnist):
    code, manifest = _export(tmp_path, torch_models[0], "onnx", "openvino", "tflite", "tflite-micro")
    assert code == 0
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

    assert main(["parity", "--exports", str(tmp_path / "exports"), "--quiet"]) == 0
    parity = json.loads((tmp_path / "exports" / "parity.json").read_text())
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

    # the same .pt2, data and settings give the same bytes in this process too (OpenVINO numbers its models per
    # process; torch.onnx, litert-torch and ai-edge-quantizer must not depend on what ran before)
    assert main(["verify", "--exports", str(tmp_path / "exports"), "--rebuild", "--quiet"]) == 0

    from toolkit.errors import DataError
    from toolkit.runners.litert import LiteRTRunner

    fixed = LiteRTRunner.load(tmp_path / "exports" / entries["tflite"]["path"])  # batch fixed at 1
    assert fixed.infer(mnist.test.images[:3]).shape == (3, 10)  # fed in pieces of its batch
    with pytest.raises(DataError, match="batch is fixed at 1"):  # bench's timed call takes only its own batch
        fixed.run_raw(fixed.prepare(mnist.test.images[:3]))

    code = main(["bench", "--exports", str(tmp_path / "exports"), "--batch-sizes", "1", "--threads", "1",
                 "--min-runs", "5", "--min-seconds", "0", "--warmup", "1", "--quiet"])
    assert code == 0
    rows = json.loads((tmp_path / "exports" / "bench.json").read_text())["results"]
    assert {(r["variant"], r["runtime"]) for r in rows} >= {("keras", "torch"), ("onnx", "onnxruntime")}


def test_an_onnx_model_from_another_exporter_is_the_reference_of_its_own_exports(torch_models, tmp_path):
    code, manifest = _export(tmp_path, torch_models[1], "onnx", "tflite")
    assert code == 7  # TFLite from ONNX: a failed row with its reason (no converter installable beside TensorFlow)
    assert all("no converter from onnx to TFLite" in f["reason"] for f in manifest["failed"])
    assert manifest["model"]["framework"] == "onnx" and manifest["model"]["data_format"] == "channels_first"
    assert main(["parity", "--exports", str(tmp_path / "exports"), "--quiet"]) == 0
    parity = json.loads((tmp_path / "exports" / "parity.json").read_text())
    assert parity["reference"]["runtime"] == "onnxruntime"
    assert parity["variants"]["onnx"]["agreement"] == 1.0


def test_a_file_an_exporter_broke_does_not_pass(torch_models, tmp_path, monkeypatch):
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
