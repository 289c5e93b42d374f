"""Bench behaviour on the CPU (no assertion on speed: speed is measured, not tested)."""

import csv
import json

import numpy as np
import pytest

from toolkit.bench import run_bench, write_outputs
from toolkit.cli import main
from toolkit.config import BenchConfig
from toolkit.timing import measure, summarize

FAST = dict(batch_sizes=(1, 4), threads=(1,), warmup_runs=1, warmup_seconds=0.0, min_runs=5,
            min_seconds=0.0, verbose=False)
REQUIRED = {"variant", "runtime", "device", "providers", "batch_size", "threads", "p50_ms", "p90_ms",
            "p99_ms", "mean_ms", "std_ms", "throughput", "runs"}


def _cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_measure_honours_min_runs_and_warmup():
    calls = []
    result = measure(lambda: calls.append(1), warmup_runs=3, warmup_seconds=0, min_runs=7, min_seconds=0,
                     max_runs=100)
    assert len(result["samples_ns"]) == 7 and result["warmup_runs"] == 3
    assert len(calls) == 1 + 3 + 7  # first inference, warm-up, timed
    stats = summarize([1_000_000, 2_000_000, 3_000_000], batch_size=4)
    assert stats["p50_ms"] == 2.0 and stats["min_ms"] == 1.0 and stats["mean_ms"] == 2.0
    assert stats["throughput"] == pytest.approx(2000.0)


@pytest.fixture(scope="module")
def bench_doc(quick_export, data_dir):
    cfg = BenchConfig(exports=quick_export, data_dir=data_dir, variants=("tflite-int8", "onnx", "keras"), **FAST)
    return run_bench(cfg)


def test_rows_cover_variants_runtimes_batches(bench_doc):
    """The default plan: each format's runtimes, and OpenVINO's default configuration (bf16) only where the
    CPU has bf16 (detected, never assumed), said once when it is left out."""
    from toolkit.runners.openvino import cpu_has_bf16

    rows = bench_doc["results"]
    expected = {("tflite-int8", "litert"), ("onnx", "onnxruntime"), ("keras", "tensorflow"),
                ("tflite-int8", "openvino"), ("onnx", "openvino")}  # OpenVINO reads TFLite and ONNX (dev installs it)
    if cpu_has_bf16():
        expected |= {("tflite-int8", "openvino-bf16"), ("onnx", "openvino-bf16")}
    else:
        assert [s for s in bench_doc["skipped"] if s["runtime"] == "openvino-bf16"] == [
            {"variant": "(every variant)", "runtime": "openvino-bf16", "device": "cpu",
             "reason": "this CPU has no bf16 support (OpenVINO's OPTIMIZATION_CAPABILITIES lacks BF16): it would run f32"}]
    assert {(r["variant"], r["runtime"]) for r in rows} == expected
    assert len(rows) == len(expected) * 2  # x batch sizes 1, 4; one thread setting
    for r in rows:
        assert set(r) >= REQUIRED
        assert r["device"] == "cpu" and r["providers"]
        assert r["runs"] >= 5 and len(r["samples_ms"]) == r["runs"]
        assert r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["throughput"] == pytest.approx(r["batch_size"] * 1000 / r["mean_ms"])
        assert r["load_ms"] > 0 and r["first_inference_ms"] > 0
    by = {r["runtime"]: r for r in rows}
    assert by["onnxruntime"]["providers"] == ["CPUExecutionProvider"]
    assert "CPU" in by["tensorflow"]["providers"][0]
    assert by["litert"]["sha256"] and by["tensorflow"]["sha256"] and by["tensorflow"]["bytes"]


def test_provenance_records_machine(bench_doc):
    prov = bench_doc["provenance"]
    assert prov["machine"]["cpu"] and prov["machine"]["cpu_count"]
    assert isinstance(prov["machine"]["cpu_flags"], list) and "gpus" in prov["machine"]
    features = prov["machine"]["cpu_features"]  # what bench's conclusions may depend on, as detected
    assert set(features) >= {"amx", "avx512", "avx512_vnni", "avx512_bf16", "amx_flags"}
    assert features["amx"] == ("amx_int8" in prov["machine"]["cpu_flags"])
    assert prov["versions"]["onnxruntime"] and prov["versions"]["ai-edge-litert"]
    assert "git_commit" in prov and bench_doc["method"]["timer"].startswith("time.perf_counter_ns")


