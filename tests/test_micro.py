"""Microcontroller path: the C source round-trips, TFLM parity, bench row, footprint, and
clear errors when tflite-micro is not installed."""

import json

import numpy as np
import pytest

from toolkit import artifacts
from toolkit import tflm as micro
from toolkit.cli import main
from toolkit.config import ParityConfig
from toolkit.parity import run_parity
from toolkit.runners import runner_for


def _entry(exports, variant):
    return next(e for e in artifacts.read_manifest(exports)["artifacts"] if e["variant"] == variant)


def test_c_array_round_trips_to_the_tflite_bytes(quick_export):
    entry = _entry(quick_export, "tflite-micro")
    source = (quick_export / entry["path"]).read_text()
    tflite = (quick_export / _entry(quick_export, "tflite-int8")["path"]).read_bytes()
    assert micro.parse_c_array(source) == tflite
    assert entry["model_bytes"] == len(tflite) and entry["model_sha256"] == _entry(quick_export, "tflite-int8")["sha256"]
    assert "alignas(16) const unsigned char g_model_data[]" in source
    header = (quick_export / entry["companions"][0]["path"]).read_text()
    assert f"constexpr int kTensorArenaSize = {entry['arena']['arena_bytes']};" in header
    assert entry["arena"]["arena_bytes"] > 10_000
    assert "CONV_2D" in entry["ops"]


def test_c_array_parser_rejects_damage():
    src = micro.c_source(b"\x01\x02\x03", "m.h", "test")
    assert micro.parse_c_array(src) == b"\x01\x02\x03"
    with pytest.raises(Exception, match="_len says"):
        micro.parse_c_array(src.replace("0x03", "0x03, 0x04"))
    with pytest.raises(Exception, match="no `const unsigned char"):
        micro.parse_c_array("int main() {}")


def test_edited_header_is_caught(export_copy, capsys):
    entry = _entry(export_copy, "tflite-micro")
    header = export_copy / entry["companions"][0]["path"]
    header.write_text(header.read_text().replace("kTensorArenaSize = ", "kTensorArenaSize = 1"))
    assert main(["verify", "--exports", str(export_copy)]) == 3
    assert "tflite-micro.h" in capsys.readouterr().err


def test_tflm_parity_agrees_with_litert(quick_export, data_dir):
    report = run_parity(ParityConfig(exports=quick_export, data_dir=data_dir, variants=("tflite-micro",),
                                     micro_images=300, verbose=False))
    v = report.variants["tflite-micro"]
    assert v, [str(g) for g in v.failures()]
    assert v.metrics["images"] == 300 and "sample of 300" in v.metrics["images_used"]
    assert v.metrics["agreement_with_litert"] >= 0.999
    assert [g.metric for g in v.gates] == ["agreement_with_litert_percent"]  # sample: no full-set gates
    assert len(v.indices) == 300 and np.all(np.diff(v.indices) > 0)


def test_tflm_on_all_images_gets_the_int8_gates_too(quick_export, data_dir, monkeypatch):

    from toolkit import inputs

    real = inputs.reopen
    monkeypatch.setattr(inputs, "reopen", lambda record, data_dir=None: _head(real(record, data_dir), 400))
    report = run_parity(ParityConfig(exports=quick_export, data_dir=data_dir, variants=("tflite-micro",),
                                     micro_images=None, verbose=False))
    metrics = [g.metric for g in report.variants["tflite-micro"].gates]
    assert metrics == ["accuracy_loss_points", "agreement_percent", "agreement_with_litert_percent"]
    assert report.variants["tflite-micro"].metrics["images_used"] == "all"


def _head(dataset, n):
    import dataclasses

    return dataclasses.replace(dataset, test=dataset.test.head(n))


def test_tflm_runner_matches_litert_logits(quick_export, mnist):
    tflm = runner_for("tflite-micro", quick_export / _entry(quick_export, "tflite-micro")["path"])
    litert = runner_for("tflite", quick_export / _entry(quick_export, "tflite-int8")["path"])
    images = mnist.test.images[:20]
    a, b = tflm.infer(images), litert.infer(images)
    np.testing.assert_array_equal(a.argmax(1), b.argmax(1))
    assert np.abs(a - b).max() <= 2 * tflm.output_spec.scale + 1e-6  # at most a rounding step or two


def test_bench_row_is_labelled_host_reference_kernels(quick_export, data_dir):
    from toolkit.bench import run_bench
    from toolkit.config import BenchConfig

    doc = run_bench(BenchConfig(exports=quick_export, data_dir=data_dir, variants=("tflite-micro",),
                                batch_sizes=(1, 8), threads=(1, 2), warmup_runs=1, warmup_seconds=0, min_runs=3,
                                min_seconds=0, verbose=False))
    (row,) = doc["results"]
    assert row["runtime"] == "tflm" and row["batch_size"] == 1 and row["threads"] == 1
    assert "not a device timing" in row["note"]
    entry = next(e for e in json.loads((quick_export / "manifest.json").read_text())["artifacts"]
                 if e["variant"] == "tflite-micro")
    assert row["arena_bytes"] == entry["arena"]["arena_bytes"] > 0 and row["peak_rss_mb"] > 0


def test_footprint_table(export_copy, capsys):
    assert main(["footprint", "--exports", str(export_copy), "--target-flash", "4M", "--target-ram", "16K"]) == 0
    out = capsys.readouterr().out
    doc = json.loads((export_copy / "footprint.json").read_text())
    rows = {r["variant"]: r for r in doc["variants"]}
    cnn = rows["tflite-int8"]
    assert cnn["model_bytes"] == _entry(export_copy, "tflite-int8")["bytes"]
    fits = {d["device"]: d for d in cnn["devices"]}
    assert not fits["small MCU"]["fits"] and not fits["small MCU"]["fits_flash"]  # 3.3 MB: say so plainly
    assert fits["MCU + external memory"]["fits"]
    assert not fits["your target"]["fits_ram"] and fits["your target"]["fits_flash"]  # 16 KB < the arena
    assert rows["onnx-int8"]["arena_bytes"] is None
    assert "| tflite-int8 |" in out and "no: flash" in out


def test_without_tflite_micro(monkeypatch, export_copy, capsys):
    from toolkit import exporters

    monkeypatch.setattr(micro, "available", lambda: False)
    monkeypatch.setitem(exporters.REGISTRY, "tflite-micro",
                        exporters.REGISTRY["tflite-micro"].__class__(
                            **{**vars(exporters.REGISTRY["tflite-micro"]), "available": lambda: False}))
    assert "tflite-micro" not in [e.variant for e in exporters.select("all", None)]
    assert main(["export", "--format", "tflite-micro", "--exports", str(export_copy), "--force"]) == 6
    assert "pip install -e '.[micro]'" in capsys.readouterr().err
    monkeypatch.setattr(micro, "require", lambda: (_ for _ in ()).throw(
        micro.DeviceUnavailableError("TensorFlow Lite for Microcontrollers is not installed", hint=micro.INSTALL_HINT)))
    assert main(["footprint", "--exports", str(export_copy)]) == 6
    assert "not installed" in capsys.readouterr().err
