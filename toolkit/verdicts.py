"""Every verdict rule in one place: parity's gates, `toolkit gate`'s checks against a baseline, the
accuracy search's acceptance test (export --max-accuracy-drop) and the pytest plugin all call it.

A verdict is one of three, decided on an interval, never on a point estimate:

- **pass**: the 95% interval lies wholly on the allowed side of the bound (a loss "at most 0.3
  points" passes when the interval's upper end is at most 0.3);
- **fail**: the interval lies wholly beyond the bound (its lower end above 0.3): the data show the
  property does not hold;
- **inconclusive**: the interval straddles the bound: these images cannot tell. The verdict then
  says about how many images would decide it, if the estimate stayed where it is: the same interval
  recomputed at a larger n with the same proportions, solved for the smallest n that decides (near
  100% agreement Wilson's and Newcombe's intervals shrink about as 1/n, mid-range as 1/sqrt(n): no
  single scaling rule holds for both).

A quantity measured exactly on every image (the largest logit difference of a float export) has no
interval: it passes or fails on its value. The same file (equal sha256) is the same function: a
comparison of a file with itself passes without sampling anything.

Combining: a set of verdicts fails when any fails, else is inconclusive when any is, else passes.
Exit codes: fail is 4; inconclusive is 0 and shown prominently, or 4 with ``--strict``.

The intervals (toolkit/stats.py): accuracy differences on the same images, Newcombe's paired score
interval (never of zero width: 0 disagreements in 1,000 images do not prove a difference of 0);
agreement and single proportions, Wilson's score interval; latency ratios, the interval of the
ratio of p50s from interleaved re-measurements (toolkit/gate.py). docs/verdicts.md (README,
"Verdicts") states the rules for users.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
ORDER = {PASS: 0, INCONCLUSIVE: 1, FAIL: 2}


@dataclass(frozen=True)
class Verdict:
    """One property checked on data: ``value OP bound`` (OP ``<=`` or ``>=``), judged on ``interval``
    (None: measured exactly). ``images_to_decide``: for an inconclusive verdict, about how many images
    (or samples) would decide it at the current estimate; None when no number would (the estimate
    sits on the bound) or when it is decided."""

    metric: str
    status: str
    value: float
    op: str
    bound: float
    interval: tuple[float, float] | None = None
    images: int | None = None
    images_to_decide: int | None = None
    note: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def __str__(self) -> str:
        ci = "" if self.interval is None else f" (95% CI {self.interval[0]:.4g} to {self.interval[1]:.4g})"
        text = f"{self.metric} = {self.value:.6g}{ci}, must be {self.op} {self.bound:g}: {self.status}"
        if self.status == INCONCLUSIVE:
            text += (f"; about {self.images_to_decide:,} images would decide it" if self.images_to_decide
                     else "; the estimate sits on the bound: no number of images would decide it")
        if self.note:
            text += f" ({self.note})"
        return text

    def to_json(self) -> dict:
        return {"metric": self.metric, "value": self.value, "op": self.op, "bound": self.bound,
                "status": self.status, "passed": self.passed,
                **({"interval": list(self.interval)} if self.interval is not None else {}),
                **({"images": self.images} if self.images is not None else {}),
                **({"images_to_decide": self.images_to_decide} if self.images_to_decide else {}),
                **({"note": self.note} if self.note else {})}

    @classmethod
    def from_json(cls, d: dict) -> Verdict:
        status = d.get("status") or (PASS if d.get("passed") else FAIL)  # files written before verdicts had status
        return cls(d["metric"], status, d["value"], d["op"], d["bound"],
                   tuple(d["interval"]) if d.get("interval") else None, d.get("images"), d.get("images_to_decide"),
                   d.get("note"))


# the interval at n images (or samples) with the estimate unchanged: what "how many would decide" solves
Resize = Callable[[int], tuple[float, float]]
_MOST_IMAGES = 10**9  # beyond this, "no number of images would decide it"
_EPS = 1e-12  # rounding in a resized interval (0.1 + 0.2 > 0.3) must not cost an image


def sqrt_resize(value: float, interval: tuple[float, float], images: int) -> Resize:
    """The fallback where the interval's own formula is not at hand: each half-width as 1/sqrt(n)."""
    lo, hi = interval
    return lambda n: (value - (value - lo) * math.sqrt(images / n), value + (hi - value) * math.sqrt(images / n))


