"""CaffeNet (the BVLC reference AlexNet) shaped for 32×32 CIFAR-10 images."""
from __future__ import annotations

from torch import nn

from .named import LocalResponseNorm, NamedLayerNet, Normalize, sequential

__all__ = ["caffenet_cifar"]


def caffenet_cifar(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                   num_classes: int = 10, width: int = 1) -> NamedLayerNet:
    """CaffeNet (BVLC reference model) scaled to 32×32 inputs, with CaffeNet's layer names.

    The layer sequence is CaffeNet's — conv1 relu1 pool1 norm1, conv2 relu2 pool2 norm2,
    conv3 relu3, conv4 relu4, conv5 relu5 pool5, fc6 relu6 drop6, fc7 relu7 drop7, fc8 —
    with 3×3/2 overlapping max-pooling (Caffe's ceil rounding) and LRN(5, 1e-4, 0.75) as in
    CaffeNet. Kernels and widths are shrunk for 32×32 images and a 2-core CPU: conv1 5×5/1
    (not 11×11/4) and about a sixth of CaffeNet's channels; conv2, conv4, conv5 keep
    CaffeNet's two groups. Spatial sizes: 32 → pool1 16 → pool2 8 → pool5 4.

    Initialisation: He et al. (2015) normal for every convolution and hidden fully connected
    layer, zero biases, and N(0, 0.01²) for ``fc8``. Without batch norm, PyTorch's default
    (uniform, gain 1/√3) leaves this eight-layer network at chance — loss ln 10 for epochs —
    under a one-cycle warm-up (measured); Caffe's own CaffeNet init (σ 0.01, biases 1) was
    tuned for 227×227 inputs and its long schedule.
    """
    c1, c2, c3, c4, c5, f = (32 * width, 64 * width, 96 * width, 96 * width, 64 * width, 256 * width)
    net = sequential([
        ("conv1", nn.Conv2d(3, c1, 5, padding=2)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)),
        ("norm1", LocalResponseNorm(c1, 5, alpha=1e-4, beta=0.75)),
        ("conv2", nn.Conv2d(c1, c2, 5, padding=2, groups=2)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
        ("norm2", LocalResponseNorm(c2, 5, alpha=1e-4, beta=0.75)),
        ("conv3", nn.Conv2d(c2, c3, 3, padding=1)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(c3, c4, 3, padding=1, groups=2)), ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(c4, c5, 3, padding=1, groups=2)), ("relu5", nn.ReLU()),
        ("pool5", nn.MaxPool2d(3, 2, ceil_mode=True)),
        ("flatten", nn.Flatten()),
        ("fc6", nn.Linear(c5 * 4 * 4, f)), ("relu6", nn.ReLU()), ("drop6", nn.Dropout(0.5)),
        ("fc7", nn.Linear(f, f)), ("relu7", nn.ReLU()), ("drop7", nn.Dropout(0.5)),
        ("fc8", nn.Linear(f, num_classes)),
    ])
    for name, module in net.named_children():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if name == "fc8":
                nn.init.normal_(module.weight, std=0.01)
            else:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    layer_map = {
        "conv1": "net.relu1", "pool1": "net.pool1", "norm1": "net.norm1",
        "conv2": "net.relu2", "pool2": "net.pool2", "norm2": "net.norm2",
        "conv3": "net.relu3", "conv4": "net.relu4", "conv5": "net.relu5", "pool5": "net.pool5",
        "fc6": "net.relu6", "fc7": "net.relu7", "fc8": "net.fc8",
    }
    return NamedLayerNet(Normalize(mean, std), net, layer_map, (3, 32, 32))
