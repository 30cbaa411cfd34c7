"""Threshold-free quality of a detector score: the area under its ROC curve."""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import mannwhitneyu

__all__ = ["roc_auc"]


def roc_auc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    """ROC AUC of a score meant to be higher on ``positives`` than on ``negatives``.

    ``P(s⁺ > s⁻) + ½ P(s⁺ = s⁻)`` over all pairs — the Mann–Whitney U statistic divided by
    ``n⁺ n⁻`` (``scipy.stats.mannwhitneyu``, ties at mid-rank; ±∞ scores rank like any other).
    0.5 is chance; it does not depend on where a threshold is put, so it compares a detector's
    power on two kinds of input even where one threshold flags too many or too few.
    """
    neg, pos = (np.asarray(torch.as_tensor(v).detach().cpu().double().flatten()) for v in (negatives, positives))
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError(f"need at least one score on each side, got {len(neg)} negatives and {len(pos)} positives")
    if np.isnan(neg).any() or np.isnan(pos).any():
        raise ValueError("scores contain NaN")
    return float(mannwhitneyu(pos, neg, alternative="two-sided").statistic / (len(pos) * len(neg)))
