"""The frame every zoo network shares: normalisation inside the model and named layers.

Every model is a :class:`NamedLayerNet`: a ``Normalize`` module first (so callers speak
[0, 1] pixels), then the network, plus an ordered ``layer_map`` from the papers' layer names
to the sub-module whose output *is* that layer. The map follows Caffe's blob semantics:
Caffe applies ReLU in place, so the blob ``conv3`` holds the rectified output, and so does
our ``"conv3"`` (it maps to the module ``relu3``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NamedLayerNet", "Normalize", "LocalResponseNorm", "sequential"]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the first module of every zoo model."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class NamedLayerNet(nn.Module):
    """``net(normalize(x))`` with an ordered map of named layers to sub-module paths.

    ``layer_map[name]`` is a dotted path relative to this module (as in ``named_modules``);
    :mod:`featadv_core.features` reads it to extract and truncate.
    """

    def __init__(self, normalize: Normalize, net: nn.Module, layer_map: dict[str, str], input_shape: tuple[int, ...]):
        super().__init__()
        self.normalize = normalize
        self.net = net
        self.layer_map = OrderedDict(layer_map)
        self.input_shape = tuple(input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class LocalResponseNorm(nn.Module):
    """Caffe's cross-channel LRN, ``x / (k + α/n · Σ_{window} x²)^β``, as a 1×1 convolution.

    The same function as :class:`torch.nn.LocalResponseNorm` (window ``[c − n//2, c + (n−1)//2]``,
    zero-padded, the sum divided by ``n`` as in Caffe and Krizhevsky et al. 2012 §3.3), but the
    window sum is one GEMM with a fixed band matrix instead of torch's padded ``avg_pool3d``,
    which cost more than all of CaffeNet's convolutions together in training on a CPU. The band
    is a non-persistent buffer: checkpoints are those of ``nn.LocalResponseNorm`` (none).
    """

    def __init__(self, channels: int, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        if channels < 1 or size < 1:
            raise ValueError(f"channels and size must be positive, got {channels} and {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        c = torch.arange(channels)
        offset = c[None, :] - c[:, None]                       # c' − c
        band = ((offset >= -(size // 2)) & (offset <= (size - 1) // 2)).double() / size  # cast per call
        self.register_buffer("band", band.view(channels, channels, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_sq = F.conv2d(x * x, self.band.to(x.dtype))
        return x / (mean_sq * self.alpha + self.k).pow(self.beta)

    def extra_repr(self) -> str:
        return f"{self.band.shape[0]}, size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def sequential(layers: list[tuple[str, nn.Module]]) -> nn.Sequential:
    """``nn.Sequential`` with the given module names (they become the checkpoint's keys)."""
    return nn.Sequential(OrderedDict(layers))
