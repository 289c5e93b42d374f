"""The one place that times inference. perf_counter_ns around the call, nothing else inside.

Method (as TFLite's benchmark_model and onnxruntime_perf_test): warm up by count *and* time,
then measure at least ``min_runs`` calls *and* ``min_seconds``; keep every sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def measure(call: Callable[[], object], *, warmup_runs: int, warmup_seconds: float, min_runs: int,
            min_seconds: float, max_runs: int) -> dict:
    perf = time.perf_counter_ns
    start = perf()
    call()
    first_ns = perf() - start

    n, t0 = 0, perf()
    while n < warmup_runs or perf() - t0 < warmup_seconds * 1e9:
        call()
        n += 1
    samples = []
    t0 = perf()
    while len(samples) < max_runs and (len(samples) < min_runs or perf() - t0 < min_seconds * 1e9):
        s = perf()
        call()
        samples.append(perf() - s)
    return {"first_ns": first_ns, "warmup_runs": n, "samples_ns": samples}


def summarize(samples_ns: list[int], batch_size: int) -> dict:
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    return {
        "runs": int(ms.size),
        "min_ms": float(ms.min()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": mean,
        "std_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "max_ms": float(ms.max()),
        # images per second at the mean latency of one call
        "throughput": batch_size * 1000.0 / mean,
    }
