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


def quantile_interval(sorted_ms: np.ndarray, q: float, confidence: float = 0.95) -> list[float]:
    """Distribution-free CI for the q-quantile from order statistics: the ranks between which the
    quantile lies with the given probability (the number of samples below it is Binomial(n, q))."""
    from scipy.stats import binom

    n = len(sorted_ms)
    if n == 0:
        return [float("nan"), float("nan")]
    alpha = 1 - confidence
    lo = int(binom.ppf(alpha / 2, n, q))  # 0-based rank of the lower bound
    hi = int(binom.ppf(1 - alpha / 2, n, q))  # 0-based rank of the upper bound
    return [float(sorted_ms[max(0, min(lo, n - 1))]), float(sorted_ms[max(0, min(hi, n - 1))])]


def tied(a: dict, b: dict, key: str = "p50_ci95_ms") -> bool:
    """Two rows whose p50 intervals overlap: a second run could swap them, so neither wins."""
    (alo, ahi), (blo, bhi) = a[key], b[key]
    return alo <= bhi and blo <= ahi


def summarize(samples_ns: list[int], batch_size: int) -> dict:
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    ordered = np.sort(ms)
    return {
        "runs": int(ms.size),
        "min_ms": float(ms.min()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p50_ci95_ms": quantile_interval(ordered, 0.5),
        "p90_ms": float(np.percentile(ms, 90)),
        "p90_ci95_ms": quantile_interval(ordered, 0.9),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": mean,
        "std_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "max_ms": float(ms.max()),
        # images per second at the mean latency of one call
        "throughput": batch_size * 1000.0 / mean,
    }
