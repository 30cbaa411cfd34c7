"""FGS, FGV and hot/cold: fixed gradient directions and the shared 8-bit line search.

* FGS — fast gradient sign (Goodfellow et al. 2015), searched up to 255 grey levels (a sign
  direction saturates fully there);
* FGV — fast gradient value (Rozsa et al. 2016, §4.1), the raw gradient, searched up to 2,550;
* hot/cold (Rozsa et al. 2016, §4.2), one attempt per hot class, searched up to 2,550.

All are untargeted by default (success = the classification changes, Rozsa et al. 2017,
Table 1); hot/cold can instead stop at its hot class (``stop="target"``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..images import check_images
from .directions import gradient_direction, hot_cold_direction
from .line_search import Attempts, line_search, predict_labels

__all__ = ["fgs", "fgv", "hot_cold"]


def _labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    check_images(x)
    return predict_labels(model, x, batch_size=batch_size) if y is None else torch.as_tensor(y, device=x.device).long()


def _gradient_attack(model, x, y, kind, eps_max, grid_points, bisect_steps, batch_size, details):
    y = _labels(model, x, y, batch_size)
    eta = torch.cat([gradient_direction(model, x[i:i + batch_size], y[i:i + batch_size], kind=kind)
                     for i in range(0, len(x), batch_size)])
    res = line_search(model, x, eta, y_orig=y, eps_max=eps_max, grid_points=grid_points,
                      bisect_steps=bisect_steps, batch_size=batch_size)
    return (res.images, res) if details else res.images


def fgs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps_max: float = 1.0,
        grid_points: int = 30, bisect_steps: int = 10, batch_size: int = 1024,
        details: bool = False) -> torch.Tensor | tuple[torch.Tensor, Attempts]:
    """Fast gradient sign: the smallest ``ε`` with ``c(x + ε·sign(∇J)) ≠ y`` on 8-bit images.

    ``y`` defaults to the model's own predictions. Returns the images (the origin where the
    attempt failed) and, with ``details=True``, the per-attempt :class:`.Attempts`.
    """
    return _gradient_attack(model, x, y, "sign", eps_max, grid_points, bisect_steps, batch_size, details)


def fgv(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps_max: float = 10.0,
        grid_points: int = 30, bisect_steps: int = 10, batch_size: int = 1024,
        details: bool = False) -> torch.Tensor | tuple[torch.Tensor, Attempts]:
    """Fast gradient value: :func:`fgs` with the raw, L∞-normalised gradient instead of its sign."""
    return _gradient_attack(model, x, y, "value", eps_max, grid_points, bisect_steps, batch_size, details)


def hot_cold(model: nn.Module, x: torch.Tensor, hot: torch.Tensor, *, y: torch.Tensor | None = None,
             stop: str = "label_change", eps_max: float = 10.0, grid_points: int = 30, bisect_steps: int = 10,
             batch_size: int = 1024, details: bool = False) -> torch.Tensor | tuple[torch.Tensor, Attempts]:
    """Hot/cold adversarial images: the hot/cold direction towards class ``hot``, then the line search.

    ``stop="label_change"`` (Table 1's success) or ``"target"`` (the hot class reached).
    """
    if stop not in ("label_change", "target"):
        raise ValueError(f"stop must be 'label_change' or 'target', got {stop!r}")
    y = _labels(model, x, y, batch_size)
    hot = torch.as_tensor(hot, device=x.device).long()
    eta = torch.cat([hot_cold_direction(model, x[i:i + batch_size], y[i:i + batch_size], hot[i:i + batch_size])
                     for i in range(0, len(x), batch_size)])
    res = line_search(model, x, eta, y_orig=y, target=hot if stop == "target" else None, eps_max=eps_max,
                      grid_points=grid_points, bisect_steps=bisect_steps, batch_size=batch_size)
    return (res.images, res) if details else res.images
