"""How sure a claim's number is: a 95 % interval, and a verdict in three states.

A claim compares a number measured over sampled units (pairs, images, guides) with a threshold.
The number gets an interval — exact (Clopper–Pearson) for a rate, a seeded bootstrap over the
units for a median, a mean or a ratio of two statistics — and the verdict (:func:`judge`) is
``"replicated"`` when the whole interval passes the threshold, ``"not replicated"`` when it all
fails, and ``"undecided"`` when it straddles it. :func:`n_to_decide` then estimates the number of
units at which the interval would stop straddling, from the rule that an interval's half-width
shrinks as 1/√n.

scipy does the statistics (``binomtest(...).proportion_ci``, ``stats.bootstrap``); this module
only names the intervals a claim needs and judges them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .statistics import as_array, spearman

__all__ = ["Interval", "STATES", "rate_interval", "bootstrap_interval", "ratio_interval", "difference_interval", "mean_interval",
           "spearman_interval", "spearman_difference_interval", "auc_interval", "judge", "judge_all", "n_to_decide"]

STATES = ("replicated", "not replicated", "undecided")
_STATISTICS = {"median": np.median, "mean": np.mean}
_BATCH = 256  # bootstrap resamples drawn at once: memory O(batch · n), not O(n_resamples · n), at paper scale
_EXACT = "exact binomial (Clopper–Pearson)"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided ``level`` interval over ``n`` sampled units."""

    value: float
    low: float
    high: float
    n: int
    method: str
    level: float = 0.95

    def __post_init__(self) -> None:
        if not (self.low <= self.high):
            raise ValueError(f"interval [{self.low}, {self.high}] is empty")

    def __neg__(self) -> "Interval":
        """The interval of −value: a two-sided claim |x| ≤ t is "x ≤ t and −x ≤ t" (:func:`judge_all`)."""
        return Interval(-self.value, -self.high, -self.low, self.n, self.method, self.level)

    def format(self, fmt: str = "{:.2f}") -> str:
        """``value [low, high], n = …`` with ``fmt`` for the three numbers (e.g. ``"{:.0%}"`` for a rate)."""
        return f"{fmt.format(self.value)} [{fmt.format(self.low)}, {fmt.format(self.high)}], n = {self.n}"


def rate_interval(successes, n: int | None = None, *, level: float = 0.95) -> Interval:
    """The share of successes with its exact (Clopper–Pearson) interval.

    ``successes`` is a count (then give ``n``) or a 1-d sequence of booleans, one per unit.
    """
    from scipy.stats import binomtest

    if n is None:
        flags = as_array(successes)
        k, n = int((flags != 0).sum()), int(flags.size)
    else:
        k = int(successes)
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {k} of {n}")
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return Interval(k / n, float(ci.low), float(ci.high), n, _EXACT, level)


def _statistic(name: str):
    if name not in _STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(_STATISTICS)}, got {name!r}")
    return _STATISTICS[name]


