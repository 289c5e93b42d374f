"""keras-jax: the reference model under Keras' JAX backend, on the CPU here (the same runtime times
the reference on a GPU machine that has no TensorFlow; test_gpu.py covers that side)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from toolkit import runners
from toolkit.cli import main
from toolkit.errors import DeviceUnavailableError

pytest.importorskip("jax")

FAST = ["--batch-sizes", "1,8", "--threads", "1", "--warmup", "1", "--warmup-seconds", "0", "--min-runs", "3",
        "--min-seconds", "0", "--no-plots", "--quiet"]


def test_same_predictions_as_the_tensorflow_reference_with_the_logit_difference_reported(quick_export, tmp_path):
    """In this process Keras runs on TensorFlow, so keras-jax runs in a child process with the JAX
    backend; parity checks it against the TensorFlow reference as keras@keras-jax."""
    out = tmp_path / "p.json"
    assert main(["parity", "--exports", str(quick_export), "--variants", "tflite", "--runtimes", "litert",
                 "keras-jax", "--json", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert doc["reference"]["runtime"] == "tensorflow"
    jax = doc["variants"]["keras@keras-jax"]
    assert jax["runtime"] == "keras-jax" and jax["providers"] == ["jax cpu:0 (cpu)"] and jax["device"] == "cpu"
    assert jax["runtime_settings"]["process"].startswith("a child process")
    assert jax["runtime_settings"]["inference_precision"] == "fp32"
    assert jax["disagreements"] == 0 and jax["agreement"] == 1.0
    assert 0 <= jax["max_abs_logit_diff"] < 1e-4  # float32 on both; reported, and gated by the float gates
    assert jax["passed"]


def test_the_reference_itself_on_keras_jax_in_a_fresh_process(quick_export, quick_parity, data_dir, tmp_path):
    """`--reference-runtime keras-jax` in a process where Keras is not loaded yet: in-process JAX,
    the same reference accuracy and predictions as TensorFlow's (quick_parity: a parity of the same model with
    the default, TensorFlow, reference)."""
    out = tmp_path / "p.json"
    env_cmd = [sys.executable, "-m", "toolkit", "parity", "--exports", str(quick_export), "--data-dir", str(data_dir),
               "--variants", "onnx", "--reference-runtime", "keras-jax", "--json", str(out), "--quiet"]
    subprocess.run(env_cmd, check=True, capture_output=True, text=True)
    jax_doc = json.loads(out.read_text())
    assert jax_doc["reference"]["runtime"] == "keras-jax"
    assert jax_doc["reference"]["providers"] == ["jax cpu:0 (cpu)"]
    tf_doc = json.loads((quick_parity / "parity.json").read_text())
    assert tf_doc["reference"].get("runtime") != "keras-jax"
    assert jax_doc["reference"]["accuracy"] == tf_doc["reference"]["accuracy"]
    jp = np.load(out.with_name(out.stem + "-predictions.npz"))
    tp = np.load(quick_parity / tf_doc["predictions_file"])
    assert np.array_equal(jp["reference"], tp["reference"])


def test_bench_times_the_reference_in_its_worker_with_jax(quick_export, tmp_path):
    out = tmp_path / "b.json"
    assert main(["bench", "--exports", str(quick_export), "--variants", "keras", "--runtimes", "keras-jax", *FAST,
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["batch_size"] for r in rows] == [1, 8]
    for row in rows:
        assert row["runtime"] == "keras-jax" and row["device"] == "cpu" and row["providers"] == ["jax cpu:0 (cpu)"]
        assert row["process"] == "this process"  # a fresh worker: JAX in-process, no pipe in the timed call
        assert row["graph"].startswith("jax.jit") and row["inference_precision"] == "fp32"


def test_cuda_without_a_gpu_is_a_stated_reason(quick_export, capsys):
    runtime = runners.get("keras-jax")
    assert runtime.why_not("cpu") is None
    assert "JAX sees no GPU" in runtime.why_not("cuda")
    assert "CUDA" in runners.get("keras-jax-tf32").why_not("cpu")
    assert main(["parity", "--exports", str(quick_export), "--variants", "onnx", "--device", "cuda",
                 "--reference-runtime", "keras-jax", "--quiet"]) == DeviceUnavailableError.exit_code
    assert "JAX sees no GPU" in capsys.readouterr().err
