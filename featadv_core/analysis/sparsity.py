"""Sparsity of activation patterns: Table 2 of Sabour et al. 2016 (§5, "Comparison to label-opt").

"If the degree of sparsity increases after the adversarial perturbation, the adversarial
example is using additional paths … We also investigate how many activated units are shared
between the source and the adversary, by computing the intersection over union I/U of active
units." A unit is *active* when ``|f| > tol`` (``tol = 0``: non-zero, the natural choice for
post-ReLU layers). Features are ``N×...`` and are flattened per sample.
"""
from __future__ import annotations

import torch

from ..metrics.distances import _rowwise_pair, flatten

__all__ = ["active_fraction", "sparsity_change", "active_iou"]


def _check_tol(tol: float) -> None:
    if not tol >= 0:
        raise ValueError(f"tol must be a non-negative number, got {tol}")


def _active(feats: torch.Tensor, tol: float) -> torch.Tensor:
    return feats.abs() > tol


def active_fraction(feats: torch.Tensor, *, tol: float = 0.0) -> torch.Tensor:
    """Percentage (0–100) of a layer's units that are active (``|f| > tol``), per sample → ``(N,)``.

    The "sparsity … quantified as a percentage of the size of each layer" of Table 2.
    Note the unit: percent, not a fraction in [0, 1], so differences are percentage points.
    """
    _check_tol(tol)
    feats = flatten(feats)
    if feats.shape[1] == 0:
        raise ValueError("features have dimension 0")
    return 100.0 * _active(feats, tol).to(feats.dtype).mean(1)


def sparsity_change(f_adv: torch.Tensor, f_src: torch.Tensor, *, tol: float = 0.0) -> torch.Tensor:
    """``ΔS = active_fraction(α) − active_fraction(s)`` in percentage points, per pair → ``(N,)``.

    Table 2's ΔS: positive when the adversary activates more units than its source.
    ``f_adv`` and ``f_src`` are paired row by row (one of them may have a single row).
    """
    f_adv, f_src = _rowwise_pair(f_adv, f_src, "f_adv and f_src")
    return active_fraction(f_adv, tol=tol) - active_fraction(f_src, tol=tol)


def active_iou(f_adv: torch.Tensor, f_src: torch.Tensor, *, tol: float = 0.0) -> torch.Tensor:
    """Intersection over union ``|A ∩ S| / |A ∪ S|`` of the active units, per pair → ``(N,)`` in [0, 1].

    Table 2's "I/U with s": ``A`` and ``S`` are the active units of the adversary and of its
    source. Two all-inactive encodings have identical (empty) patterns and get 1.
    """
    _check_tol(tol)
    f_adv, f_src = _rowwise_pair(f_adv, f_src, "f_adv and f_src")
    a, s = _active(f_adv, tol), _active(f_src, tol)
    inter = (a & s).sum(1)
    union = (a | s).sum(1)
    iou = inter.to(f_adv.dtype) / union.clamp_min(1).to(f_adv.dtype)
    return torch.where(union == 0, torch.ones_like(iou), iou)
