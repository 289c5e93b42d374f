"""Arm Ethos-U NPU targets (toolkit/targets/ethosu.py): `toolkit footprint --npu` against Vela run by hand."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolkit import artifacts
from toolkit.cli import main
from toolkit.provenance import sha256_bytes

pytest.importorskip("ethosu.vela", reason="ethos-u-vela (the [npu] extra) is not installed")


def _vela_by_hand(model, out, accelerator="ethos-u55-128", system="Ethos_U55_High_End_Embedded",
                  memory="Shared_Sram"):
    """Vela's own command line, as a person runs it (its summary CSV and compiled file)."""
    from toolkit.targets.ethosu import vela_ini

    vela = shutil.which("vela") or str(Path(sys.executable).parent / "vela")  # the console script pip installs
    subprocess.run([vela, str(model), "--accelerator-config", accelerator,
                    "--config", str(vela_ini()), "--system-config", system, "--memory-mode", memory,
                    "--output-dir", str(out)], check=True, capture_output=True)
    with (out / f"{model.stem}_summary_{system}.csv").open(newline="") as f:
        return next(csv.DictReader(f)), (out / f"{model.stem}_vela.tflite").read_bytes()


def test_the_seed_cnn_runs_on_the_npu_with_the_figures_vela_gives_by_hand(export_copy, tmp_path, capsys):
    assert main(["footprint", "--exports", str(export_copy), "--npu", "ethos-u55-128", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Vela's estimates, not measurements" in out and "Every operator runs on the NPU" in out
    doc = json.loads((export_copy / "footprint.json").read_text())
    (row,) = doc["npu"]["rows"]
    assert row["variant"] == "tflite-int8" and row["target"] == "ethos-u55-128"
    assert row["operators"]["cpu"] == 0 and row["operators"]["npu"] == row["operators"]["total"] > 0
    assert row["cpu_fallbacks"] == [] and all(layer["target"] == "NPU" for layer in row["layers"])
    entry = next(e for e in artifacts.read_manifest(export_copy)["artifacts"] if e["variant"] == "tflite-int8")
    summary, compiled = _vela_by_hand(export_copy / entry["path"], tmp_path / "by-hand")
    assert row["sram_kib"] == float(summary["sram_memory_used"])
    assert row["off_chip_flash_kib"] == float(summary["off_chip_flash_memory_used"])
    assert row["inference_ms"] == pytest.approx(float(summary["inference_time"]) * 1e3, rel=1e-12)
    assert row["cycles_npu"] == int(float(summary["cycles_npu"])) and row["macs"] == int(float(summary["nn_macs"]))
    assert row["compiled"]["sha256"] == sha256_bytes(compiled)
    assert (export_copy / row["compiled"]["path"]).read_bytes() == compiled
    assert row["compiler"]["options"] == {"accelerator": "ethos-u55-128", "system_config": "Ethos_U55_High_End_Embedded",
                                          "memory_mode": "Shared_Sram"}
    skipped = {s["variant"]: s["reason"] for s in doc["npu"]["not_analysed"]}
    assert "integers only" in skipped["tflite"] and "takes tflite files" in skipped["onnx-int8"]
    assert "same model bytes as tflite-int8" in skipped["tflite-micro"]
    from toolkit.exportdir import ExportDir
    from toolkit.report import _footprint_lines

    report = "\n".join(_footprint_lines(ExportDir(export_copy)))  # the report shows what footprint.json holds
    assert "Arm Ethos-U NPU (Vela's estimates, not measurements)" in report and "| tflite-int8 | ethos-u55-128 |" in report


def _int8_tflite(path, shuffle: bool):
    """A small full-integer classifier, with a GATHER (a channel shuffle, which the Ethos-U55 has no kernel for)
    or without."""
    import keras
    import tensorflow as tf

    x = keras.Input((16, 16, 3), batch_size=1)
    y = keras.layers.Conv2D(8, 3, activation="relu")(x)
    if shuffle:
        y = keras.layers.Lambda(lambda t: tf.gather(t, [3, 1, 2, 0, 5, 4, 7, 6], axis=-1), name="shuffle")(y)
    y = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(y))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, y))
    rng = np.random.default_rng(0)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.random((1, 16, 16, 3), dtype=np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8  # full integer, as tflite-int8
    path.write_bytes(converter.convert())
    return path


def test_an_operator_the_npu_cannot_take_is_named_and_fails_the_gate(tmp_path):
    """A GATHER has no Ethos-U55 kernel: Vela leaves it on the CPU and says why, and the gate's placement check
    fails the model that gained it against the one without (both compiled by Vela here)."""
    from toolkit.targets import TARGETS
    from toolkit.targets.checks import fallback_checks

    target = TARGETS.get("ethos-u55-128")
    plain = target.analyse(target, _int8_tflite(tmp_path / "plain.tflite", False), tmp_path / "w1")
    shuffled = target.analyse(target, _int8_tflite(tmp_path / "shuffle.tflite", True), tmp_path / "w2")
    (fallback,) = shuffled["cpu_fallbacks"]
    assert fallback["operator"] == "GatherV2" and "shuffle" in fallback["output"]
    assert fallback["reason"] == "Unsupported opType"
    assert shuffled["operators"]["cpu"] == 1 and plain["operators"]["cpu"] == 0

    def footprint(row):
        return {"npu": {"rows": [{"variant": "tflite-int8", **{k: v for k, v in row.items() if k != "_compiled_content"}}]}}

    (ab,) = fallback_checks(footprint(plain), footprint(shuffled))
    assert ab[2] == "fail" and "GatherV2" in ab[3] and "Unsupported opType" in ab[3]
    (aa,) = fallback_checks(footprint(shuffled), footprint(shuffled))
    assert aa[2] == "pass"


def test_an_export_with_no_integer_tflite_is_refused_in_one_line(export_copy, capsys):
    manifest = artifacts.read_manifest(export_copy)
    manifest["artifacts"] = [e for e in manifest["artifacts"] if e["variant"] in ("tflite", "tflite-fp16")]
    artifacts.atomic_write_json(export_copy / "manifest.json", manifest)
    assert main(["footprint", "--exports", str(export_copy), "--npu", "ethos-u55-128", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("toolkit footprint: error: no full-integer TFLite variant to compile for the NPU")
    assert "tflite: float32: the NPU computes integers only" in err[0]


def test_without_vela_the_command_says_how_to_install_it(export_copy, monkeypatch, capsys):
    from toolkit.targets import ethosu

    monkeypatch.setattr(ethosu, "vela_version", lambda: None)
    before = sorted(p.name for p in export_copy.iterdir())
    assert main(["footprint", "--exports", str(export_copy), "--npu"]) == 6
    assert "pip install -e '.[npu]'" in capsys.readouterr().err
    assert sorted(p.name for p in export_copy.iterdir()) == before  # refused before any work
