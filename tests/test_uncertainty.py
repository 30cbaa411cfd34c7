"""featadv_core.analysis.uncertainty: intervals of a claim's number and the three-state verdict."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featadv_core.analysis import uncertainty as u


def test_rate_interval_known_answers():
    """Clopper–Pearson 95 % intervals as tabulated (e.g. Newcombe 1998, Table I): 5/10 and 0/10."""
    half = u.rate_interval(5, 10)
    assert half.value == 0.5 and half.low == pytest.approx(0.1871, abs=1e-4) and half.high == pytest.approx(0.8129, abs=1e-4)
    none = u.rate_interval(np.zeros(10, dtype=bool))
    assert none.low == 0 and none.high == pytest.approx(0.3085, abs=1e-4) and none.n == 10
    with pytest.raises(ValueError, match="successes"):
        u.rate_interval(11, 10)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_rate_interval_contains_the_rate(kn):
    k, n = kn
    i = u.rate_interval(k, n)
    assert 0 <= i.low <= k / n <= i.high <= 1


def test_bootstrap_median_of_a_normal_sample():
    """The bootstrap interval of a median covers the true median and has the asymptotic width
    2·1.96·√(π/2)·σ/√n ≈ 0.246 for n = 400 (within 30 %); seeded, so it repeats exactly."""
    x = np.random.default_rng(1).standard_normal(400)
    i = u.bootstrap_interval(x, "median")
    assert i.low < 0 < i.high and (i.high - i.low) == pytest.approx(0.246, rel=0.3)
    assert i == u.bootstrap_interval(x, "median") and i.n == 400
    assert u.bootstrap_interval(np.full(5, 2.0)) == u.Interval(2.0, 2.0, 2.0, 5, i.method)
    with pytest.raises(ValueError, match="statistic"):
        u.bootstrap_interval(x, "mode")


def test_ratio_interval_paired_and_unpaired():
    rng = np.random.default_rng(2)
    a = rng.normal(2.0, 0.1, 200)
    paired = u.ratio_interval(a, a / 2, "mean")               # exactly 2 on every resample
    assert paired.value == pytest.approx(2.0) and paired.high - paired.low < 1e-9
    two = u.ratio_interval(a, rng.normal(1.0, 0.1, 300), "mean", paired=False)
    assert two.low < 2.0 < two.high and two.n == 200
    with pytest.raises(ValueError, match="one value per unit"):
        u.ratio_interval(a, a[:10])


def test_a_ratio_undefined_on_resamples_is_a_clear_error():
    """A denominator with one nonzero unit in 20 resamples to all zeros often (0/0 on some resamples): a clear error
    that names the remedy, not an "empty interval [nan, nan]"."""
    den = np.zeros(20)
    den[0] = 1.0
    with np.errstate(invalid="ignore", divide="ignore"), pytest.raises(ValueError, match="undefined .* resamples"):
        u.ratio_interval(np.zeros(20) + (np.arange(20) < 1), den, "mean")


def test_judge_three_states_and_the_n_that_decides():
    i = u.Interval(0.7, 0.6, 0.8, 100, "test")
    assert u.judge(i, at_least=0.5) == "replicated" and u.judge(i, at_least=0.9) == "not replicated"
    assert u.judge(i, at_least=0.65) == "undecided" and u.judge(i, at_most=0.65) == "undecided"
    assert u.judge(i, at_most=0.85) == "replicated" and u.judge(i, at_most=0.55) == "not replicated"
    assert u.n_to_decide(i, at_least=0.65) == 400             # half-width 0.1 must shrink to the gap 0.05
    assert u.n_to_decide(i, at_most=0.75) == 400
    assert u.n_to_decide(i, at_least=0.5) == 100
    assert u.n_to_decide(u.Interval(0.7, 0.6, 0.8, 100, "t"), at_least=0.7) is None
    with pytest.raises(ValueError, match="exactly one"):
        u.judge(i)


@settings(max_examples=25, deadline=None)
@given(st.integers(20, 200), st.integers(0, 10_000))
def test_more_units_decide_a_true_difference(n, seed):
    """An undecided rate becomes decided at about the n that n_to_decide predicts (same true rate)."""
    rng = np.random.default_rng(seed)
    i = u.rate_interval(rng.random(n) < 0.7)
    need = u.n_to_decide(i, at_least=0.5)
    if need is None or u.judge(i, at_least=0.5) != "undecided":
        return
    assert need > n
    big = u.rate_interval(round(i.value * need), need)  # exactly the predicted n, same rate: decided
    assert u.judge(big, at_least=0.5) != "undecided"


def test_n_to_decide_at_zero_is_the_rule_of_three_not_the_square_root_rule():
    """0 of 20 against "≤ 5 %": the exact upper bound shrinks as ≈ 3.7/n, so about 72 units decide it; the
    1/√n rule would ask for ≈ 20 · (0.168 / 0.05)² ≈ 226."""
    i = u.rate_interval(0, 20)
    assert u.judge(i, at_most=0.05) == "undecided"
    need = u.n_to_decide(i, at_most=0.05)
    assert u.judge(u.rate_interval(0, need), at_most=0.05) == "replicated"
    assert u.judge(u.rate_interval(0, need - 1), at_most=0.05) == "undecided"
    assert 60 < need < 80


def test_spearman_interval_known_answers():
    """A perfect monotone relation: ρ = 1 and every resample agrees; independent noise: an interval around 0."""
    x = np.arange(30.0)
    perfect = u.spearman_interval(x, x ** 3)
    assert perfect.value == pytest.approx(1.0) and perfect.low == pytest.approx(1.0) and perfect.n == 30
    rng = np.random.default_rng(0)
    noise = u.spearman_interval(rng.random(200), rng.random(200), seed=1)
    assert noise.low < 0 < noise.high and noise.high - noise.low < 0.4
    assert u.spearman_interval(rng.random(200), rng.random(200), seed=1).n == 200
    with pytest.raises(ValueError, match="constant"):
        u.spearman_interval(x, np.ones(30))
    with pytest.raises(ValueError, match="at least 3"):
        u.spearman_interval([1.0, 2.0], [2.0, 1.0])


def test_spearman_difference_interval_pairs_the_units():
    """Two rank correlations over the same 60 units: a near-perfect one minus a weak one is clearly positive; the same
    correlation twice is exactly 0 with a zero-width interval (every resample cancels), which two separate intervals
    could not show; a unit with a non-finite value in any column is dropped from all four."""
    rng = np.random.default_rng(0)
    x = rng.random(60)
    strong, weak = x + rng.normal(scale=0.01, size=60), x + rng.normal(scale=1.0, size=60)
    diff = u.spearman_difference_interval(x, strong, x, weak, seed=2)
    assert diff.value == pytest.approx(u.spearman_interval(x, strong).value - u.spearman_interval(x, weak).value)
    assert 0 < diff.low <= diff.value <= diff.high and diff.n == 60
    same = u.spearman_difference_interval(x, weak, x, weak)
    assert same.value == same.low == same.high == 0.0
    holed = weak.copy()
    holed[:5] = np.nan
    assert u.spearman_difference_interval(x, strong, x, holed).n == 55
    with pytest.raises(ValueError, match="one value per unit"):
        u.spearman_difference_interval(x, strong, x[:10], weak[:10])


def test_auc_interval_known_answers():
    """Perfectly separated scores: AUC 1 with a point interval; two draws of one distribution: an interval around ½
    whose value is the metric's own AUC; a small shift of 0.5 σ over 300 a side: AUC ≈ Φ(0.5/√2) ≈ 0.64, interval
    above ½ and containing it."""
    from featadv_core.metrics import roc_auc

    assert u.auc_interval(np.arange(10.0), np.arange(10.0) + 100).low == 1.0
    rng = np.random.default_rng(0)
    neg, same = rng.normal(size=300), rng.normal(size=300)
    iv = u.auc_interval(neg, same, seed=1)
    assert iv.value == pytest.approx(roc_auc(torch.as_tensor(neg), torch.as_tensor(same)))
    assert iv.low < 0.5 < iv.high and iv.n == 300
    shifted = u.auc_interval(neg, rng.normal(loc=0.5, size=300), seed=1)
    assert 0.5 < shifted.low < 0.64 < shifted.high < 0.75
    with pytest.raises(ValueError, match="at least 2"):
        u.auc_interval(neg, [1.0])
    with pytest.raises(ValueError, match="NaN"):
        u.auc_interval(neg, [1.0, np.nan])


def test_difference_interval_paired_sees_a_shift_the_unpaired_cannot():
    """Two curves over the same 30 pairs, one 0.05 above the other with pair-to-pair spread 1: the paired
    interval of the difference of medians excludes 0, the two-sample one does not."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=30)
    above = base + 0.05 + rng.normal(scale=0.005, size=30)
    paired = u.difference_interval(above, base, "median")
    unpaired = u.difference_interval(above, base, "median", paired=False)
    assert paired.value == pytest.approx(np.median(above) - np.median(base))
    assert 0 < paired.low <= paired.high < 0.1 and unpaired.low < 0 < unpaired.high and paired.n == 30
    with pytest.raises(ValueError, match="one value per unit"):
        u.difference_interval(above, base[:10])