def scaled_counts(interval_of: Callable[..., tuple[float, float]], counts: tuple[int, ...],
                  units: Callable[[float, float], tuple[float, float]] = lambda lo, hi: (lo, hi)) -> Resize:
    """The interval a count-based formula (Wilson, Newcombe) gives at n images with every count scaled
    by n / (its current total): the same proportions, more images. ``units`` maps it to the verdict's."""
    total = sum(counts)
    return lambda n: units(*interval_of(*(c * n / total for c in counts)))


def _needed(images: int | None, resize: Resize, decided: Callable[[float, float], bool]) -> int | None:
    """The smallest n >= images at which ``resize(n)`` decides (doubling, then bisection); None when none
    below a billion does (the estimate sits on the bound)."""
    if not images:
        return None
    low, high = images, images
    while not decided(*resize(high)):
        if high >= _MOST_IMAGES:
            return None
        low, high = high, min(2 * high, _MOST_IMAGES)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if decided(*resize(mid)) else (mid, high)
    return high


def at_most(metric: str, value: float, bound: float, interval: tuple[float, float] | None = None,
            images: int | None = None, note: str | None = None, resize: Resize | None = None) -> Verdict:
    """The property ``value <= bound``. ``resize``: the interval at n images (``images_to_decide`` is
    solved on it); without it, half-widths as 1/sqrt(n)."""
    if interval is None:
        return Verdict(metric, PASS if value <= bound else FAIL, value, "<=", bound, None, images, None, note)
    lo, hi = interval
    if hi <= bound:
        status, need = PASS, None
    elif lo > bound:
        status, need = FAIL, None
    else:
        status = INCONCLUSIVE
        need = _needed(images, resize or sqrt_resize(value, interval, images or 1),
                       lambda lo, hi: hi <= bound + _EPS or lo > bound)
    return Verdict(metric, status, value, "<=", bound, (lo, hi), images, need, note)


def at_least(metric: str, value: float, bound: float, interval: tuple[float, float] | None = None,
             images: int | None = None, note: str | None = None, resize: Resize | None = None) -> Verdict:
    """The property ``value >= bound`` (``resize``: as for ``at_most``)."""
    if interval is None:
        return Verdict(metric, PASS if value >= bound else FAIL, value, ">=", bound, None, images, None, note)
    lo, hi = interval
    if lo >= bound:
        status, need = PASS, None
    elif hi < bound:
        status, need = FAIL, None
    else:
        status = INCONCLUSIVE
        need = _needed(images, resize or sqrt_resize(value, interval, images or 1),
                       lambda lo, hi: lo >= bound - _EPS or hi < bound)
    return Verdict(metric, status, value, ">=", bound, (lo, hi), images, need, note)


def same_file(metric: str, note: str = "the same file (equal sha256): the same function") -> Verdict:
    """A comparison of a file with itself: nothing to sample."""
    return Verdict(metric, PASS, 0.0, "<=", 0.0, None, None, None, note)


def combine(verdicts) -> str:
    """fail if any fails, else inconclusive if any is, else pass (pass for none)."""
    statuses = [v.status if isinstance(v, Verdict) else v for v in verdicts]
    return max(statuses, key=ORDER.__getitem__, default=PASS)


# ----------------------------------------------------------------------------- parity's gates
def parity_gates(quantization: str, metrics: dict, gates, reduced_precision: str | None = None) -> list[Verdict]:
    """The gates of a variant's quantization, on its metrics (toolkit.parity.compare_predictions):

    - float (``none``): agreement with the reference >= ``float_min_agreement`` % (Wilson interval) and
      the largest logit difference <= ``float_max_logit_diff`` (exact: measured on every image);
    - fp16, dynamic-range, and a float model a runtime computes in reduced precision (OpenVINO's bf16):
      accuracy loss <= ``reduced_max_accuracy_loss`` points (Newcombe's paired interval);
    - int8: accuracy loss <= ``int8_max_accuracy_loss`` points and agreement >= ``int8_min_agreement`` %.
    """
    images = metrics.get("images")
    lo, hi = metrics["accuracy_diff_ci95_points"]
    alo, ahi = metrics.get("agreement_ci95") or _wilson(metrics["agreement"], images)
    loss_resize = agreement_resize = None
    if images and "discordant_ref_right_variant_wrong" in metrics and "correct" in metrics:
        b, c = metrics["discordant_ref_right_variant_wrong"], metrics["discordant_ref_wrong_variant_right"]
        e = metrics["correct"] - c  # both right
        loss_resize = paired_resize(e, b, c, images - e - b - c)  # reference minus variant
        agreement_resize = wilson_resize(images - metrics["disagreements"], images)

    def loss(bound: float) -> Verdict:  # reference minus variant, points
        return at_most("accuracy_loss_points", -metrics["accuracy_diff_points"], bound, (-hi, -lo), images,
                       resize=loss_resize)

    def agreement(bound: float) -> Verdict:
        return at_least("agreement_percent", metrics["agreement"] * 100, bound, (alo * 100, ahi * 100), images,
                        resize=agreement_resize)

    if quantization == "none" and reduced_precision:
        quantization = "fp16"
    if quantization == "none":
        return [agreement(gates.float_min_agreement),
                at_most("max_abs_logit_diff", metrics["max_abs_logit_diff"], gates.float_max_logit_diff,
                        images=images, note="measured on every image")]
    if quantization in ("fp16", "dynamic"):
        return [loss(gates.reduced_max_accuracy_loss)]
    if quantization == "int8":
        return [loss(gates.int8_max_accuracy_loss), agreement(gates.int8_min_agreement)]
    raise ValueError(f"no gates for quantization {quantization!r}")


