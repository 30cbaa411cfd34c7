"""Summaries of per-pair statistics: median, mean ± std, standard error, t-statistic, and tests.

Chapter 1 (Sabour et al. 2016) reports per-pair statistics — distance ratios, ΔS, I/U —
summarised over many source–guide pairs. These take a 1-d tensor, array or sequence; NaN/inf
values (e.g. a ratio with a zero denominator) are left out. Chapter 2 compares classifiers on
one test set (:func:`mcnemar`) and trends across layers (:func:`spearman`).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["as_array", "median", "describe", "one_sample_t", "mcnemar", "spearman"]


def as_array(values) -> np.ndarray:
    """1-d float64 NumPy array of ``values`` (a tensor on any device, an array or a sequence)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-d sequence of per-pair values, got shape {arr.shape}")
    return arr


def _finite(values) -> np.ndarray:
    arr = as_array(values)
    return arr[np.isfinite(arr)]


def median(values) -> float:
    """Median of the finite values (NaN if none), the average of the two middle ones for an even
    count — as :func:`curve_summary`'s ``q50``, unlike ``torch.median``, which returns the lower."""
    arr = _finite(values)
    return float(np.median(arr)) if arr.size else math.nan


def describe(values) -> dict[str, float]:
    """``n``, ``mean``, ``std`` (sample, ddof=1), ``sem`` = std/√n and ``t`` = mean/sem of the finite values.

    ``t`` is the one-sample t-statistic of the hypothesis "mean = 0". With fewer than two values
    ``std``, ``sem`` and ``t`` are NaN; with zero spread, ``t`` is ±inf (or NaN for a zero mean).
    """
    arr = _finite(values)
    n = int(arr.size)
    mean = float(arr.mean()) if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "sem": math.nan, "t": math.nan}
    std = float(arr.std(ddof=1))
    sem = std / math.sqrt(n)
    if sem > 0:
        t = mean / sem
    else:
        t = math.nan if mean == 0 else math.copysign(math.inf, mean)
    return {"n": n, "mean": mean, "std": std, "sem": sem, "t": t}


def one_sample_t(values) -> float:
    """One-sample t-statistic ``mean / (std / √n)`` of the finite values (see :func:`describe`)."""
    return describe(values)["t"]


def mcnemar(correct_a, correct_b) -> dict[str, float]:
    """Exact McNemar test of two classifiers on the same test images (scipy's binomial test).

    ``correct_a``, ``correct_b``: per-image booleans. Returns ``a_only`` and ``b_only`` (the
    discordant counts: images only ``a`` resp. only ``b`` gets right) and the two-sided ``p`` of
    "both err equally often" (1 when there are no discordant images).
    """
    from scipy.stats import binomtest

    a, b = as_array(correct_a).astype(bool), as_array(correct_b).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"both classifiers must be scored on the same images, got {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    n = a_only + b_only
    p = float(binomtest(min(a_only, b_only), n, 0.5).pvalue) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": p}


def spearman(x, y) -> float:
    """Spearman's rank correlation of two sequences (scipy), NaN when either is constant or too short."""
    from scipy.stats import spearmanr

    x, y = as_array(x), as_array(y)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(spearmanr(x, y).statistic)