def test_a_two_sided_claim_is_an_interval_and_its_negation():
    gap = u.Interval(1.0, -0.5, 2.5, 20, "t")
    assert (-gap) == u.Interval(-1.0, -2.5, 0.5, 20, "t")
    assert u.judge_all([gap, -gap], at_most=3.0) == "replicated"      # |gap| ≤ 3 everywhere in the interval
    assert u.judge_all([gap, -gap], at_most=2.0) == "undecided"


def test_judge_all_needs_every_interval():
    ok, straddles, fails = u.Interval(0.9, 0.85, 0.95, 16, "t"), u.Interval(0.8, 0.7, 0.9, 16, "t"), \
        u.Interval(0.5, 0.4, 0.6, 16, "t")
    assert u.judge_all([ok, ok], at_least=0.75) == "replicated"
    assert u.judge_all([ok, straddles], at_least=0.75) == "undecided"
    assert u.judge_all([ok, straddles, fails], at_least=0.75) == "not replicated"
    assert u.judge_all([fails], at_most=0.75) == "replicated"
    with pytest.raises(ValueError, match="at least one"):
        u.judge_all([], at_least=0.5)


def test_mean_interval_is_exact_for_flags_and_bootstrapped_for_shares():
    flags = np.array([1.0] * 16)
    assert u.mean_interval(flags) == u.rate_interval(16, 16)          # not a zero-width bootstrap
    shares = np.linspace(0, 1, 21)
    assert u.mean_interval(shares, seed=0) == u.bootstrap_interval(shares, "mean", seed=0)


def test_n_to_decide_on_the_threshold_up_to_rounding_is_none():
    on = u.Interval(0.1 - 1e-17, 0.05, 0.15, 10, "t")
    assert u.judge(on, at_least=0.1) == "undecided" and u.n_to_decide(on, at_least=0.1) is None


def test_a_paired_difference_of_flags_is_never_certain_from_agreement_alone():
    """Four images, correct under both attacks: a bootstrap would say "0, exactly"; the exact interval is wide."""
    same = np.ones(4)
    i = u.difference_interval(same, same, "mean")
    assert i.value == 0 and i.low < -0.5 and i.high > 0.5 and i.n == 4
    scaled = u.difference_interval(100 * same, 100 * same, "mean")
    assert scaled.low == pytest.approx(100 * i.low) and scaled.high == pytest.approx(100 * i.high)
    rng = np.random.default_rng(0)
    a = rng.random(2000) < 0.6
    b = a & (rng.random(2000) < 0.8)                        # b loses a fifth of a's successes
    d = u.difference_interval(a.astype(float), b.astype(float), "mean")
    assert d.low < a.mean() - b.mean() < d.high and d.low > 0.08 and d.high < 0.16
