"""Network definitions whose layers carry the papers' names.

Every model is a :class:`NamedLayerNet`: a ``Normalize`` module first (so callers speak
[0, 1] pixels), then the network, plus an ordered ``layer_map`` from the papers' layer names
to the sub-module whose output *is* that layer. The map follows Caffe's blob semantics:
Caffe applies ReLU in place, so the blob ``conv3`` holds the rectified output, and so does
our ``"conv3"`` (it maps to the module ``relu3``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["NamedLayerNet", "Normalize", "caffenet_cifar", "lenet", "allconv_cifar"]


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


def _sequential(layers: list[tuple[str, nn.Module]]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def lenet(mean=(0.1307,), std=(0.3081,), num_classes: int = 10) -> NamedLayerNet:
    """Caffe's LeNet (``examples/mnist/lenet.prototxt``), as the LOTS paper uses it.

    conv1 20@5×5 → pool1 2×2/2 → conv2 50@5×5 → pool2 2×2/2 → ip1 500 + ReLU → ip2 10.
    Caffe's LeNet has no ReLU after the convolutions; ``ip1`` is rectified in place.
    """
    net = _sequential([
        ("conv1", nn.Conv2d(1, 20, 5)),
        ("pool1", nn.MaxPool2d(2, 2)),
        ("conv2", nn.Conv2d(20, 50, 5)),
        ("pool2", nn.MaxPool2d(2, 2)),
        ("flatten", nn.Flatten()),
        ("ip1", nn.Linear(50 * 4 * 4, 500)),
        ("relu1", nn.ReLU()),
        ("ip2", nn.Linear(500, num_classes)),
    ])
    layer_map = {"conv1": "net.conv1", "pool1": "net.pool1", "conv2": "net.conv2",
                 "pool2": "net.pool2", "ip1": "net.relu1", "ip2": "net.ip2"}
    return NamedLayerNet(Normalize(mean, std), net, layer_map, (1, 28, 28))


def caffenet_cifar(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                   num_classes: int = 10, width: int = 1) -> NamedLayerNet:
    """CaffeNet (BVLC reference model) scaled to 32×32 inputs, with CaffeNet's layer names.

    The layer sequence is CaffeNet's — conv1 relu1 pool1 norm1, conv2 relu2 pool2 norm2,
    conv3 relu3, conv4 relu4, conv5 relu5 pool5, fc6 relu6 drop6, fc7 relu7 drop7, fc8 —
    with 3×3/2 overlapping max-pooling (Caffe's ceil rounding) and LRN(5, 1e-4, 0.75) as in
    CaffeNet. Kernels and widths are shrunk for 32×32 images and a 2-core CPU: conv1 5×5/1
    (not 11×11/4) and about a sixth of CaffeNet's channels; conv2, conv4, conv5 keep
    CaffeNet's two groups. Spatial sizes: 32 → pool1 16 → pool2 8 → pool5 4.
    """
    c1, c2, c3, c4, c5, f = (32 * width, 64 * width, 96 * width, 96 * width, 64 * width, 256 * width)
    net = _sequential([
        ("conv1", nn.Conv2d(3, c1, 5, padding=2)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)),
        ("norm1", nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)),
        ("conv2", nn.Conv2d(c1, c2, 5, padding=2, groups=2)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
        ("norm2", nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)),
        ("conv3", nn.Conv2d(c2, c3, 3, padding=1)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(c3, c4, 3, padding=1, groups=2)), ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(c4, c5, 3, padding=1, groups=2)), ("relu5", nn.ReLU()),
        ("pool5", nn.MaxPool2d(3, 2, ceil_mode=True)),
        ("flatten", nn.Flatten()),
        ("fc6", nn.Linear(c5 * 4 * 4, f)), ("relu6", nn.ReLU()), ("drop6", nn.Dropout(0.5)),
        ("fc7", nn.Linear(f, f)), ("relu7", nn.ReLU()), ("drop7", nn.Dropout(0.5)),
        ("fc8", nn.Linear(f, num_classes)),
    ])
    layer_map = {
        "conv1": "net.relu1", "pool1": "net.pool1", "norm1": "net.norm1",
        "conv2": "net.relu2", "pool2": "net.pool2", "norm2": "net.norm2",
        "conv3": "net.relu3", "conv4": "net.relu4", "conv5": "net.relu5", "pool5": "net.pool5",
        "fc6": "net.relu6", "fc7": "net.relu7", "fc8": "net.fc8",
    }
    return NamedLayerNet(Normalize(mean, std), net, layer_map, (3, 32, 32))


def allconv_cifar(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                  num_classes: int = 10) -> NamedLayerNet:
    """A VGG-style all-convolutional CIFAR-10 network with batch norm and global pooling.

    A second architecture for transfer experiments: 3×3 convolutions in three stages
    (32-32 / 64-64 / 128), batch norm, max pooling, global average pooling, one linear
    classifier — no LRN, no fully connected hidden layers, unlike :func:`caffenet_cifar`.
    """
    def block(name: str, cin: int, cout: int) -> list[tuple[str, nn.Module]]:
        return [(name, nn.Conv2d(cin, cout, 3, padding=1, bias=False)),
                (f"bn_{name}", nn.BatchNorm2d(cout)), (f"relu_{name}", nn.ReLU())]

    net = _sequential(
        block("conv1_1", 3, 32) + block("conv1_2", 32, 32) + [("pool1", nn.MaxPool2d(2))]
        + block("conv2_1", 32, 64) + block("conv2_2", 64, 64) + [("pool2", nn.MaxPool2d(2))]
        + block("conv3_1", 64, 128) + [("pool3", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
                                       ("fc", nn.Linear(128, num_classes))]
    )
    layer_map = {
        "conv1_1": "net.relu_conv1_1", "conv1_2": "net.relu_conv1_2", "pool1": "net.pool1",
        "conv2_1": "net.relu_conv2_1", "conv2_2": "net.relu_conv2_2", "pool2": "net.pool2",
        "conv3_1": "net.relu_conv3_1", "pool3": "net.flatten", "fc": "net.fc",
    }
    return NamedLayerNet(Normalize(mean, std), net, layer_map, (3, 32, 32))