def test_outputs_json_csv_markdown_png(bench_doc, quick_export, tmp_path):
    cfg = BenchConfig(exports=quick_export, json_path=tmp_path / "b.json")
    paths = write_outputs(bench_doc, cfg)
    doc = json.loads(paths["json"].read_text())
    assert len(doc["results"]) == len(bench_doc["results"])
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == len(doc["results"]) and float(rows[0]["p50_ms"]) == doc["results"][0]["p50_ms"]
    md = paths["markdown"].read_text()
    assert "| tflite-int8 | litert | cpu |" in md
    assert paths["latency_png"].read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(_cuda_available(), reason="a CUDA provider is present")
def test_device_cuda_without_gpu_exits_6(quick_export, capsys):
    assert main(["bench", "--exports", str(quick_export), "--device", "cuda"]) == 6
    err = capsys.readouterr().err
    assert "--device cuda" in err and "--allow-fallback" in err and "Traceback" not in err


@pytest.mark.skipif(_cuda_available(), reason="a CUDA provider is present")
def test_allow_fallback_rows_say_cpu(quick_export, data_dir, tmp_path):
    rc = main(["bench", "--exports", str(quick_export), "--data-dir", str(data_dir), "--device", "cuda",
               "--allow-fallback", "--variants", "onnx", "tflite", "--batch-sizes", "1", "--threads", "1",
               "--min-runs", "3", "--min-seconds", "0", "--warmup", "0", "--warmup-seconds", "0",
               "--json", str(tmp_path / "b.json"), "--no-plots"])
    assert rc == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["results"]
    for r in doc["results"]:
        assert r["device"] == "cpu" and r["requested_device"] == "cuda" and r["fallback_reason"]
        assert "CUDAExecutionProvider" not in r["providers"]
    assert "(fallback)" in (tmp_path / "b.md").read_text()


def test_unknown_variant_and_bad_list(quick_export, capsys):
    assert main(["bench", "--exports", str(quick_export), "--variants", "coreml"]) == 2
    assert "not in the manifest" in capsys.readouterr().err
    assert main(["bench", "--batch-sizes", "1,x"]) == 2


def test_quantile_intervals_and_ties():
    from toolkit.report import _winner
    from toolkit.timing import quantile_interval, tied

    ms = np.arange(1, 101, dtype=np.float64)  # 1..100
    lo, hi = quantile_interval(ms, 0.5)
    assert lo < 50.5 < hi and 38 <= lo <= 42 and 59 <= hi <= 63  # binomial(100, 0.5) ranks 40 and 60
    plo, phi = quantile_interval(ms, 0.9)
    assert plo < 90.5 < phi
    fast = {"variant": "a", "runtime": "r", "p50_ms": 1.0, "p50_ci95_ms": [0.9, 1.1]}
    close = {"variant": "b", "runtime": "r", "p50_ms": 1.05, "p50_ci95_ms": [1.0, 1.2]}
    slow = {"variant": "c", "runtime": "r", "p50_ms": 2.0, "p50_ci95_ms": [1.9, 2.1]}
    assert tied(fast, close) and not tied(fast, slow)
    text = _winner([fast, close, slow], lambda r: f"{r['p50_ms']} ms")
    assert text.startswith("a tie between `a` on r (1.0 ms), `b` on r (1.05 ms)") and "`c`" not in text
    one_run = _winner([fast, slow], lambda r: f"{r['p50_ms']} ms")
    assert "apart from the next in this run" in one_run and "one run" in one_run and "winner" not in one_run
    assert "the winner" in _winner([fast, slow], lambda r: f"{r['p50_ms']} ms", second_run_agrees=True)


def test_rows_carry_p50_and_p90_intervals(bench_doc):
    """Every row's p50 and p90 carry a 95% interval, or null where its samples are too few for any interval
    of them to cover 95% (fewer than 6 for the p50, 29 for the p90): never [min, max] passed off as one."""
    for r in bench_doc["results"]:
        for q, smallest in (("p50", 6), ("p90", 29)):
            if r["runs"] < smallest:
                assert r[f"{q}_ci95_ms"] is None, r
                continue
            lo, hi = r[f"{q}_ci95_ms"]
            assert lo <= r[f"{q}_ms"] <= hi


def test_no_winner_is_named_from_a_row_without_an_interval():
    from toolkit.report import _winner

    few = {"variant": "a", "runtime": "r", "p50_ms": 1.0, "p50_ci95_ms": None}
    slow = {"variant": "c", "runtime": "r", "p50_ms": 2.0, "p50_ci95_ms": [1.9, 2.1]}
    text = _winner([few, slow], lambda r: f"{r['p50_ms']} ms", second_run_agrees=True)
    assert "too few samples" in text and "winner" not in text
