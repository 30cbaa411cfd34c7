"""Caffe's LeNet on 28×28 grey images (Sabour et al.'s and Rozsa et al.'s MNIST network)."""
from __future__ import annotations

from torch import nn

from .named import NamedLayerNet, Normalize, sequential

__all__ = ["lenet"]


def lenet(mean=(0.1307,), std=(0.3081,), num_classes: int = 10) -> NamedLayerNet:
    """Caffe's LeNet (``examples/mnist/lenet.prototxt``), as the LOTS paper uses it.

    conv1 20@5×5 → pool1 2×2/2 → conv2 50@5×5 → pool2 2×2/2 → ip1 500 + ReLU → ip2 10.
    Caffe's LeNet has no ReLU after the convolutions; ``ip1`` is rectified in place.
    """
    net = sequential([
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
