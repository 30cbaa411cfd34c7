"""The down/up-sampling "defence" of Jetley et al. (2018), §4.4 and Table 1.

``R(x) = x̄ + up(down(x − x̄))``: the mean-subtracted image is resized bicubically to
``size × size`` and back to its own size, as the authors' code does with MATLAB's ``imresize``
(Keys kernel a = −0.5, anti-aliased when shrinking). PyTorch's ``interpolate(mode="bicubic",
antialias=True)`` is the same kernel and anti-aliasing (without ``antialias`` it uses
a = −0.75 and no prefilter); border handling differs slightly from MATLAB's. ``R`` is linear
in ``x − x̄``, so ``R(x + f·r) = R(x) + f·(R(x̄ + r) − x̄)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["resize", "resample", "Resampled"]


def _check(x: torch.Tensor, size: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be an N×C×H×W batch, got shape {tuple(x.shape)}")
    if not isinstance(size, int) or not 1 <= size:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if size > min(x.shape[2:]):
        raise ValueError(f"size {size} exceeds the image size {tuple(x.shape[2:])}: R only down-samples")


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bicubic, anti-aliased resizing of an N×C×H×W batch to ``size`` (MATLAB ``imresize``'s kernel)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(x, size=hw, mode="bicubic", antialias=True, align_corners=False)


def resample(x: torch.Tensor, size: int, *, mean: torch.Tensor | None = None) -> torch.Tensor:
    """``x̄ + up(down(x − x̄))`` with bicubic, anti-aliased resizing to ``size`` and back (not clipped).

    ``mean`` is the per-pixel mean image (C×H×W; ``None``: zero). ``size`` equal to the image
    size is the identity.
    """
    _check(x, size)
    if size == x.shape[-1] and size == x.shape[-2]:
        return x
    base = torch.zeros_like(x[0]) if mean is None else mean.to(x)
    return base + resize(resize(x - base, size), tuple(x.shape[2:]))


class Resampled(nn.Module):
    """The classifier ``net ∘ R``: :func:`resample` to ``size`` then ``net`` (a defended network).

    Differentiable, so attacks can target it white-box (§4.4). The wrapped network's layers
    stay reachable as ``.net``.
    """

    def __init__(self, net: nn.Module, size: int, mean: torch.Tensor | None = None):
        super().__init__()
        self.net = net
        self.size = int(size)
        self.register_buffer("mean", None if mean is None else mean.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(resample(x, self.size, mean=self.mean))
