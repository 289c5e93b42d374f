import numpy as np
import pytest

from toolkit import stats
from toolkit.config import Gates
from toolkit.parity import compare, gates_for


def test_wilson_known_value():
    lo, hi = stats.wilson_interval(9_900, 10_000)
    assert lo == pytest.approx(0.987853, abs=1e-5) and hi == pytest.approx(0.991771, abs=1e-5)


def test_mcnemar_exact_known_values():
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert stats.mcnemar_exact(3, 3) == 1.0
    assert stats.mcnemar_exact(10, 0) == pytest.approx(2 / 1024)


def test_paired_difference_interval_contains_estimate():
    lo, hi = stats.paired_difference_interval(b=12, c=4, n=10_000)
    assert lo < (4 - 12) / 10_000 < hi
    assert stats.paired_difference_interval(0, 0, 100) == (0.0, 0.0)
    lo, hi = stats.paired_difference_interval(b=3, c=0, n=10_000)
    assert lo == pytest.approx(-3 / 10_000) and hi > 0


def test_compare_counts_and_gates():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1000)
    ref = np.eye(10, dtype=np.float32)[labels] * 5  # reference always right
    var = ref.copy()
    var[:6] = np.roll(var[:6], 1, axis=1)  # variant wrong on 6 images
    m = compare(ref, var, labels)
    assert m["accuracy"] == pytest.approx(0.994) and m["disagreements"] == 6
    assert m["discordant_ref_right_variant_wrong"] == 6 and m["discordant_ref_wrong_variant_right"] == 0
    assert m["accuracy_diff_points"] == pytest.approx(-0.6)
    assert m["max_abs_logit_diff"] == pytest.approx(5.0)
    assert np.array(m["confusion_matrix"]).sum() == 1000
    float_gates = gates_for("none", m, Gates())
    assert not all(g.passed for g in float_gates)
    int8_gates = {g.metric: g.passed for g in gates_for("int8", m, Gates())}
    assert int8_gates == {"accuracy_loss_points": False, "agreement_percent": False}
    assert all(g.passed for g in gates_for("int8", m, Gates(int8_max_accuracy_loss=0.7, int8_min_agreement=99.0)))
