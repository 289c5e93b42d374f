"""Parity's metrics and results: what one variant's predictions say against the reference's on the same
images (accuracy, paired difference, agreement, McNemar, score differences) and the result objects.

Every gate is a verdict of toolkit/verdicts.py: pass, fail or inconclusive, decided on an interval.
A ``ParityReport`` is truthy unless a gate failed (like Polygraphy's comparator results); its
``verdict`` says which of the three.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.datasets import Split
from toolkit.preprocess import Preprocessing
from toolkit.stats import mcnemar_exact, paired_difference_interval, wilson_interval
from toolkit.verdicts import FAIL, INCONCLUSIVE, PASS, Verdict, combine


@dataclass
class VariantParity:
    variant: str
    quantization: str
    metrics: dict
    gates: list[Verdict]
    predictions: np.ndarray = field(repr=False)
    indices: np.ndarray | None = field(default=None, repr=False)  # test images used; None = all

    @property
    def verdict(self) -> str:
        """pass, fail or inconclusive (toolkit/verdicts.py)."""
        return combine(self.gates)

    def __bool__(self) -> bool:
        """True unless a gate failed (an inconclusive variant is not a failure)."""
        return self.verdict != FAIL

    def failures(self) -> list[Verdict]:
        return [g for g in self.gates if g.failed]

    def inconclusive(self) -> list[Verdict]:
        return [g for g in self.gates if g.status == INCONCLUSIVE]

    def to_json(self) -> dict:
        return {**self.metrics, "passed": self.verdict == PASS, "verdict": self.verdict,
                "gates": [g.to_json() for g in self.gates]}


@dataclass
class ParityReport:
    reference: dict
    variants: dict[str, VariantParity]
    labels: np.ndarray = field(repr=False)
    reference_predictions: np.ndarray = field(repr=False)
    test: Split = field(repr=False)  # the test split, to read the images shown in the plot
    preprocessing: Preprocessing = field(repr=False)
    class_names: list[str] = field(default_factory=list)
    context: dict = field(default_factory=dict)  # dataset, preprocessing, model: for the JSON
    export_generation: str | None = None

    @property
    def verdict(self) -> str:
        return combine(v.verdict for v in self.variants.values())

    def __bool__(self) -> bool:
        """True unless a gate failed."""
        return self.verdict != FAIL

    def failures(self) -> list[tuple[str, Verdict]]:
        return [(name, g) for name, v in self.variants.items() for g in v.failures()]

    def inconclusive(self) -> list[tuple[str, Verdict]]:
        return [(name, g) for name, v in self.variants.items() for g in v.inconclusive()]

    def raise_if_failed(self, command: str, details: Path, strict: bool = False) -> None:
        """One stderr line per failed gate and per inconclusive one, then GateError (exit 4) if a gate
        failed, or, with ``strict``, if one is inconclusive."""
        from toolkit.errors import GateError

        for name, gate in self.inconclusive():
            print(f"toolkit {command}: INCONCLUSIVE: {name}: {gate}", file=sys.stderr)
        for name, gate in self.failures():
            print(f"toolkit {command}: gate failed: {name}: {gate}", file=sys.stderr)
        if self.failures():
            raise GateError(f"{len(self.failures())} parity gate(s) failed; see {details}")
        if strict and self.inconclusive():
            raise GateError(f"{len(self.inconclusive())} parity gate(s) inconclusive (--strict); see {details}",
                            hint="more test images decide them: each line says about how many")

    def raise_if_incomplete(self, command: str, details: Path) -> None:
        """One stderr line per check the runtime could not make, then PartialError (exit 7)."""
        failed = self.context.get("failed") or []
        if not failed:
            return
        from toolkit.errors import PartialError

        for f in failed:
            print(f"toolkit {command}: not checked: {f['key']} on {f['runtime']} ({f['stage']}): {f['reason']}",
                  file=sys.stderr)
        raise PartialError(f"{len(failed)} check(s) could not be made, {len(self.variants)} made and written; "
                           f"see {details}")


def accuracy_block(predictions: np.ndarray, labels: np.ndarray) -> dict:
    n = len(labels)
    correct = int((predictions == labels).sum())
    lo, hi = wilson_interval(correct, n)
    return {"accuracy": correct / n, "correct": correct, "images": n, "accuracy_ci95": [lo, hi]}


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, classes: int) -> list[float | None]:
    """Accuracy on each class's images; None for a class with no image in the split."""
    return [float((predictions[labels == k] == k).mean()) if (labels == k).any() else None
            for k in range(classes)]


class Scores:
    """What parity keeps of a variant's scores while the test split streams past: its predictions
    and the running max and sum of |scores - reference scores|. Memory per image: one integer."""

    def __init__(self):
        self._preds: list[np.ndarray] = []
        self.max_abs_diff = 0.0
        self._sum = 0.0
        self._count = 0

    def add(self, scores: np.ndarray, reference: np.ndarray) -> None:
        diff = np.abs(scores.astype(np.float64) - reference.astype(np.float64))
        if diff.size:
            self.max_abs_diff = max(self.max_abs_diff, float(diff.max()))
        self._sum += float(diff.sum())
        self._count += diff.size
        self._preds.append(scores.argmax(1).astype(np.int32))

    @property
    def predictions(self) -> np.ndarray:
        return np.concatenate(self._preds) if self._preds else np.zeros(0, np.int32)

    @property
    def mean_abs_diff(self) -> float:
        return self._sum / self._count if self._count else 0.0


def compare(ref_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict:
    """Every parity metric of one variant against the reference, from whole score arrays."""
    scores = Scores()
    scores.add(logits, ref_logits)
    return compare_predictions(ref_logits.argmax(1), scores, labels, ref_logits.shape[1])


def compare_predictions(ref_pred: np.ndarray, scores: Scores, labels: np.ndarray, classes: int) -> dict:
    """Every parity metric of one variant against the reference on the same images."""
    pred = scores.predictions
    ref_ok, ok = ref_pred == labels, pred == labels
    b = int((ref_ok & ~ok).sum())  # reference right, variant wrong
    c = int((~ref_ok & ok).sum())  # variant right, reference wrong
    n = len(labels)
    acc = accuracy_block(pred, labels)
    lo, hi = paired_difference_interval(b, c, n, both_right=int((ref_ok & ok).sum()))
    agree = int((pred == ref_pred).sum())
    alo, ahi = wilson_interval(agree, n)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    ref_class = per_class_accuracy(ref_pred, labels, classes)
    var_class = per_class_accuracy(pred, labels, classes)
    return {
        **acc,
        "accuracy_diff_points": (acc["accuracy"] - float(ref_ok.mean())) * 100,
        "accuracy_diff_ci95_points": [lo * 100, hi * 100],
        "agreement": float((pred == ref_pred).mean()),
        "agreement_ci95": [alo, ahi],
        "disagreements": int((pred != ref_pred).sum()),
        "discordant_ref_right_variant_wrong": b,
        "discordant_ref_wrong_variant_right": c,
        "mcnemar_p": mcnemar_exact(b, c),
        "max_abs_logit_diff": scores.max_abs_diff,
        "mean_abs_logit_diff": scores.mean_abs_diff,
        "per_class_accuracy_diff_points": [None if v is None else (v - r) * 100
                                           for v, r in zip(var_class, ref_class, strict=True)],
        "confusion_matrix": confusion.tolist(),
    }