def _bootstrap(data: tuple, statistic, *, paired: bool, level: float, n_resamples: int, seed: int,
               n: int, label: str) -> Interval:
    from scipy.stats import bootstrap

    value = float(statistic(*data))
    if all(np.all(d == d[0]) for d in data):          # no spread: the interval is the point
        return Interval(value, value, value, n, label, level)
    res = bootstrap(data, statistic, paired=paired, vectorized=False, confidence_level=level, batch=_BATCH,
                    n_resamples=n_resamples, method="percentile", random_state=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isnan(value) or math.isnan(low) or math.isnan(high):
        raise ValueError(f"{label}: the statistic is undefined on the sample or on some resamples (a ratio whose "
                         "denominator resamples to 0?); judge an equivalent statistic without the division")
    return Interval(value, min(low, value), max(high, value), n, label, level)


def bootstrap_interval(samples, statistic: str = "median", *, level: float = 0.95, n_resamples: int = 2000,
                       seed: int = 0) -> Interval:
    """``statistic`` (``"median"`` or ``"mean"``) of the finite ``samples``, one per unit, with a seeded
    percentile-bootstrap interval (the units resampled with replacement)."""
    fn = _statistic(statistic)
    arr = as_array(samples)
    arr = arr[np.isfinite(arr)]
    if arr.size < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 finite samples, got {arr.size}")
    return _bootstrap((arr,), fn, paired=False, level=level, n_resamples=n_resamples, seed=seed, n=int(arr.size),
                      label=f"bootstrap of the {statistic} ({n_resamples} resamples)")


def _two_samples(a, b, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    """The finite values of two samples: rows with a non-finite value on either side dropped when ``paired``
    (one row per unit each), each side's own non-finite values otherwise; at least 2 on each side."""
    x, y = as_array(a), as_array(b)
    if paired:
        if x.shape != y.shape:
            raise ValueError(f"paired samples must have one value per unit each, got {x.shape} and {y.shape}")
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
    else:
        x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size < 2 or y.size < 2:
        raise ValueError("a bootstrap interval needs at least 2 finite samples on each side")
    return x, y


def mean_interval(values, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Interval:
    """The mean of per-unit values in [0, 1] (shares, flags) with its interval: exact binomial when every value is
    0 or 1 (a bootstrap of a sample that agrees collapses to a point), else :func:`bootstrap_interval` of the mean."""
    arr = as_array(values)
    arr = arr[np.isfinite(arr)]
    if arr.size and bool(((arr == 0) | (arr == 1)).all()):
        return rate_interval(arr.astype(bool), level=level)
    return bootstrap_interval(arr, "mean", level=level, n_resamples=n_resamples, seed=seed)


def ratio_interval(numerator, denominator, statistic: str = "median", *, paired: bool = True, level: float = 0.95,
                   n_resamples: int = 2000, seed: int = 0) -> Interval:
    """``statistic(numerator) / statistic(denominator)`` with a seeded bootstrap interval.

    ``paired=True``: both are measured on the same units (resampled together; rows with a
    non-finite value in either are dropped); ``False``: two independent samples, each resampled
    on its own. ``n`` is the number of (numerator) units.
    """
    fn = _statistic(statistic)
    a, b = _two_samples(numerator, denominator, paired)
    return _bootstrap((a, b), lambda x, y: fn(x) / fn(y), paired=paired, level=level, n_resamples=n_resamples,
                      seed=seed, n=int(a.size),
                      label=f"bootstrap of a ratio of {statistic}s ({'paired' if paired else 'two samples'}, "
                            f"{n_resamples} resamples)")


def difference_interval(a, b, statistic: str = "median", *, paired: bool = True, level: float = 0.95,
                        n_resamples: int = 2000, seed: int = 0) -> Interval:
    """``statistic(a) − statistic(b)`` with a seeded bootstrap interval: does one curve sit above another?

    ``paired=True``: ``a`` and ``b`` are measured on the same units (one row each; resampled together,
    rows with a non-finite value in either dropped), e.g. two layers' ratios over the same pairs;
    ``False``: two independent samples. ``n`` is the number of (``a``) units.
    """
    fn = _statistic(statistic)
    x, y = _two_samples(a, b, paired)
    scale = max(float(np.abs(x).max()), float(np.abs(y).max()))
    if paired and statistic == "mean" and scale > 0 and np.isin(x, (0, scale)).all() and np.isin(y, (0, scale)).all():
        return _paired_flag_difference(x / scale, y / scale, scale, level)
    return _bootstrap((x, y), lambda u, v: fn(u) - fn(v), paired=paired, level=level, n_resamples=n_resamples,
                      seed=seed, n=int(x.size),
                      label=f"bootstrap of a difference of {statistic}s ({'paired' if paired else 'two samples'}, "
                            f"{n_resamples} resamples)")


def auc_interval(negatives, positives, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Interval:
    """ROC AUC of a score meant to be higher on ``positives`` (:func:`featadv_core.metrics.roc_auc`, the
    Mann–Whitney U over n⁺ n⁻) with a seeded stratified percentile bootstrap: each side resampled on its own, so every
    resample keeps both classes' sizes (the usual interval for an AUC, e.g. pROC's). ``n`` is the number of positives.
    """
    from ..metrics.detection import roc_auc

    neg, pos = as_array(negatives), as_array(positives)
    if np.isnan(neg).any() or np.isnan(pos).any():
        raise ValueError("scores contain NaN")
    if neg.size < 2 or pos.size < 2:
        raise ValueError(f"an AUC's interval needs at least 2 scores on each side, got {neg.size} and {pos.size}")
    return _bootstrap((pos, neg), lambda p, q: roc_auc(q, p), paired=False, level=level, n_resamples=n_resamples,
                      seed=seed, n=int(pos.size), label=f"stratified bootstrap of a ROC AUC ({n_resamples} resamples)")


def _rank_rows(columns, level: float, n_resamples: int, seed: int, statistic) -> tuple[float, float, float, int]:
    """``statistic`` of paired columns (one row per unit; rows with a non-finite value dropped), with a seeded
    percentile bootstrap over the rows. A resample where a rank correlation is undefined (a constant column) is
    dropped; such resamples occur only for tiny n."""
    arrays = [as_array(c) for c in columns]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"paired samples must have one value per unit each, got {[a.shape for a in arrays]}")
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    arrays = [a[keep] for a in arrays]
    n = int(arrays[0].size)
    if n < 3:
        raise ValueError(f"a rank correlation's interval needs at least 3 units, got {n}")
    value = statistic(*arrays)
    if not math.isfinite(value):
        raise ValueError("Spearman's ρ is undefined: a column is constant")
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(*(a[i] for a in arrays)) for i in rng.integers(0, n, size=(n_resamples, n))])
    draws = draws[np.isfinite(draws)]
    tail = 100 * (1 - level) / 2
    low, high = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
    return float(value), min(low, value), max(high, value), n


def spearman_interval(x, y, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Interval:
    """Spearman's ρ of paired values (one (x, y) row per unit) with a seeded percentile-bootstrap interval, the rows
    resampled together. A resample whose x or y is constant has no ρ; such resamples are dropped (they occur only
    for tiny n)."""
    value, low, high, n = _rank_rows((x, y), level, n_resamples, seed, spearman)
    return Interval(value, low, high, n, f"bootstrap of Spearman's ρ (paired, {n_resamples} resamples)", level)


def spearman_difference_interval(x1, y1, x2, y2, *, level: float = 0.95, n_resamples: int = 2000,
                                 seed: int = 0) -> Interval:
    """ρ(x1, y1) − ρ(x2, y2), two Spearman correlations measured on the same units (one row of all four per unit),
    with a seeded percentile bootstrap that resamples the units' rows together — so the two ρ's dependence through
    the shared units is kept (two separate intervals that overlap do not say the difference straddles 0)."""
    value, low, high, n = _rank_rows((x1, y1, x2, y2), level, n_resamples, seed,
                                     lambda a, b, c, d: spearman(a, b) - spearman(c, d))
    return Interval(value, low, high, n, f"bootstrap of a difference of Spearman's ρ (paired, {n_resamples} resamples)",
                    level)


def _paired_flag_difference(x: np.ndarray, y: np.ndarray, scale: float, level: float) -> Interval:
    """mean(x) − mean(y) for paired 0/1 flags, as (b − c)/n with b, c the two kinds of discordant pairs, bounded by
    the exact intervals of b/n and c/n at level 1 − α/2 each (Bonferroni: conservative, and never of zero width —
    where every pair agrees, a bootstrap would return a point and call it certain); in ``scale`` units."""
    n = x.size
    b, c = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    half = 1 - (1 - level) / 2
    ib, ic = rate_interval(b, n, level=half), rate_interval(c, n, level=half)
    value = (b - c) / n
    return Interval(scale * value, scale * max(ib.low - ic.high, -1.0), scale * min(ib.high - ic.low, 1.0), n,
                    "exact paired difference of rates (Clopper–Pearson on the discordant pairs, Bonferroni)", level)


def _threshold(at_least: float | None, at_most: float | None) -> tuple[float, int]:
    if (at_least is None) == (at_most is None):
        raise ValueError("give exactly one of at_least and at_most")
    return (at_least, 1) if at_least is not None else (at_most, -1)


def judge(interval: Interval, *, at_least: float | None = None, at_most: float | None = None) -> str:
    """``"replicated"`` when the whole interval meets the criterion (value ≥ ``at_least`` or value ≤
    ``at_most``), ``"not replicated"`` when none of it does, ``"undecided"`` when it straddles it."""
    threshold, sign = _threshold(at_least, at_most)
    lo, hi = (interval.low, interval.high) if sign > 0 else (-interval.high, -interval.low)
    t = sign * threshold
    if lo >= t:
        return "replicated"
    if hi < t:
        return "not replicated"
    return "undecided"


def judge_all(intervals, *, at_least: float | None = None, at_most: float | None = None) -> str:
    """The verdict on "every one of ``intervals`` meets the criterion" (e.g. a curve stays above 0.8 at every
    δ): ``"replicated"`` when each does as a whole, ``"not replicated"`` as soon as one fails as a whole,
    else ``"undecided"``."""
    states = [judge(i, at_least=at_least, at_most=at_most) for i in intervals]
    if not states:
        raise ValueError("judge_all needs at least one interval")
    if "not replicated" in states:
        return "not replicated"
    return "undecided" if "undecided" in states else "replicated"


def n_to_decide(interval: Interval, *, at_least: float | None = None, at_most: float | None = None) -> int | None:
    """The number of units at which ``interval`` would no longer straddle the threshold.

    Half-widths shrink as 1/√n, so the side of the interval facing the threshold, of length h at n
    units, clears a gap g between the estimate and the threshold at about n·(h/g)². ``None`` when
    the estimate sits on the threshold (no n decides it); ``interval.n`` when already decided.
    """
    threshold, _ = _threshold(at_least, at_most)
    if judge(interval, at_least=at_least, at_most=at_most) != "undecided":
        return interval.n
    gap = abs(interval.value - threshold)
    if gap <= 1e-9 * max(1.0, abs(threshold)) or not math.isfinite(gap):  # on the threshold, up to float rounding
        return None
    if interval.method == _EXACT:
        return _binomial_n_to_decide(interval, at_least=at_least, at_most=at_most)
    half = interval.value - interval.low if threshold < interval.value else interval.high - interval.value
    return int(math.ceil(interval.n * (half / gap) ** 2 - 1e-9))   # (tolerating float rounding of exact ratios)


def _binomial_n_to_decide(interval: Interval, *, at_least: float | None, at_most: float | None) -> int:
    """The smallest n at which a rate observed at the same share gets an exact interval clear of the threshold.

    The 1/√n rule overestimates near 0 % and 100 %, where a Clopper–Pearson bound shrinks as 1/n (0 of n: the
    upper bound is ≈ 3.7/n), so the exact interval is recomputed instead, by doubling then bisection."""
    p, level = interval.value, interval.level

    def decided(n: int) -> bool:
        return judge(rate_interval(round(p * n), n, level=level), at_least=at_least, at_most=at_most) != "undecided"

    lo, hi = interval.n, 2 * interval.n
    while not decided(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decided(mid) else (mid, hi)
    return hi
