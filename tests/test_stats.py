import numpy as np
import pytest

from toolkit import stats
from toolkit.config import Gates
from toolkit.parity import compare
from toolkit.verdicts import parity_gates


def test_wilson_known_value():
    lo, hi = stats.wilson_interval(9_900, 10_000)
    assert lo == pytest.approx(0.987853, abs=1e-5) and hi == pytest.approx(0.991771, abs=1e-5)


def test_mcnemar_exact_known_values():
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert stats.mcnemar_exact(3, 3) == 1.0
    assert stats.mcnemar_exact(10, 0) == pytest.approx(2 / 1024)


def test_wilson_matches_scipy():
    from scipy.stats import binomtest

    for k, n in ((0, 10), (3, 10), (9_930, 10_000), (1_000, 1_000)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert stats.wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


@pytest.mark.parametrize("table, expected", [
    # Newcombe (1998), Statistics in Medicine 17:2635, Table II, method 10
    ((36, 12, 2, 0), (0.0569, 0.3404)),
    ((18, 12, 2, 18), (0.0562, 0.3290)),
    ((53, 0, 0, 1), (-0.0729, 0.0729)),  # no discordant pair: still an honest width
    ((0, 30, 0, 0), (0.8395, 1.0)),
])
def test_newcombe_paired_interval_published_values(table, expected):
    lo, hi = stats.newcombe_paired_interval(*table)
    assert lo == pytest.approx(expected[0], abs=1e-4) and hi == pytest.approx(expected[1], abs=1e-4)


def test_newcombe_without_correlation_is_the_independent_square_and_add():
    """With phi = 0 (here: eh - fg within n/2) the paired interval is Newcombe's square-and-add of the
    two Wilson intervals, the independent-samples method 10."""
    e, f, g, h = 4, 2, 2, 1  # eh - fg = 0
    n = e + f + g + h
    p1, p2 = (e + f) / n, (e + g) / n
    l1, u1 = stats.wilson_interval(e + f, n)
    l2, u2 = stats.wilson_interval(e + g, n)
    lo = p1 - p2 - ((p1 - l1) ** 2 + (u2 - p2) ** 2) ** 0.5
    hi = p1 - p2 + ((u1 - p1) ** 2 + (p2 - l2) ** 2) ** 0.5
    assert stats.newcombe_paired_interval(e, f, g, h) == pytest.approx((lo, hi))


def test_paired_difference_interval_contains_estimate_and_is_never_zero_width():
    lo, hi = stats.paired_difference_interval(b=12, c=4, n=10_000, both_right=9_900)
    assert lo < (4 - 12) / 10_000 < hi
    lo, hi = stats.paired_difference_interval(0, 0, 1_000, both_right=990)  # a 1,000-image TFLM sample
    assert lo < 0 < hi and hi - lo > 0.005  # not "+0.00 to +0.00"
    lo, hi = stats.paired_difference_interval(b=3, c=0, n=10_000, both_right=9_900)
    assert lo < -3 / 10_000 < hi and hi > 0


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
    float_gates = {g.metric: g.status for g in parity_gates("none", m, Gates())}
    assert float_gates == {"agreement_percent": "fail", "max_abs_logit_diff": "fail"}  # 99.4% [98.7, 99.7] < 99.95
    # 6 of 1,000 images lost: loss 0.6 points, 95% CI about 0.27 to 1.3; agreement 99.4%, CI 98.7 to 99.7
    int8_gates = {g.metric: g.status for g in parity_gates("int8", m, Gates())}
    assert int8_gates == {"accuracy_loss_points": "inconclusive", "agreement_percent": "inconclusive"}
    assert {g.status for g in parity_gates("int8", m, Gates(int8_max_accuracy_loss=2.0, int8_min_agreement=98.0))} \
        == {"pass"}
    assert {g.status for g in parity_gates("int8", m, Gates(int8_max_accuracy_loss=0.05, int8_min_agreement=99.9))} \
        == {"fail"}


def test_quantile_interval_has_at_least_nominal_coverage_for_every_n():
    """The exact coverage of the order-statistic interval, P(l < B <= u) for B ~ Binomial(n, q), is at least
    95% for every n from 2 to 600 (p50 and p90), or there is no interval: below 6 samples for the p50 and 29
    for the p90 even [min, max] covers less (65% for the p90 of 10), and the row says so (None, JSON null)
    rather than print an interval that promises 95%. A simulation (exponential samples: skewed like
    latencies) agrees. An earlier version took the lower bound one rank too high (about 93% near n = 50)."""
    from scipy.stats import binom

    from toolkit.timing import quantile_interval, quantile_ranks, summarize

    for q, smallest in ((0.5, 6), (0.9, 29)):
        for n in range(2, 601):
            ranks = quantile_ranks(n, q)
            if n < smallest:
                assert ranks is None and quantile_interval(np.arange(n, dtype=float), q) is None, (q, n)
                continue
            lo, hi = ranks
            assert 0 <= lo < hi <= n - 1 and binom.cdf(hi, n, q) - binom.cdf(lo, n, q) >= 0.95, (q, n, lo, hi)
    assert binom.cdf(9, 10, 0.9) - binom.cdf(0, 10, 0.9) < 0.66  # [min, max] of 10 samples: the p90 at 65%
    row = summarize([1_000_000 + k for k in range(10)], 1)
    assert row["p90_ci95_ms"] is None and row["p50_ci95_ms"] is not None
    rng = np.random.default_rng(0)
    reps = 3000
    for n in (20, 30, 49, 50, 51, 100, 250):
        for q in (0.5, 0.9):
            if binom.cdf(n - 1, n, q) - binom.cdf(0, n, q) < 0.95:
                continue  # no interval of 20 samples covers their p90 95% of the time
            truth = -np.log(1 - q)  # the exponential's q-quantile
            samples = np.sort(rng.exponential(size=(reps, n)), axis=1)  # reps runs of n samples each
            lo, hi = quantile_ranks(n, q)  # quantile_interval is these order statistics of each run:
            assert quantile_interval(samples[0], q) == [samples[0, lo], samples[0, hi]]
            hits = int(np.sum((samples[:, lo] <= truth) & (truth <= samples[:, hi])))
            assert hits / reps >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / reps), (n, q, hits / reps)
