"""The line search shared by FGS, FGV, hot/cold and LOTS, on 8-bit images (Rozsa et al. 2016/2017).

The papers fix a direction ``η`` per attempt and search along it for the smallest scale that
changes the classification (untargeted) or reaches a target class (targeted), with every image
in {0, …, 255}. Our resolution of the unstated details (chapter 2's specification, §2.3):

1. the direction is normalised to unit L∞, ``d = η / ‖η‖∞``, so the scale ``ε`` is the nominal
   L∞ of the perturbation before rounding and clipping (Fig. 1: "scaled such that L∞ = 128");
2. every candidate is ``x(ε) = clip(round(255·(x_o + ε d)), 0, 255) / 255`` — what is evaluated
   is what is returned;
3. scales run up a geometric grid from one grey level to the attempt's ``eps_max`` (its own
   grid, so that a result never depends on the batch it ran in); at the first grid point
   that meets the criterion, the bracket ``(ε_{k−1}, ε_k]`` is bisected, keeping the upper end
   meeting it (so the result always meets it);
4. ``‖η‖∞ = 0`` (e.g. a saturated softmax) or no success up to ``eps_max`` is a failure, and the
   origin itself is returned.

All attempts advance together: one batched forward per grid point (attempts that succeeded drop
out) and per bisection step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..images import check_images
from ..labels import predict_labels  # the core's one label predictor, exported here for the attacks

__all__ = ["Attempts", "line_search", "apply_direction", "scale_grid", "unit_linf", "predict_labels"]

GREY = 255  # the papers' 8-bit images: norms are reported in grey levels


@dataclass
class Attempts:
    """Per-attempt results of a line-search (or iterative) attack; every tensor has N rows.

    ``images`` are on the 8-bit grid in [0, 1] (the origin, rounded to that grid, where the
    attempt failed); ``scale``
    the final ``ε`` in pixel units (NaN for failures and for iterative attacks); ``steps`` the
    iterations an iterative attack took (0 for the line search); ``l2`` and ``linf`` the norms of
    the applied perturbation ``images − origin`` in grey levels (0–255), as the papers report
    them; ``zero_direction`` marks attempts that failed because ``η`` was exactly zero; ``stalled``
    iterative attempts that stopped because rounding to the 8-bit grid left the iterate where it was
    (every pixel that would move is saturated) or sent it back to the one before (a 2-cycle): no
    further step could change the outcome (always ``False`` for the line search).
    """

    images: torch.Tensor
    success: torch.Tensor
    labels: torch.Tensor
    scale: torch.Tensor
    steps: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    zero_direction: torch.Tensor
    stalled: torch.Tensor

    def __len__(self) -> int:
        return len(self.success)

    def to(self, device: str | torch.device) -> "Attempts":
        return Attempts(**{k: v.to(device) for k, v in vars(self).items()})

    @staticmethod
    def cat(parts: "list[Attempts]") -> "Attempts":
        return Attempts(**{k: torch.cat([getattr(p, k) for p in parts]) for k in vars(parts[0])})


def unit_linf(direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d, zero)``: each row of ``direction`` divided by its L∞ norm (float64), and where that norm is 0.

    Rows with ``‖η‖∞ = 0`` stay zero; no epsilon guards the division, so a tiny non-zero
    direction is scaled up exactly like the paper's.
    """
    eta = direction.detach().to(torch.float64)
    norm = eta.flatten(1).abs().amax(1)
    zero = norm == 0
    d = eta / torch.where(zero, torch.ones_like(norm), norm).view(-1, *[1] * (eta.dim() - 1))
    return d, zero


def apply_direction(x: torch.Tensor, d: torch.Tensor, eps: torch.Tensor | float, *, levels: int = GREY) -> torch.Tensor:
    """``clip(round(levels·(x + eps·d)), 0, levels) / levels`` in ``x``'s dtype: an 8-bit image.

    ``d`` is a unit-L∞ direction (:func:`unit_linf`), ``eps`` a float or one scale per image
    (pixel units). Computed in float64 so that no grid value is off by one level.
    """
    e = torch.as_tensor(eps, dtype=torch.float64, device=x.device)
    if e.dim() == 1:
        e = e.view(-1, *[1] * (x.dim() - 1))
    k = torch.round((x.detach().to(torch.float64) + e * d.to(torch.float64)) * levels).clamp(0, levels)
    return (k / levels).to(x.dtype)


def scale_grid(eps_max: float, points: int, *, levels: int = GREY) -> torch.Tensor:
    """Geometric grid of scales from one level (``1/levels``) to ``eps_max``, rounded to whole levels.

    Duplicates after rounding are removed, so a short range has fewer than ``points`` scales.
    """
    if eps_max * levels < 1:
        raise ValueError(f"eps_max must be at least one level (1/{levels}), got {eps_max!r}")
    if points < 1:
        raise ValueError(f"points must be positive, got {points}")
    top = torch.log10(torch.tensor(float(eps_max) * levels, dtype=torch.float64))
    grey = torch.unique(torch.round(torch.logspace(0, float(top), points, dtype=torch.float64)))
    return grey / levels


