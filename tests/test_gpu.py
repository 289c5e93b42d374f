"""GPU paths on a real CUDA machine: `python -m pytest -m gpu` (onnxruntime-gpu and JAX with CUDA;
TensorFlow only for the TensorFlow test).

Not part of the default run (this project's CI machines have no GPU); the CPU-only behaviour of
the same paths (exit 6, --allow-fallback rows) is tested in test_bench.py and test_keras_jax.py.
On a GPU machine without TensorFlow (no model can be trained or exported there), point
TOOLKIT_GPU_EXPORTS at an export made elsewhere with `toolkit export --format onnx`
(benchmarks/README.md has the commands used).
"""

import json
import os
from pathlib import Path

import pytest

from toolkit.bench import run_bench
from toolkit.cli import main
from toolkit.config import BenchConfig
from toolkit.errors import DeviceUnavailableError
from toolkit.runners.onnxrt import SHAPE_OPS

pytestmark = pytest.mark.gpu

FAST = dict(batch_sizes=(1, 8), threads=(1,), warmup_runs=2, warmup_seconds=0.0, min_runs=5, min_seconds=0.0,
            verbose=False, device="cuda")


@pytest.fixture(scope="session")
def gpu_export(request) -> Path:
    given = os.environ.get("TOOLKIT_GPU_EXPORTS")
    return Path(given) if given else request.getfixturevalue("quick_export")


def test_onnxruntime_cuda_rows_really_use_the_gpu(gpu_export, data_dir):
    doc = run_bench(BenchConfig(exports=gpu_export, data_dir=data_dir, variants=("onnx", "onnx-int8"),
                                runtimes=("onnxruntime",), **FAST))
    assert doc["results"] and doc["provenance"]["machine"]["gpus"]
    ran = {r["variant"] for r in doc["results"]}
    assert "onnx" in ran
    for row in doc["results"]:
        assert row["device"] == "cuda" and row["providers"][0] == "CUDAExecutionProvider"
        assert "fallback_reason" not in row
        cpu_ops = row["node_placement"].get("CPUExecutionProvider", {}).get("op_types", {})
        assert set(cpu_ops) <= SHAPE_OPS  # only shape arithmetic beside the GPU
    if "onnx-int8" not in ran:  # onnxruntime put some of its compute on the CPU: skipped, and why
        (why,) = [s["reason"] for s in doc["skipped"] if s["variant"] == "onnx-int8"]
        assert "on the CPU beside CUDAExecutionProvider" in why


def test_keras_jax_rows_really_use_the_gpu(gpu_export, data_dir):
    doc = run_bench(BenchConfig(exports=gpu_export, data_dir=data_dir, variants=("keras",),
                                runtimes=("keras-jax",), **FAST))
    assert doc["results"]
    for row in doc["results"]:
        assert row["device"] == "cuda" and row["providers"][0].startswith("jax gpu:")
        assert row["process"] == "this process"


def test_tensorflow_gpu_rows_really_use_the_gpu(gpu_export, data_dir):
    pytest.importorskip("tensorflow", reason="TensorFlow is not installed here (keras-jax times the reference)")
    doc = run_bench(BenchConfig(exports=gpu_export, data_dir=data_dir, variants=("keras",),
                                runtimes=("tensorflow",), **FAST))
    for row in doc["results"]:
        assert row["device"] == "cuda" and "GPU" in row["providers"][0]


def test_tensorrt_rows_or_a_stated_reason(gpu_export, data_dir):
    """Where the TensorRT libraries are missing, onnxruntime offers no TensorRT provider: the only
    runtime asked for cannot run, so the command fails (exit 6) naming that reason."""
    try:
        doc = run_bench(BenchConfig(exports=gpu_export, data_dir=data_dir, variants=("onnx",),
                                    runtimes=("onnxruntime-trt",), **FAST))
    except DeviceUnavailableError as exc:
        assert "TensorrtExecutionProvider" in str(exc)
        return
    assert doc["results"][0]["providers"][0] == "TensorrtExecutionProvider"


def test_parity_on_the_gpu_passes_with_every_runner_on_the_gpu(gpu_export, data_dir, tmp_path):
    out = tmp_path / "parity.json"
    code = main(["parity", "--exports", str(gpu_export), "--data-dir", str(data_dir), "--device", "cuda",
                 "--variants", "onnx", "onnx-int8", "--runtimes", "onnxruntime", "--reference-runtime", "keras-jax",
                 "--json", str(out), "--quiet"])
    doc = json.loads(out.read_text())
    assert doc["reference"]["runtime"] == "keras-jax" and doc["reference"]["device"] == "cuda"
    assert "onnx" in doc["variants"]
    for v in doc["variants"].values():
        assert v["device"] == "cuda" and v["providers"][0] == "CUDAExecutionProvider"
    for s in doc["skipped"]:
        assert s["variant"] == "onnx-int8" and "on the CPU beside CUDAExecutionProvider" in s["reason"]
    assert code == 0
