"""Statistics for parity: score intervals and McNemar's exact test.

Why these methods:
- accuracy and agreement CIs: Wilson score intervals, which behave well near 100% where the
  normal (Wald) interval collapses, and never have zero width;
- paired accuracy difference: the reference and a variant classify the *same* images. Newcombe's
  hybrid score interval for paired proportions (Newcombe 1998, Statistics in Medicine 17:2635,
  method 10) combines the Wilson intervals of both accuracies with the correlation of the pairs.
  Unlike an interval conditional on the discordant pairs (which is (0, 0) when no image
  disagrees), it stays valid, and of honest width, when nothing was observed to differ: 0
  disagreements in 1,000 images do not prove a difference of exactly 0;
- McNemar's exact test on the discordant pairs for "is there a difference at all".
"""

from __future__ import annotations

import functools
import math

from scipy.stats import binomtest


@functools.lru_cache(maxsize=64)
def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of successes / n (counts may be fractional: toolkit/verdicts.py scales
    them to ask how many images would decide a verdict)."""
    if n == 0:
        return (0.0, 1.0)
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for discordant counts b and c."""
    m = b + c
    if m == 0:
        return 1.0
    return float(binomtest(b, m, 0.5).pvalue)


def newcombe_paired_interval(e: int, f: int, g: int, h: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe (1998) method 10: CI for p1 - p2 = (f - g) / n from a paired 2x2 table.

    e: both succeed; f: the first succeeds, the second fails; g: the reverse; h: both fail. The
    correlation correction phi is the paper's: (eh - fg - n/2) / sqrt(...) when eh - fg > n/2,
    0 when 0 <= eh - fg <= n/2, and (eh - fg) / sqrt(...) when eh - fg < 0.
    """
    n = e + f + g + h
    if n == 0:
        return (-1.0, 1.0)
    p1, p2 = (e + f) / n, (e + g) / n
    l1, u1 = wilson_interval(e + f, n, confidence)
    l2, u2 = wilson_interval(e + g, n, confidence)
    denominator = (e + f) * (g + h) * (e + g) * (f + h)
    phi = 0.0
    if denominator > 0:
        cross = e * h - f * g
        numerator = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
        phi = numerator / math.sqrt(denominator)
    d = p1 - p2
    lower = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, lower), min(1.0, upper))


def paired_difference_interval(b: int, c: int, n: int, confidence: float = 0.95,
                               both_right: int | None = None) -> tuple[float, float]:
    """CI for (variant accuracy - reference accuracy) = (c - b) / n on the same n images
    (Newcombe's paired score interval).

    b: images the reference gets right and the variant wrong; c: the other way round;
    both_right: images both get right (the rest of the n - b - c concordant images are both
    wrong). Without it, the concordant images are taken as all right (the interval then depends
    on the accuracy only through n, and is the narrowest honest one).
    """
    e = n - b - c if both_right is None else both_right
    h = n - b - c - e
    if min(b, c, e, h) < 0:
        raise ValueError(f"inconsistent paired counts: n={n}, b={b}, c={c}, both right={e}")
    lo, hi = newcombe_paired_interval(e, c, b, h, confidence)  # p1 = variant, p2 = reference
    return (lo, hi)


def gain_beyond_noise(after, before, confidence: float = 0.95) -> tuple[bool, list[float]]:
    """Whether ``after`` gets more of the same images right than ``before`` beyond noise (the paired interval of the
    difference above zero), and that interval in points."""
    lo, hi = paired_gain_interval(before, after, confidence)
    return lo > 0, [round(100 * lo, 4), round(100 * hi, 4)]


def paired_gain_interval(before, after, confidence: float = 0.95) -> tuple[float, float]:
    """CI for the share of images ``after`` gets right minus the share ``before`` does (boolean arrays over the
    same images): ``paired_difference_interval`` from the per-image outcomes."""
    import numpy as np

    before, after = np.asarray(before, bool), np.asarray(after, bool)
    return paired_difference_interval(int((before & ~after).sum()), int((~before & after).sum()), len(before),
                                      confidence, both_right=int((before & after).sum()))
