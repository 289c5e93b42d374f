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


def quantile_ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks (l, u) of the exact distribution-free interval [X_(l), X_(u)] for the q-quantile
    of n independent samples, with coverage P(l < B <= u) = F(u) - F(l) >= confidence, where
    B ~ Binomial(n, q) counts the samples below the quantile and F is its CDF (1-based ranks l + 1
    and u + 1). l is the largest rank with F(l) <= alpha/2, u the smallest with F(u) >= 1 - alpha/2;
    where one tail is cut at the extreme sample the other is widened until covered. None when even
    [min, max] does not reach the coverage: fewer than 6 samples for the p50, 29 for the p90 at 95%."""
    from scipy.stats import binom

    alpha = 1 - confidence
    covered = lambda lo, hi: binom.cdf(hi, n, q) - binom.cdf(lo, n, q) >= confidence  # noqa: E731
    if n < 2 or not covered(0, n - 1):
        return None
    k_lo = int(binom.ppf(alpha / 2, n, q))  # smallest k with F(k) >= alpha/2, so F(k_lo - 1) < alpha/2
    k_hi = int(binom.ppf(1 - alpha / 2, n, q))  # smallest k with F(k) >= 1 - alpha/2
    lo, hi = max(0, min(k_lo - 1, n - 1)), max(0, min(k_hi, n - 1))
    while not covered(lo, hi):  # one tail cut at the extreme sample (the p90 of 29 samples)
        if lo > 0:
            lo -= 1
        else:
            hi += 1
    return lo, hi


def quantile_interval(sorted_ms: np.ndarray, q: float, confidence: float = 0.95) -> list[float] | None:
    """Distribution-free CI for the q-quantile from order statistics (``quantile_ranks``): at least the
    nominal coverage for independent samples; None (JSON null) where the samples are too few for any
    interval of them to reach it. Nothing ranks on a missing interval (``tied``)."""
    ranks = quantile_ranks(len(sorted_ms), q, confidence)
    if ranks is None:
        return None
    return [float(sorted_ms[ranks[0]]), float(sorted_ms[ranks[1]])]


def tied(a: dict, b: dict, key: str = "p50_ci95_ms") -> bool:
    """Two rows whose p50 intervals overlap: a second run could swap them, so neither wins. A row with
    too few samples for an interval (None) is tied with every other."""
    if not a.get(key) or not b.get(key):
        return True
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
