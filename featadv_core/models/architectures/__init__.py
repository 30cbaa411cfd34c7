"""Network definitions whose layers carry the papers' names, one module per network.

Each builder returns a :class:`NamedLayerNet` (see :mod:`.named`). The zoo keys a model's
checkpoint on the code of its own builder module (and what that imports), so adding or
editing one network never retrains the others.
"""
from .allconv import allconv_cifar
from .caffenet import caffenet_cifar
from .lenet import lenet
from .named import LocalResponseNorm, NamedLayerNet, Normalize, sequential
from .resnet import DenoisingBlock, resnet20, resnet20_denoise
from .torchvision_names import torchvision_layer_map

__all__ = ["NamedLayerNet", "Normalize", "LocalResponseNorm", "sequential", "lenet", "caffenet_cifar",
           "allconv_cifar", "resnet20", "resnet20_denoise", "DenoisingBlock", "torchvision_layer_map"]
