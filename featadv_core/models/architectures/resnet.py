"""A small CIFAR ResNet (He et al. 2016, ResNet-20) and its feature-denoising variant (Xie et al. 2019).

Chapter 3's defended models are small ResNets, architecturally unlike the all-conv encoder the
style attack uses (the paper's "Madry" model is a small ResNet too; see the chapter's spec).
:class:`DenoisingBlock` is Xie et al.'s non-local denoising block in its dot-product form
(X101-DenoiseAll): ``y = x + BN(conv1×1(NLM(x)))`` with ``NLM(x)_i = (1/HW) Σ_j (x_iᵀx_j) x_j``,
computed as ``(X Xᵀ) X / HW`` — O(C²·HW), not O((HW)²·C) — and BN's γ initialised to zero, so
the block starts as the identity.
"""
from __future__ import annotations

import torch
from torch import nn

from .named import NamedLayerNet, Normalize, sequential

__all__ = ["BasicBlock", "DenoisingBlock", "resnet20", "resnet20_denoise"]


class BasicBlock(nn.Module):
    """Two 3×3 conv–BN layers with an identity (or 1×1 strided projection) shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = (nn.Sequential() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class DenoisingBlock(nn.Module):
    """Xie et al. (2019)'s denoising block, dot-product non-local means, identity at initialisation."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    @staticmethod
    def non_local_means(x: torch.Tensor) -> torch.Tensor:
        """``(1/HW) Σ_j (x_iᵀ x_j) x_j`` for every position i, as ``(X Xᵀ) X / HW``."""
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        gram = flat @ flat.transpose(1, 2) / (h * w)  # n×c×c
        return (gram @ flat).reshape(n, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn(self.conv(self.non_local_means(x)))


def _resnet(mean, std, num_classes: int, denoise: bool) -> NamedLayerNet:
    widths, blocks = (16, 32, 64), 3
    layers: list[tuple[str, nn.Module]] = [("conv1", nn.Conv2d(3, 16, 3, 1, 1, bias=False)), ("bn1", nn.BatchNorm2d(16)),
                                           ("relu1", nn.ReLU())]
    cin = 16
    for stage, cout in enumerate(widths, start=1):
        units = [BasicBlock(cin if i == 0 else cout, cout, 2 if (i == 0 and stage > 1) else 1) for i in range(blocks)]
        layers.append((f"res{stage}", nn.Sequential(*units)))
        if denoise:
            layers.append((f"denoise{stage}", DenoisingBlock(cout)))
        cin = cout
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(64, num_classes))]
    net = sequential(layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    last = "denoise" if denoise else "res"
    layer_map = {"conv1": "net.relu1", **{f"res{s}": f"net.{last}{s}" for s in (1, 2, 3)},
                 "pool": "net.flatten", "fc": "net.fc"}
    return NamedLayerNet(Normalize(mean, std), net, layer_map, (3, 32, 32))


def resnet20(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), num_classes: int = 10) -> NamedLayerNet:
    """ResNet-20 for 32×32 images: conv1 16, three stages of three basic blocks (16, 32, 64), global pool, fc.

    Layers: ``conv1``, ``res1`` (32×32), ``res2`` (16×16), ``res3`` (8×8), ``pool`` (64 values: the
    penultimate features O2 reads), ``fc`` (logits). 0.27M parameters.
    """
    return _resnet(mean, std, num_classes, denoise=False)


def resnet20_denoise(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                     num_classes: int = 10) -> NamedLayerNet:
    """:func:`resnet20` with a :class:`DenoisingBlock` after each stage (``res1``–``res3`` name their outputs).

    The CPU stand-in for Xie et al.'s ResNeXt-101 "DenoiseAll" (a block after every residual block).
    """
    return _resnet(mean, std, num_classes, denoise=True)
