"""The int8 ladder (toolkit/export/ladder.py): a weight step (learned rounding, then fine-tuning) only where the
search on the weights before it misses the budget, and its file kept only where its own search meets it. The builds
are scripted; the files are real."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.export.ladder import FIRST, ROUNDING, SECOND, Rung, climb
from toolkit.export.variant import VariantFailed


class _Generation:
    def __init__(self, root: Path):
        self.root = root

    def file(self, name: str) -> Path:
        return self.root / name


def _builder(generation, outcomes: dict, calls: list):
    """build(ctx): writes tflite-int8.tflite (and a companion) holding the context's name; met as ``outcomes``."""

    def build(ctx):
        calls.append(ctx)
        if outcomes[ctx] == "raise":
            raise VariantFailed({"reason": "the converter refused it", "variant": "tflite-int8"})
        generation.file("tflite-int8.tflite").write_text(ctx)
        generation.file("tflite-int8.cc").write_text(ctx)
        return {"variant": "tflite-int8", "path": "artifacts-x/tflite-int8.tflite",
                "companions": [{"path": "artifacts-x/tflite-int8.cc"}], "accuracy_control": {"met": outcomes[ctx]}}

    return build


def _climb(tmp_path, outcomes, tuned_to, rounded_to=None):
    """The ladder with fine-tuning (making ``tuned_to``), and learned rounding before it when ``rounded_to``."""
    generation, calls, tunes = _Generation(tmp_path), [], []
    steps = [Rung(SECOND, lambda: tunes.append(1) or tuned_to, "tuned weights", "kept its own")]
    if rounded_to is not None:
        steps.insert(0, Rung(ROUNDING, lambda: tunes.append(0) or rounded_to, "rounded weights", "kept its own"))
    entry = climb(_builder(generation, outcomes, calls), "own", steps, generation)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["tflite-int8.cc", "tflite-int8.tflite"]  # nothing left aside
    return entry, calls, tunes, (tmp_path / "tflite-int8.tflite").read_text()


def test_a_budget_met_on_the_own_weights_runs_no_fine_tuning(tmp_path):
    entry, calls, tunes, content = _climb(tmp_path, {"own": True}, "tuned")
    assert calls == ["own"] and tunes == [] and content == "own"
    assert [r["rung"] for r in entry["ladder"]] == [FIRST, SECOND] and "skipped" in entry["ladder"][1]


def test_fine_tuning_that_kept_the_own_weights_builds_nothing_again(tmp_path):
    entry, calls, tunes, content = _climb(tmp_path, {"own": False}, "own")
    assert calls == ["own"] and tunes == [1] and content == "own"
    assert entry["ladder"][1]["kept"] is False


@pytest.mark.parametrize("second, kept", [(True, "tuned"), (False, "own"), ("raise", "own")])
def test_the_fine_tuned_file_replaces_the_first_only_when_its_search_meets_the_budget(tmp_path, second, kept):
    entry, calls, tunes, content = _climb(tmp_path, {"own": False, "tuned": second}, "tuned")
    assert calls == ["own", "tuned"] and content == kept
    assert (tmp_path / "tflite-int8.cc").read_text() == kept  # the companion goes with its artifact
    assert entry["ladder"][1]["kept"] is (kept == "tuned")
    assert ("weights" in entry) is (kept == "tuned")
    assert entry["accuracy_control"]["met"] is (kept == "tuned")


@pytest.mark.parametrize("rounded, tuned, built, kept, tunes", [
    (True, None, ["own", "rounded"], "rounded", [0]),  # learned rounding met it: no fine-tuning
    (False, True, ["own", "rounded", "tuned"], "tuned", [0, 1]),  # it missed: fine-tuning's file kept
    (False, False, ["own", "rounded", "tuned"], "own", [0, 1]),  # both missed: the first rung's file stands
    ("own", True, ["own", "tuned"], "tuned", [0, 1]),  # rounding kept the own weights: nothing built, next rung
])
def test_learned_rounding_is_the_rung_before_fine_tuning(tmp_path, rounded, tuned, built, kept, tunes):
    outcomes = {"own": False, "rounded": rounded, "tuned": tuned}
    entry, calls, made, content = _climb(tmp_path, outcomes, "tuned", rounded_to="own" if rounded == "own" else "rounded")
    assert calls == built and content == kept and made == tunes
    assert [r["rung"] for r in entry["ladder"]] == [FIRST, ROUNDING, SECOND]
    assert entry.get("weights") == {"own": None, "rounded": "rounded weights", "tuned": "tuned weights"}[kept]
    if kept == "rounded":
        assert "skipped" in entry["ladder"][2]


def test_a_rung_that_kept_the_own_weights_says_why_from_its_record(tmp_path):
    """A rung's ``kept_own`` may read the step's record when it is asked (learned rounding not run where the weights'
    rounding causes almost none of the error says so, rather than that it was not better)."""
    generation, calls, record = _Generation(tmp_path), [], {}
    steps = [Rung(ROUNDING, lambda: record.update(skipped="not run: weights 0.1%") or "own", "rounded weights",
                  lambda: f"learned rounding {record.get('skipped', 'was not better')}: the file before it stands")]
    entry = climb(_builder(generation, {"own": False}, calls), "own", steps, generation)
    assert calls == ["own"]
    assert entry["ladder"][1]["why"] == "learned rounding not run: weights 0.1%: the file before it stands"