def _norms(x_adv: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    delta = (x_adv.to(torch.float64) - x.to(torch.float64)).flatten(1) * GREY
    return delta.norm(dim=1), delta.abs().amax(1)


def line_search(
    model: nn.Module,
    x: torch.Tensor,
    direction: torch.Tensor,
    *,
    y_orig: torch.Tensor,
    target: torch.Tensor | None = None,
    eps_max: float | torch.Tensor = 10.0,
    grid_points: int = 30,
    bisect_steps: int = 10,
    batch_size: int = 1024,
) -> Attempts:
    """The smallest scale along each fixed ``direction`` that meets the criterion, on 8-bit images.

    Untargeted (``target=None``): the first ``ε`` with ``c(x(ε)) ≠ y_orig``; targeted: the
    first with ``c(x(ε)) = target``. ``eps_max`` (pixel units; a float or one per attempt) caps
    the search: the chapter uses 10 (2,550 grey levels) for value directions, whose small entries
    keep moving after the large ones saturate, and 1 for sign directions, which saturate fully at
    255. ``grid_points`` geometric scales up to ``eps_max``, then ``bisect_steps`` bisections of
    the last bracket. Returns :class:`Attempts`; the model's mode is untouched.
    """
    check_images(x)
    n = len(x)
    if direction.shape != x.shape:
        raise ValueError(f"direction must have the images' shape {tuple(x.shape)}, got {tuple(direction.shape)}")
    y_orig = torch.as_tensor(y_orig, device=x.device).long()
    if y_orig.shape != (n,):
        raise ValueError(f"y_orig must hold one class per image ({n}), got shape {tuple(y_orig.shape)}")
    if target is not None:
        target = torch.as_tensor(target, device=x.device).long()
        if target.shape != (n,):
            raise ValueError(f"target must hold one class per image ({n}), got shape {tuple(target.shape)}")
    if bisect_steps < 0:
        raise ValueError(f"bisect_steps must be >= 0, got {bisect_steps}")
    caps = torch.as_tensor(eps_max, dtype=torch.float64, device=x.device).expand(n).clone()
    if n and not bool((caps * GREY >= 1).all()):
        raise ValueError(f"eps_max must be at least one grey level (1/255), got {eps_max!r}")

    d, zero = unit_linf(direction)

    def meets(labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return labels == target[idx] if target is not None else labels != y_orig[idx]

    def evaluate(idx: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        imgs = apply_direction(x[idx], d[idx], eps)
        labels = predict_labels(model, imgs, batch_size=batch_size)
        return imgs, labels

    # every attempt walks its own grid (up to its own cap), so a result never depends on the batch
    uniq, group = torch.unique(caps, return_inverse=True)
    grids = [scale_grid(float(c), grid_points).to(x.device) for c in uniq]
    table = torch.full((len(grids), max((len(g) for g in grids), default=0)), float("nan"),
                       dtype=torch.float64, device=x.device)
    for i, g in enumerate(grids):
        table[i, :len(g)] = g
    hi = torch.full((n,), float("nan"), dtype=torch.float64, device=x.device)
    lo = torch.zeros(n, dtype=torch.float64, device=x.device)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    for k in range(table.shape[1]):
        eps_all = table[group, k]
        active = (~found & ~zero & ~eps_all.isnan()).nonzero().flatten()
        if not len(active):
            break
        e = eps_all[active]
        _, labels = evaluate(active, e)
        ok = meets(labels, active)
        hit = active[ok]
        found[hit], hi[hit] = True, e[ok]
        lo[hit] = table[group[hit], k - 1] if k else 0.0

    idx = found.nonzero().flatten()
    for _ in range(bisect_steps if len(idx) else 0):
        mid = (lo[idx] + hi[idx]) / 2
        _, labels = evaluate(idx, mid)
        ok = meets(labels, idx)
        hi[idx[ok]] = mid[ok]
        lo[idx[~ok]] = mid[~ok]

    images = apply_direction(x, d, torch.where(found, hi, torch.zeros_like(hi)))
    labels = predict_labels(model, images, batch_size=batch_size)
    success = found & meets(labels, torch.arange(n, device=x.device))  # re-checked on what is returned
    l2, linf = _norms(images, x)
    return Attempts(images=images, success=success, labels=labels, scale=torch.where(success, hi, torch.nan),
                    steps=torch.zeros(n, dtype=torch.long, device=x.device), l2=l2, linf=linf,
                    zero_direction=zero, stalled=torch.zeros(n, dtype=torch.bool, device=x.device))
