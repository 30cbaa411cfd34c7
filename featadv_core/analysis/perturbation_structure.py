"""What a perturbation changes: its spatial-frequency content and its alignment with edges.

Quantitative proxies for the feature-space attack's Fig. 3 observations (Appendix A.2), which
the paper states only qualitatively: perturbing the channel *means* changes "the background and
the overall colour tone" (low spatial frequencies), perturbing the *stds* changes "object shape
and relative colour" (where the image has edges). The chapter labels them as our proxies.

* :func:`low_frequency_fraction` — the share of the difference image's energy (summed over
  channels) at spatial frequencies with ``|k| ≤ cutoff · (H/2)`` (2-D FFT, radial cutoff);
* :func:`edge_correlation` — Pearson correlation between the per-pixel perturbation magnitude
  and the original's grey-level gradient magnitude (central differences).
"""
from __future__ import annotations

import torch

__all__ = ["low_frequency_fraction", "edge_correlation", "gradient_magnitude"]


def low_frequency_fraction(diff: torch.Tensor, *, cutoff: float = 0.25) -> torch.Tensor:
    """Per image (N×C×H×W differences): the fraction of spectral energy at radius ≤ ``cutoff`` · Nyquist."""
    if not 0 < cutoff <= 1:
        raise ValueError(f"cutoff must be in (0, 1], got {cutoff}")
    n, c, h, w = diff.shape
    power = torch.fft.fft2(diff.double()).abs().pow(2).sum(1)         # N×H×W
    fy = torch.fft.fftfreq(h, dtype=torch.float64).abs() * 2           # in units of Nyquist
    fx = torch.fft.fftfreq(w, dtype=torch.float64).abs() * 2
    low = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt() <= cutoff
    total = power.flatten(1).sum(1).clamp_min(1e-30)
    return (power * low).flatten(1).sum(1) / total


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Grey-level gradient magnitude per pixel (N×H×W) by central differences, replicated at the borders."""
    grey = x.mean(1, keepdim=True)
    pad = torch.nn.functional.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = (pad[..., 1:-1, 2:] - pad[..., 1:-1, :-2]) / 2
    gy = (pad[..., 2:, 1:-1] - pad[..., :-2, 1:-1]) / 2
    return (gx ** 2 + gy ** 2).sqrt()[:, 0]


def edge_correlation(diff: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per image: Pearson correlation of ``‖diff‖`` over channels with the original's gradient magnitude."""
    if diff.shape != x.shape:
        raise ValueError(f"diff and x must have the same shape, got {tuple(diff.shape)} and {tuple(x.shape)}")
    a = diff.double().norm(dim=1).flatten(1)
    b = gradient_magnitude(x.double()).flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)