def agreement_between(metric: str, agree: int, n: int, bound_percent: float, note: str | None = None) -> Verdict:
    """Two runners' predictions on the same n images (TFLM against LiteRT on the same bytes):
    ``agree`` of them equal, at least ``bound_percent`` % (Wilson interval)."""
    from toolkit.stats import wilson_interval

    lo, hi = wilson_interval(agree, n)
    return at_least(metric, agree / n * 100 if n else 0.0, bound_percent, (lo * 100, hi * 100), n, note,
                    resize=wilson_resize(agree, n) if n else None)


def wilson_resize(successes: int, n: int, confidence: float = 0.95) -> Resize:
    """Wilson's interval, in percent, at more images with the same proportion."""
    from toolkit.stats import wilson_interval

    return scaled_counts(lambda k, other: wilson_interval(k, k + other, confidence), (successes, n - successes),
                         lambda lo, hi: (lo * 100, hi * 100))


def paired_resize(e: int, f: int, g: int, h: int, confidence: float = 0.95) -> Resize:
    """Newcombe's paired interval of p1 - p2 = (f - g) / n, in points, at more images with the same
    proportions (e both right, f only the first, g only the second, h neither)."""
    from toolkit.stats import newcombe_paired_interval

    return scaled_counts(lambda *c: newcombe_paired_interval(*c, confidence), (e, f, g, h),
                         lambda lo, hi: (lo * 100, hi * 100))


def _wilson(p: float, n: int | None) -> tuple[float, float]:
    from toolkit.stats import wilson_interval

    return wilson_interval(round(p * n), n) if n else (0.0, 1.0)


# ----------------------------------------------------------------------------- against a baseline
def non_inferior(metric: str, old_right, new_right, margin_points: float, note: str | None = None,
                 confidence: float = 0.95) -> Verdict:
    """New against old on the same images (boolean arrays: each image classified right): the drop
    (old minus new accuracy, points) at most ``margin_points``, on Newcombe's paired interval at
    ``confidence``. Identical predictions are never a regression: with no image changed the verdict
    is pass or, where the images are too few to bound the drop by the margin, inconclusive, never fail."""
    import numpy as np

    from toolkit.stats import newcombe_paired_interval

    old_right, new_right = np.asarray(old_right, bool), np.asarray(new_right, bool)
    e, f = int((old_right & new_right).sum()), int((old_right & ~new_right).sum())
    g, h = int((~old_right & new_right).sum()), int((~old_right & ~new_right).sum())
    lo, hi = newcombe_paired_interval(e, f, g, h, confidence)  # p1 - p2 = old - new: the drop
    n = e + f + g + h
    return at_most(metric, (f - g) / n * 100 if n else 0.0, margin_points, (lo * 100, hi * 100), n, note,
                   resize=paired_resize(e, f, g, h, confidence) if n else None)


def ratio_at_most(metric: str, ratio: float, interval: tuple[float, float], bound: float, samples: int,
                  note: str | None = None, resize: Resize | None = None) -> Verdict:
    """A latency ratio new/old at most ``bound`` (e.g. 1.10), judged on its interval (``resize``: the
    interval at n samples, as for ``at_most``)."""
    return at_most(metric, ratio, bound, interval, samples, note, resize)
