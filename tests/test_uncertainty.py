"""featadv_core.analysis.uncertainty: intervals of a claim's number and the three-state verdict."""
from __future__ import annotations

import numpy as np
import pytest
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
    big = u.rate_interval(round(i.value * 4 * need), 4 * need)  # four times the predicted n, same rate
    assert u.judge(big, at_least=0.5) != "undecided"
