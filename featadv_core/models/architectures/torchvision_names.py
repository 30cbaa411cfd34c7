"""The papers' layer names on torchvision's ImageNet models, read off each model's traced graph.

Caffe names a layer's output blob after the layer, and the papers use those names: ``conv3`` of
AlexNet/CaffeNet is the output of the third convolution *after* its in-place ReLU, ``pool5`` the
last max-pooling, ``fc7`` the second fully-connected layer after its ReLU, ``conv5_3`` (VGG) the
third convolution of block 5 after its ReLU — which the AdaIN code calls ``relu5_3``, so both
spellings resolve. ResNet and GoogLeNet layers are named by torchvision's own top-level modules
(``layer4``, ``avgpool``, ``inception4e``...).

The names are assigned by walking the nodes of the eval-mode graph that
:func:`torchvision.models.feature_extraction.get_graph_node_names` traces, in execution order, not
from a hand-kept list of indices: a torchvision release that reorders or adds modules still maps
correctly, and a module called twice would show up as two nodes (none of the mapped ones is).
"""
from __future__ import annotations

from torch import nn

from ...features import graph_node_names

__all__ = ["torchvision_layer_map"]


def torchvision_layer_map(builder: str, net: nn.Module, *, prefix: str = "net.") -> dict[str, str]:
    """Paper-style names → module paths (with ``prefix``, the attribute a :class:`.NamedLayerNet` keeps ``net`` in).

    ``builder`` is the torchvision function's name (``"alexnet"``, ``"vgg16"``, ``"vgg19"``,
    ``"googlenet"``, ``"resnet50"``...). AlexNet: ``conv1…conv5``, ``pool1, pool2, pool5``,
    ``fc6, fc7, fc8``; VGG: ``conv{b}_{i}`` and its alias ``relu{b}_{i}``, ``pool{b}``, ``fc6…fc8``;
    other architectures: their top-level modules in execution order (auxiliary heads and dropout
    left out), each called once, so that hooking it is unambiguous.
    """
    nodes = graph_node_names(net)
    if builder == "alexnet" or builder.startswith("vgg"):
        modules = dict(net.named_modules())
        graph = [(node, modules[node]) for node in nodes if node in modules]  # the leaf modules' calls
        names: dict[str, str] = {}
        block, conv, convs = 1, 0, 0
        features = [(n, m) for n, m in graph if n.startswith("features.")]
        for node, module in features:
            if isinstance(module, nn.Conv2d):
                conv, convs = conv + 1, convs + 1
            elif isinstance(module, nn.ReLU):
                if builder == "alexnet":
                    names[f"conv{convs}"] = prefix + node
                else:
                    names[f"conv{block}_{conv}"] = names[f"relu{block}_{conv}"] = prefix + node
            elif isinstance(module, nn.MaxPool2d):
                # AlexNet pools after conv1, conv2, conv5 → pool1, pool2, pool5 (CaffeNet's names)
                names[f"pool{convs if builder == 'alexnet' else block}"] = prefix + node
                block, conv = block + 1, 0
        head = [(n, m) for n, m in graph if n.startswith("classifier.")]
        relus = [n for n, m in head if isinstance(m, nn.ReLU)]
        linears = [n for n, m in head if isinstance(m, nn.Linear)]
        if len(relus) < 2 or len(linears) < 3:
            raise ValueError(f"{builder}: expected a classifier with 3 linear layers and 2 ReLUs, got {head}")
        names.update(fc6=prefix + relus[0], fc7=prefix + relus[1], fc8=prefix + linears[-1])
        return names
    children = dict(net.named_children())  # a top-level module is traced through: its nodes carry its name
    order = dict.fromkeys(node.split(".")[0] for node in nodes)
    return {name: prefix + name for name in order if name in children and name not in ("aux1", "aux2", "dropout")}
