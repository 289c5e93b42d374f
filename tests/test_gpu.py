"""GPU paths on a real CUDA machine: `python -m pytest -m gpu` (with `pip install -e '.[gpu]'`).

Not part of the default run (this project's machines have no GPU); the CPU-only behaviour of
the same paths (exit 6, --allow-fallback rows) is tested in test_bench.py.
"""

import pytest

from toolkit.bench import run_bench
from toolkit.config import BenchConfig
from toolkit.errors import DeviceUnavailableError

pytestmark = pytest.mark.gpu

FAST = dict(batch_sizes=(1, 8), threads=(1,), warmup_runs=2, warmup_seconds=0.0, min_runs=5, min_seconds=0.0,
            verbose=False, device="cuda")


def test_onnxruntime_cuda_rows_really_use_the_gpu(quick_export, data_dir):
    doc = run_bench(BenchConfig(exports=quick_export, data_dir=data_dir, variants=("onnx",),
                                runtimes=("onnxruntime",), **FAST))
    assert doc["results"] and doc["provenance"]["machine"]["gpus"]
    for row in doc["results"]:
        assert row["device"] == "cuda" and row["providers"][0] == "CUDAExecutionProvider"
        assert "fallback_reason" not in row


def test_tensorflow_gpu_rows_really_use_the_gpu(quick_export, data_dir):
    doc = run_bench(BenchConfig(exports=quick_export, data_dir=data_dir, variants=("keras",), **FAST))
    for row in doc["results"]:
        assert row["device"] == "cuda" and "GPU" in row["providers"][0]


def test_tensorrt_rows_or_a_stated_reason(quick_export, data_dir):
    """Where the TensorRT libraries are missing, onnxruntime offers no TensorRT provider: the only
    runtime asked for cannot run, so the command fails (exit 6) naming that reason."""
    try:
        doc = run_bench(BenchConfig(exports=quick_export, data_dir=data_dir, variants=("onnx",),
                                    runtimes=("onnxruntime-trt",), **FAST))
    except DeviceUnavailableError as exc:
        assert "TensorrtExecutionProvider" in str(exc)
        return
    assert doc["results"][0]["providers"][0] == "TensorrtExecutionProvider"
