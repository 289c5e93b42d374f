"""Statistics for parity: exact and score intervals, McNemar's exact test.

Why these methods:
- accuracy CI: Wilson score interval, which behaves well near 100% where the normal
  (Wald) interval collapses;
- paired accuracy difference: the reference and a variant classify the *same* images, so
  only discordant pairs carry information. Conditional on m = b + c discordant pairs, b
  (reference right, variant wrong) is Binomial(m, pi). The Clopper-Pearson interval for pi
  maps to an exact interval for the difference (c - b) / n, and the exact two-sided binomial
  test of pi = 1/2 is McNemar's exact test. Both are consistent with each other.
"""

from __future__ import annotations

import math

from scipy.stats import beta, binomtest


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    from scipy.stats import norm

    z = norm.ppf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def clopper_pearson(k: int, m: int, confidence: float = 0.95) -> tuple[float, float]:
    if m == 0:
        return (0.0, 1.0)
    alpha = 1 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, m - k + 1))
    hi = 1.0 if k == m else float(beta.ppf(1 - alpha / 2, k + 1, m - k))
    return (lo, hi)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for discordant counts b and c."""
    m = b + c
    if m == 0:
        return 1.0
    return float(binomtest(b, m, 0.5).pvalue)


def paired_difference_interval(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact conditional CI for (variant accuracy - reference accuracy) = (c - b) / n.

    b: images the reference gets right and the variant wrong; c: the other way round.
    """
    m = b + c
    if m == 0:
        return (0.0, 0.0)
    lo, hi = clopper_pearson(c, m, confidence)  # pi' = share of discordant pairs the variant wins
    return ((2 * lo - 1) * m / n, (2 * hi - 1) * m / n)
