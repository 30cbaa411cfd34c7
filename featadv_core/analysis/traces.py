"""Class scores along one image-space direction (Jetley et al. 2018, Fig. 1–2, §4.1).

``F̃_c(s | i_n, d) = F_c(x̄ + i_n + s·d̂)``: the logits of images moved by ``s`` along a unit
direction ``d̂``, for a grid of ``s``. The images are *not* clipped to [0, 1] (the paper moves
far outside the image range: ±1500 grey levels in norm on CIFAR-10). The summaries below are
the chapter's checkable forms of the paper's three observations: the score is monotone on
both half-lines (:func:`half_line_trend`), roughly symmetric about some ``s₀``
(:func:`symmetry`), and its shape is shared across images, i.e. additively separable
(:func:`shape_spread`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import features
from .statistics import spearman

__all__ = ["scores_along", "half_line_trend", "symmetry", "shape_spread"]


@torch.no_grad()
def scores_along(model: nn.Module, x: torch.Tensor, direction: torch.Tensor, s: torch.Tensor | np.ndarray, *,
                 batch_size: int = 2048) -> torch.Tensor:
    """Logits of ``x + s_j · d̂`` for every image and every ``s_j``: N×S×C (CPU, float32).

    ``direction`` has one image's number of entries (any shape); it is normalised to unit L2.
    """
    s = torch.as_tensor(np.asarray(s), dtype=x.dtype)
    d = direction.reshape(x.shape[1:]).to(x)
    norm = d.norm()
    if not norm > 0:
        raise ValueError("direction must be non-zero")
    d = d / norm
    device, dtype = next(model.parameters()).device, features.model_dtype(model, x.dtype)
    grid = (x[:, None] + s.to(x.device)[None, :, None, None, None] * d).reshape(-1, *x.shape[1:])
    out = torch.cat([model(grid[i:i + batch_size].to(device=device, dtype=dtype)).float().cpu()
                     for i in range(0, len(grid), batch_size)])
    return out.view(len(x), len(s), -1)


def half_line_trend(s: np.ndarray, curve: np.ndarray) -> tuple[float, float]:
    """Spearman ρ of the curve against ``|s|`` on ``s > 0`` and on ``s < 0``: both ≈ 1 for a score rising both ways."""
    s, curve = np.asarray(s), np.asarray(curve)
    pos, neg = s > 0, s < 0
    return spearman(s[pos], curve[pos]), spearman(-s[neg], curve[neg])


def symmetry(s: np.ndarray, curve: np.ndarray, *, min_points: int | None = None) -> tuple[float, float]:
    """The best symmetry of a curve sampled on an even grid: ``max_{s₀} corr(F(s₀ + t), F(s₀ − t))`` and that ``s₀``.

    ``s₀`` runs over the grid points with at least ``min_points`` mirrored pairs on each side
    (default: a quarter of the grid, so that a few points near an end cannot fake a symmetry).
    """
    s, curve = np.asarray(s, dtype=float), np.asarray(curve, dtype=float)
    if min_points is None:
        min_points = max(2, len(s) // 4)
    best, where = -np.inf, float("nan")
    for j in range(len(s)):
        m = min(j, len(s) - 1 - j)
        if m < min_points:
            continue
        a, b = curve[j + 1:j + m + 1], curve[j - m:j][::-1]
        if a.std() == 0 or b.std() == 0:
            continue
        r = float(np.corrcoef(a, b)[0, 1])
        if r > best:
            best, where = r, float(s[j])
    return best, where


def shape_spread(traces: np.ndarray, zero_index: int) -> float:
    """How much curve *shapes* differ between images: additive separability (Fig. 1's observation).

    Each image's curve minus its value at ``s = 0`` (index ``zero_index``); the mean over ``s``
    of the across-image standard deviation, divided by the range of the median curve. 0 when all
    curves are vertical shifts of one another.
    """
    t = np.asarray(traces, dtype=float)
    shifted = t - t[:, zero_index:zero_index + 1]
    med = np.median(shifted, axis=0)
    span = med.max() - med.min()
    return float(shifted.std(axis=0).mean() / span) if span > 0 else float("inf")
