"""Box constraints of the attacks: validation, the exact L∞ box, projection and 8-bit rounding.

Sabour et al. (2016) constrain the adversary by ``||I - I_s||_∞ < δ`` (Eq. 2) and keep it a
valid image; with pixels in [0, 1] both constraints together are the per-pixel box

    lo = max(0, I_s - ε),   hi = min(1, I_s + ε)        (ε = δ / 255)

which L-BFGS-B takes as its bounds. :func:`linf_box` computes that box so that it holds
*exactly* in the images' own dtype, :func:`project` clips onto it (clip last, DESIGN.md §3) and
:func:`quantize` rounds to displayable 8-bit values without leaving it.
"""
from __future__ import annotations

import torch

__all__ = ["linf_box", "project", "quantize"]


def _eps_tensor(eps: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``eps`` as float64, broadcastable to ``x`` (a per-sample vector becomes N×1×1×1)."""
    e = torch.as_tensor(eps, dtype=torch.float64, device=x.device)
    if e.dim() == 1 and x.dim() > 1:
        if e.numel() not in (1, x.shape[0]):
            raise ValueError(f"a per-sample eps must have {x.shape[0]} entries, got {e.numel()}")
        e = e.view(-1, *([1] * (x.dim() - 1)))
    if e.numel() == 0 or not bool((e > 0).all()):  # also rejects NaN
        raise ValueError(f"eps must be > 0 (pixel units, eps = delta / 255), got {eps!r}")
    return e


def _two_sum(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Knuth's error-free sum: ``s + e == a + b`` exactly, with ``s = fl(a + b)`` (float64)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _exceeds(a: torch.Tensor, b: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Exactly ``a - b > eps`` for float64 tensors (``a``, ``b`` in [0, 1], ``eps > 0``).

    ``a - b = s + e`` exactly (TwoSum); ``s - eps`` is exact by Sterbenz's lemma whenever the two
    are within a factor of two, and otherwise far larger than ``|e|``, so the sign of
    ``(s - eps) + e`` is the sign of ``a - b - eps`` (the rounding of a sum keeps its sign).
    """
    s, e = _two_sum(a, -b)
    return (s - eps) + e > 0


def _step(t: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The next representable value above (``up``) or below (else) ``t``, in ``t``'s dtype."""
    return torch.nextafter(t, torch.where(up, torch.ones_like(t), torch.zeros_like(t)) * 2 - 1)


def linf_box(x_src: torch.Tensor, eps: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel bounds ``lo = max(0, x_src - eps)``, ``hi = min(1, x_src + eps)`` (Eq. 2 as a box).

    ``eps`` is a float or a per-sample tensor (N values, or anything broadcastable), in pixel
    units; ``eps <= 0`` raises ``ValueError``. The bounds are computed in float64, converted to
    ``x_src.dtype`` and, wherever that rounding moved a bound outside the exact box, nudged one
    representable step towards ``x_src`` (``torch.nextafter``). Hence every ``x`` of that dtype
    with ``lo <= x <= hi`` satisfies ``|x - x_src| <= eps`` in exact arithmetic (and also when
    evaluated in the dtype, ``(x - x_src).abs() <= eps``, rounding being monotone) and lies in
    [0, 1]. Returns ``(lo, hi)`` with ``x_src``'s shape, dtype and device.
    """
    e = _eps_tensor(eps, x_src)
    x64 = x_src.detach().to(torch.float64)
    lo = (x64 - e).clamp(min=0.0).to(x_src.dtype)
    hi = (x64 + e).clamp(max=1.0).to(x_src.dtype)
    e = e.expand_as(x64)
    for _ in range(4):  # one step always suffices (round-to-nearest); the loop is a safeguard
        bad_lo = _exceeds(x64, lo.to(torch.float64), e)
        bad_hi = _exceeds(hi.to(torch.float64), x64, e)
        if not (bool(bad_lo.any()) or bool(bad_hi.any())):
            break
        lo = torch.where(bad_lo, _step(lo, torch.ones_like(bad_lo)), lo)
        hi = torch.where(bad_hi, _step(hi, torch.zeros_like(bad_hi)), hi)
    return lo, hi


def project(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Clip ``x`` onto the box: ``max(min(x, hi), lo)``; the lower bound is applied last."""
    return torch.maximum(torch.minimum(x, hi), lo)


def quantize(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, levels: int = 255) -> torch.Tensor:
    """Round ``x`` to the nearest grid value ``k / levels`` inside ``[lo, hi]`` (8-bit images).

    The grid points inside a pixel's box run from ``ceil(lo·levels)/levels`` to
    ``floor(hi·levels)/levels``; the nearest of them to the projected ``x`` is taken. A pixel
    whose box holds no grid point keeps its projected, unquantised value. The result never
    leaves ``[lo, hi]`` (grid values are the dtype's roundings of ``k / levels``; bounds that
    rounding would cross are fixed up, and a final projection guards the rest).
    """
    if levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels}")
    xp = project(x, lo, hi)
    dtype = x.dtype
    lo64, hi64 = lo.to(torch.float64), hi.to(torch.float64)
    k_lo = torch.ceil(lo64 * levels)
    k_hi = torch.floor(hi64 * levels)
    # the dtype's value of a grid point may round across a bound: move inwards until it does not
    k_lo = torch.where((k_lo / levels).to(dtype).to(torch.float64) < lo64, k_lo + 1, k_lo)
    k_hi = torch.where((k_hi / levels).to(dtype).to(torch.float64) > hi64, k_hi - 1, k_hi)
    k = torch.round(xp.to(torch.float64) * levels)
    k = torch.minimum(torch.maximum(k, k_lo), k_hi)
    q = (k / levels).to(dtype)
    out = torch.where(k_lo <= k_hi, q, xp)
    return project(out, lo, hi)
