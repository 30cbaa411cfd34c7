"""A VGG-style all-convolutional CIFAR-10 network (transfer target; chapters 3–4's encoder/NiN stand-in)."""
from __future__ import annotations

from torch import nn

from .named import NamedLayerNet, Normalize, sequential

__all__ = ["allconv_cifar"]


def allconv_cifar(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                  num_classes: int = 10) -> NamedLayerNet:
    """3×3 convolutions in four stages (32-32 / 64-64 / 128-128 / 256), batch norm, global pooling.

    conv1_1 conv1_2 pool1 (16×16) conv2_1 conv2_2 pool2 (8×8) conv3_1 conv3_2 pool3 (4×4)
    conv4_1, then a global average pool (``pool4``, 256 values) and one linear classifier
    (``fc``) — no LRN and no
    fully connected hidden layers, unlike :func:`caffenet_cifar`. Every named conv layer is
    the rectified output (Caffe's blob semantics). Chapter 3 uses ``conv1_1 … conv2_1`` as its
    style encoder (VGG-19's first two blocks at half width); in eval mode the network is
    piecewise linear in its input, as chapter 4's Network-in-Network.
    """
    def block(name: str, cin: int, cout: int) -> list[tuple[str, nn.Module]]:
        return [(name, nn.Conv2d(cin, cout, 3, padding=1, bias=False)),
                (f"bn_{name}", nn.BatchNorm2d(cout)), (f"relu_{name}", nn.ReLU())]

    net = sequential(
        block("conv1_1", 3, 32) + block("conv1_2", 32, 32) + [("pool1", nn.MaxPool2d(2))]
        + block("conv2_1", 32, 64) + block("conv2_2", 64, 64) + [("pool2", nn.MaxPool2d(2))]
        + block("conv3_1", 64, 128) + block("conv3_2", 128, 128) + [("pool3", nn.MaxPool2d(2))]
        + block("conv4_1", 128, 256)
        + [("pool4", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(256, num_classes))]
    )
    layer_map = {
        "conv1_1": "net.relu_conv1_1", "conv1_2": "net.relu_conv1_2", "pool1": "net.pool1",
        "conv2_1": "net.relu_conv2_1", "conv2_2": "net.relu_conv2_2", "pool2": "net.pool2",
        "conv3_1": "net.relu_conv3_1", "conv3_2": "net.relu_conv3_2", "pool3": "net.pool3",
        "conv4_1": "net.relu_conv4_1", "pool4": "net.flatten", "fc": "net.fc",
    }
    return NamedLayerNet(Normalize(mean, std), net, layer_map, (3, 32, 32))
