"""Activation ranges for int8: how the calibration images' values of each tensor become the one
range its int8 steps cover (the *range estimator*, in NNCF's and AIMET's words).

Every estimator here starts from the same statistics, each tensor's minimum and maximum on each
calibration image (per sample, as NNCF collects them with batch size 1):

- ``minmax``: the global minimum and maximum over all images (the TFLite converter's and
  onnxruntime's default). One image with a rare large value sets the range for all.
- ``mean-minmax``: the mean over images of each image's minimum and maximum (NNCF's default
  ``MEAN_MINMAX`` for activations). Rare outliers are clipped; a typical image keeps its steps.
- ``tail-aware``: per tensor, ``mean-minmax`` where the global maximum (or minimum) is more than
  ``TAIL_RATIO`` times the median image's (a few images reach values far beyond the others: the
  squeeze-excite and standardization tensors of issue #23), else ``minmax``: the clipping is paid
  only where a long tail would otherwise take the steps of every image.

No estimator is best for every model (averaging wins on EfficientNetB0 and costs a little on
MobileNetV2: benchmarks/PTQ.md), so the exporters build each candidate and judge them on the
**validation split** (``auto``, the default; the test set is never used): ``tail-aware`` is kept
unless another agrees with the Keras model on more images beyond noise (``choose``). The
candidates' validation figures go to the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

TAIL_RATIO = 4.0


@dataclass(frozen=True)
class Estimator:
    """A range estimator as data (NNCF's statistic and aggregator): the statistic is each image's minimum and
    maximum; ``reduce`` aggregates them over the images ("extreme": the global min/max; "mean": their mean),
    on every tensor, or with ``tails_only`` only on a side with a long tail (the global extreme elsewhere)."""

    name: str
    reduce: str
    tails_only: bool = False

    def side(self, values: np.ndarray) -> float:
        """One side's bound from its per-image extremes, oriented so that larger is further out."""
        if self.reduce == "extreme" or (self.tails_only and not _tail(values)):
            return float(values.max())
        return float(values.mean())


ESTIMATOR_SPECS = (Estimator("minmax", "extreme"), Estimator("mean-minmax", "mean"),
                   Estimator("tail-aware", "mean", tails_only=True))
ESTIMATORS = tuple(e.name for e in ESTIMATOR_SPECS)
# calibrators onnxruntime's quantizer brings (a format whose quantizer has them passes them as ``own``)
RUNTIME_CALIBRATORS = ("entropy", "percentile")
# every valid --calibration-method: the one list the CLI, the configs and the formats read
METHODS = ("auto", *ESTIMATORS, *RUNTIME_CALIBRATORS)


def method_for(variant: str, method: str, own: tuple[str, ...] = ()) -> tuple[str, str | None]:
    """(the calibration method ``variant`` uses when ``method`` is asked, a note when that is another one): a
    runtime calibrator its quantizer does not have (``own``) becomes minmax, and says so."""
    if method not in RUNTIME_CALIBRATORS or method in own:
        return method, None
    return "minmax", (f"--calibration-method {method} is a calibrator of onnxruntime's quantizer, which {variant} is "
                      "not made with: it is calibrated with minmax")


class Stats:
    """Per-image minimum and maximum of named tensors, accumulated one image (or batch, reduced per
    image) at a time: memory is two floats per tensor per image."""

    def __init__(self) -> None:
        self.mins: dict[str, list[float]] = {}
        self.maxs: dict[str, list[float]] = {}

    def add(self, name: str, values: np.ndarray, batched: bool = False) -> None:
        """``values`` of one image, or of a batch with ``batched`` (the first axis is the image)."""
        values = np.asarray(values)
        if values.dtype.kind != "f" or values.size == 0:
            return
        rows = values.reshape(len(values), -1) if batched and values.ndim > 1 else values.reshape(1, -1)
        self.mins.setdefault(name, []).extend(np.min(rows, axis=1).astype(float).tolist())
        self.maxs.setdefault(name, []).extend(np.max(rows, axis=1).astype(float).tolist())

    def names(self) -> list[str]:
        return list(self.mins)

    def ranges(self, estimator: str) -> dict[str, tuple[float, float]]:
        """{tensor: (low, high)} by ``estimator``; every range contains 0 (an int8 zero point must exist)."""
        spec = next((e for e in ESTIMATOR_SPECS if e.name == estimator), None)
        if spec is None:
            raise ValueError(f"unknown range estimator {estimator!r} (known: {', '.join(ESTIMATORS)})")
        out = {}
        for name in self.mins:
            mins, maxs = np.asarray(self.mins[name]), np.asarray(self.maxs[name])
            lo, hi = -spec.side(-mins), spec.side(maxs)
            out[name] = (min(lo, 0.0), max(hi, 0.0))
        return out

    def tails(self) -> dict[str, float]:
        """{tensor: the larger of its global max over the median image's max and its global min over the
        median image's min}, for the tensors with a long tail on either side (the side ``tail-aware``
        clips: a rare -50 among minima of -1 is a tail as much as a rare +50 among maxima of 1)."""
        out = {}
        for name in self.maxs:
            ratio = max(_tail_ratio(np.asarray(self.maxs[name])), _tail_ratio(-np.asarray(self.mins[name])))
            if ratio > TAIL_RATIO:
                out[name] = round(ratio, 2)
        return out


def _tail_ratio(values: np.ndarray) -> float:
    """The largest of ``values`` (one per image) over the median's; 0 where the median is not positive."""
    median = float(np.median(values))
    return float(values.max()) / median if median > 0 else 0.0


def _tail(values: np.ndarray) -> bool:
    """Whether the largest of ``values`` (one per image) is more than TAIL_RATIO times the median's."""
    return _tail_ratio(values) > TAIL_RATIO


DEFAULT = "tail-aware"  # minmax wherever no tensor has a long tail


def choose(candidates: dict[str, bytes], predict: Callable[[bytes, np.ndarray], np.ndarray], validation,
           log: Callable[[str], None] = lambda s: None, what: str = "") -> tuple[str, dict]:
    """The estimator kept, and every candidate's validation figures. ``DEFAULT`` (else the first candidate) is
    kept unless another agrees with the Keras model on more validation images beyond noise: the paired interval
    (Newcombe) of the difference lies above zero, at 95% over all the comparisons made (Bonferroni). Picking the
    highest point figure lets a few hundred images choose by noise: on 144 images of an EfficientNetB0 the
    three estimators were within one image and the one picked lost 7 points on the test set (issue #35)."""
    from toolkit.accuracy_control import measure
    from toolkit.stats import paired_gain_interval

    figures, right = {}, {}
    for name, content in candidates.items():
        predicted = predict(content, validation.images)
        m = measure(validation, predicted)
        right[name] = predicted == validation.reference
        figures[name] = {"agreement": round(m["agreement"], 6), "accuracy": round(m["accuracy"], 6),
                         "drop_points": round(m["drop_points"], 4), "images": m["images"]}
        log(f"  {what}range estimator {name}: agreement {100 * m['agreement']:.2f}%, accuracy "
            f"{100 * m['accuracy']:.2f}% on {validation.description}")
    default = DEFAULT if DEFAULT in candidates else next(iter(candidates))
    others = [n for n in candidates if n != default]
    confidence = 1.0 - 0.05 / max(1, len(others))
    beyond = []
    for name in others:
        lo, hi = paired_gain_interval(right[default], right[name], confidence)
        figures[name]["agreement_minus_default_ci_points"] = [round(100 * lo, 4), round(100 * hi, 4)]
        if lo > 0:
            beyond.append(name)
    best = max(beyond, key=lambda n: (figures[n]["agreement"], figures[n]["accuracy"], -others.index(n)),
               default=default)
    return best, figures


def pick(ctx, candidates: dict[str, bytes], predict: Callable, what: str, stats: Stats | None = None,
         method: str | None = None) -> tuple[str, dict]:
    """The estimator an exporter keeps among its candidates, and what the manifest records of the choice:
    the validation figures of each (``ctx.validation``: the split, loaded once per export)."""
    names = list(candidates)
    tails = stats.tails() if stats is not None else {}
    record: dict = {"long_tails": {"tensors": len(tails), "of": len(stats.names()),
                                   "largest_ratio": max(tails.values(), default=None)}} if stats is not None else {}
    method = method or getattr(ctx, "calibration_method", "auto")
    if len(names) == 1:
        why = ("asked for (--calibration-method)" if method != "auto" else
               f"minmax kept: no activation has a long tail (a max over {TAIL_RATIO:g}x the median image's) for "
               "another estimator to clip")
        return names[0], {"estimator": names[0], "chosen_on": why, **record}
    validation = _validation(ctx)
    if validation is None:
        return "minmax", {"estimator": "minmax", "chosen_on": "no validation split to choose on: minmax", **record}
    chosen, figures = choose(candidates, predict, validation, log=ctx.log, what=f"{what}: ")
    return chosen, {"estimator": chosen, "chosen_on": validation.description, "candidates": figures,
                    "rule": f"{DEFAULT} unless another agrees with Keras on more validation images beyond noise "
                            "(the paired interval of the difference above zero, 95% over the comparisons); of those, "
                            "the highest agreement", **record}


def _validation(ctx):
    from toolkit.errors import DataError

    if ctx.validation is None:
        return None
    try:
        return ctx.validation()
    except DataError:
        return None


def estimators_for(method: str, stats: Stats | None = None) -> tuple[str, ...]:
    """The candidates a ``--calibration-method`` asks for: the one asked, or for ``auto`` every estimator
    when some tensor has a long tail, else minmax alone (without a tail, clipping to the mean can only
    cost: the estimators differ where a few images reach far beyond the others)."""
    if method != "auto":
        return (method,)
    if stats is not None and not stats.tails():
        return ("minmax",)
    return ESTIMATORS


def collect(batches: Iterable[dict[str, np.ndarray]], stats: Stats | None = None, batched: bool = True) -> Stats:
    """Accumulate ``{tensor: values}`` dicts (one per call of a model) into per-image statistics."""
    stats = stats or Stats()
    for outputs in batches:
        for name, values in outputs.items():
            stats.add(name, values, batched=batched)
    return stats
