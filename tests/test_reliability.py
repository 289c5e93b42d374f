"""Bad input and faults: each case asserts the exit code, the message, and that nothing was lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot

from toolkit import artifacts
from toolkit.cli import main
from toolkit.errors import DataError
from toolkit.provenance import sha256_file
from toolkit.runners import runner_for

REPO = Path(__file__).resolve().parent.parent


def _entry(exports: Path, variant: str) -> dict:
    return next(e for e in artifacts.read_manifest(exports)["artifacts"] if e["variant"] == variant)


def _swap_artifact(exports: Path, variant: str, content: bytes) -> Path:
    """Replace an artifact *and* make the manifest agree, so the bytes reach the loader."""
    manifest = artifacts.read_manifest(exports)
    entry = next(e for e in manifest["artifacts"] if e["variant"] == variant)
    path = exports / entry["path"]
    path.write_bytes(content)
    entry["bytes"], entry["sha256"] = len(content), sha256_file(path)
    artifacts.atomic_write_json(exports / "manifest.json", manifest)
    return path


def _tflite_bytes(exports):
    return (exports / _entry(exports, "tflite-int8")["path"]).read_bytes()


def _onnx_bytes(exports):
    return (exports / _entry(exports, "onnx")["path"]).read_bytes()


BAD_ARTIFACTS = {
    "tflite truncated": ("tflite-int8", lambda ex: _tflite_bytes(ex)[: len(_tflite_bytes(ex)) // 3],
                         "cannot be loaded by LiteRT|not a TFLite"),
    "tflite empty": ("tflite-int8", lambda ex: b"", "not a TFLite FlatBuffer"),
    "tflite random bytes": ("tflite-int8", lambda ex: np.random.default_rng(0).bytes(4096),
                            "not a TFLite FlatBuffer"),
    "tflite tiny file with magic": ("tflite-int8", lambda ex: b"\x1c\x00\x00\x00TFL3" + b"\x00" * 8,
                                    "cannot be loaded by LiteRT"),
    "onnx truncated": ("onnx", lambda ex: _onnx_bytes(ex)[: len(_onnx_bytes(ex)) // 2],
                       "not a valid ONNX protobuf|holds no ONNX graph|fails onnx.checker"),
    "onnx empty": ("onnx", lambda ex: b"", "holds no ONNX graph"),
    "onnx random bytes": ("onnx", lambda ex: np.random.default_rng(1).bytes(4096),
                          "not a valid ONNX protobuf|holds no ONNX graph"),
}


@pytest.mark.parametrize("case", list(BAD_ARTIFACTS))
def test_bad_artifact_is_refused_exit_3(case, export_copy, capsys):
    variant, make, message = BAD_ARTIFACTS[case]
    path = _swap_artifact(export_copy, variant, make(export_copy))
    before = snapshot(export_copy)
    assert main(["verify", "--exports", str(export_copy)]) == 3
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err
    assert str(path.name) in err and "Traceback" not in err
    assert snapshot(export_copy) == before  # nothing changed by looking


def test_onnx_external_data_outside_export_dir_is_refused(export_copy, tmp_path, capsys):
    import onnx

    entry = _entry(export_copy, "onnx")
    model = onnx.load(export_copy / entry["path"])
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", "../../../outside.bin"), ("offset", "0"), ("length", "16")):
        tensor.external_data.add(key=key, value=value)
    tensor.ClearField("raw_data")
    _swap_artifact(export_copy, "onnx", model.SerializeToString())
    assert main(["verify", "--exports", str(export_copy)]) == 3
    assert "outside" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    (b"", "not a valid .keras archive"),
    (b"PK\x03\x04 truncated zip", "not a valid .keras archive"),
    (os.urandom(2048), "not a valid .keras archive"),
])
def test_bad_keras_file_exit_3(content, message, quick_model, tmp_path, capsys):
    bad = tmp_path / "model.keras"
    bad.write_bytes(content)
    assert main(["export", "--exports", str(tmp_path / "out"), "--model", str(bad)]) == 3
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_truncated_keras_file_exit_3(quick_model, tmp_path, capsys):
    out, _ = quick_model
    content = (out / "model.keras").read_bytes()
    bad = tmp_path / "model.keras"
    bad.write_bytes(content[: len(content) // 2])
    assert main(["export", "--exports", str(tmp_path), "--model", str(bad)]) == 3
    assert "model.keras" in capsys.readouterr().err


def test_keras_lambda_layer_is_refused(tmp_path, capsys):
    from toolkit._quiet import keras

    k = keras()
    inputs = k.Input((28, 28, 1))
    outputs = k.layers.Dense(10)(k.layers.Flatten()(k.layers.Lambda(lambda x: x * 2.0)(inputs)))
    path = tmp_path / "lambda.keras"
    k.Model(inputs, outputs).save(path)
    assert zipfile.is_zipfile(path)
    assert main(["export", "--exports", str(tmp_path / "out"), "--model", str(path)]) == 3
    assert "Lambda" in capsys.readouterr().err


def test_wrong_extension_for_the_stage(export_copy, capsys):
    tflite = export_copy / _entry(export_copy, "tflite")["path"]
    assert main(["export", "--exports", str(export_copy), "--model", str(tflite), "--force"]) == 3
    assert "is not a model file the toolkit reads (it reads .keras" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["tflite-int8", "onnx", "tflite-micro"])
@pytest.mark.parametrize("bad,message", [
    (np.zeros((2, 28, 28), np.float32), "input shape"),
    (np.zeros((2, 32, 32, 1), np.float32), "input shape"),
    (np.zeros((2, 28, 28, 1), np.uint8), "dtype uint8"),
    (np.full((2, 28, 28, 1), np.nan, np.float32), "NaN"),
    (np.full((2, 28, 28, 1), np.inf, np.float32), "NaN or Inf"),
])
def test_runner_input_checks(quick_export, variant, bad, message):
    runner = runner_for(_entry(quick_export, variant)["format"], quick_export / _entry(quick_export, variant)["path"])
    with pytest.raises(DataError, match=message):
        runner.infer(bad)


def _poison_preprocessing(monkeypatch, where):
    """NaN cannot come out of uint8 pixels; poison the preprocessed batch as a broken transform would."""
    from toolkit.preprocess import Preprocessing

    real = Preprocessing.finish

    def poisoned(self, raw):
        x = real(self, raw)
        x[where] = np.nan
        return x

    monkeypatch.setattr(Preprocessing, "finish", poisoned)


def test_nan_in_evaluation_data_exit_3(export_copy, monkeypatch, capsys):
    _poison_preprocessing(monkeypatch, (3, 5, 5, 0))
    assert main(["parity", "--exports", str(export_copy), "--variants", "tflite"]) == 3
    assert "NaN" in capsys.readouterr().err


def test_nan_in_calibration_data_exit_3(export_copy, monkeypatch, capsys):
    _poison_preprocessing(monkeypatch, slice(None))
    before = snapshot(export_copy)
    assert main(["export", "--exports", str(export_copy), "--force", "--format", "tflite"]) == 3
    assert "calibration" in capsys.readouterr().err
    assert snapshot(export_copy) == before


def _run_toolkit(args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "toolkit", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_sigkill_during_export_loses_nothing(export_copy, data_dir):
    before = snapshot(export_copy)
    proc = _run_toolkit(["export", "--exports", str(export_copy), "--data-dir", str(data_dir), "--force"])
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            staging = [p for p in export_copy.iterdir() if p.name.startswith(artifacts.STAGING_PREFIX)]
            if staging and any(f.suffix == ".tflite" for f in staging[0].iterdir()):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "export finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    after = {k: v for k, v in snapshot(export_copy).items() if not k.startswith(artifacts.STAGING_PREFIX)}
    assert after == before
    # later commands do not trip on the leftover staging directory ...
    assert main(["verify", "--exports", str(export_copy)]) == 0
    # ... and the next successful export removes it
    artifacts.remove_stale(export_copy, keep={_entry(export_copy, "onnx")["path"].split("/")[0]})
    assert not [p for p in export_copy.iterdir() if p.name.startswith(artifacts.STAGING_PREFIX)]
    assert main(["verify", "--exports", str(export_copy)]) == 0


def _limit_file_size():
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, 4_000_000))


def test_file_size_limit_mid_write_exit_5(export_copy, data_dir):
    before = snapshot(export_copy)
    proc = _run_toolkit(["export", "--exports", str(export_copy), "--data-dir", str(data_dir), "--force",
                         "--format", "tflite", "--quantize", "int8", "none"], preexec_fn=_limit_file_size)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 5, err
    assert "file size limit exceeded" in err and "Traceback" not in err
    assert snapshot(export_copy) == before


def test_read_only_output_dir_exit_5(export_copy, data_dir):
    """A directory that cannot be written. Root ignores permission bits, so as root the export
    directory is bind-mounted read-only in a private mount namespace for that one command."""
    before = snapshot(export_copy)
    command = [sys.executable, "-m", "toolkit", "export", "--exports", str(export_copy), "--data-dir",
               str(data_dir), "--force", "--format", "onnx"]
    if os.geteuid() == 0:
        command = ["unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"',
                   str(export_copy), *command]
        expected = "read-only file system"
    else:
        export_copy.chmod(0o555)
        expected = "permission denied"
    try:
        proc = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                              text=True, timeout=300)
    finally:
        export_copy.chmod(0o755)
    assert proc.returncode == 5, proc.stderr
    assert f"cannot write {export_copy}" in proc.stderr and expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(export_copy) == before


def test_litert_runner_is_safe_from_many_threads(quick_export, mnist):
    runner = runner_for("tflite", quick_export / _entry(quick_export, "tflite-int8")["path"])
    batches = [mnist.test.images[i * 7 : i * 7 + 1 + i % 5] for i in range(40)]
    expected = [runner.infer(b) for b in batches]
    results: dict[int, np.ndarray] = {}
    errors = []

    def work(offset):
        try:
            for i in range(offset, len(batches), 4):
                results[i] = runner.infer(batches[i])
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, exp in enumerate(expected):
        np.testing.assert_array_equal(results[i], exp)


def test_manifest_not_json_exit_3(export_copy, capsys):
    (export_copy / "manifest.json").write_text("{not json")
    assert main(["parity", "--exports", str(export_copy)]) == 3
    assert "not valid JSON" in capsys.readouterr().err


def test_manifest_path_escaping_export_dir_exit_3(export_copy, capsys):
    manifest = json.loads((export_copy / "manifest.json").read_text())
    manifest["artifacts"][0]["path"] = "../../etc/passwd"
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", "--exports", str(export_copy)]) == 3
    assert "points outside" in capsys.readouterr().err
