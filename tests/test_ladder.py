"""The int8 ladder (toolkit/export/ladder.py): fine-tuning only where the search on the model's own weights misses
the budget, and its file kept only where its own search meets it. The builds are scripted; the files are real."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.export.ladder import FIRST, SECOND, climb
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


def _climb(tmp_path, outcomes, tuned_to):
    generation, calls, tunes = _Generation(tmp_path), [], []
    entry = climb(_builder(generation, outcomes, calls), "own", lambda: tunes.append(1) or tuned_to, generation)
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
