"""featadv_core.features: names, extraction, truncation, gradients."""
from __future__ import annotations

import pytest
import torch

from featadv_core import features


def test_layer_names_follow_caffenet(tiny_caffenet):
    assert features.layer_names(tiny_caffenet) == [
        "conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4", "conv5",
        "pool5", "fc6", "fc7", "fc8"]


def test_extract_returns_requested_tensors(tiny_caffenet):
    x = torch.rand(2, 3, 32, 32)
    out = features.extract(tiny_caffenet, x, ["conv3", "pool5", "fc7"])
    assert list(out) == ["conv3", "pool5", "fc7"]
    assert out["conv3"].shape == (2, 96, 8, 8) and out["pool5"].shape == (2, 64, 4, 4)
    assert out["fc7"].shape == (2, 256)
    assert (out["conv3"] >= 0).all(), "conv3 is post-ReLU, like Caffe's in-place blob"
    assert torch.allclose(out["fc7"], features.forward_to(tiny_caffenet, x, "fc7"))


def test_last_layer_equals_model_output(tiny_lenet):
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(features.forward_to(tiny_lenet, x, "ip2"), tiny_lenet(x))


def test_truncation_skips_later_layers(tiny_caffenet):
    calls = []
    handle = tiny_caffenet.net.fc8.register_forward_hook(lambda *a: calls.append(1))
    features.forward_to(tiny_caffenet, torch.rand(1, 3, 32, 32), "conv3")
    handle.remove()
    assert calls == []


def test_gradients_flow(tiny_lenet):
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    features.forward_to(tiny_lenet, x, "pool2").sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_layer_lists_valid(tiny_caffenet):
    with pytest.raises(ValueError, match=r"'fc9'.*valid layers: conv1, pool1"):
        features.extract(tiny_caffenet, torch.rand(1, 3, 32, 32), ["conv3", "fc9"])


def test_plain_module_uses_module_paths():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    assert features.layer_names(net) == ["0", "1", "2"]
    assert features.forward_to(net, torch.rand(5, 4), "1").shape == (5, 3)


def test_feature_shapes(tiny_lenet):
    shapes = features.feature_shapes(tiny_lenet, (1, 28, 28))
    assert shapes == {"conv1": (20, 24, 24), "pool1": (20, 12, 12), "conv2": (50, 8, 8),
                      "pool2": (50, 4, 4), "ip1": (500,), "ip2": (10,)}


def test_model_dtype_is_the_first_floating_tensor():
    """What attacks cast their inputs to: a parameter's dtype, else a floating buffer's, else the default."""
    assert features.model_dtype(torch.nn.Linear(2, 2).double(), torch.float32) == torch.float64
    assert features.model_dtype(torch.nn.Linear(2, 2).half(), torch.float32) == torch.float16
    assert features.model_dtype(torch.nn.ReLU(), torch.float64) == torch.float64   # no tensors: the default
    counter = torch.nn.Module()
    counter.register_buffer("steps", torch.zeros((), dtype=torch.long))              # integer buffers do not count
    counter.register_buffer("scale", torch.ones((), dtype=torch.bfloat16))
    assert features.model_dtype(counter, torch.float32) == torch.bfloat16


def _resnet18():
    torchvision = pytest.importorskip("torchvision")
    return torchvision.models.resnet18(num_classes=10).eval()


def test_a_model_outside_the_zoo_is_named_by_its_traced_graph():
    """A module used twice (torchvision's BasicBlock ReLU) is two layers, and ``out += identity`` and the
    in-place ReLU after a captured layer cannot overwrite it: every capture equals the manual computation."""
    net = _resnet18()
    names = features.layer_names(net)
    assert {"layer1.0.relu", "layer1.0.relu_1", "layer1.0.bn2", "layer1.0.add", "fc"} <= set(names)
    x = torch.rand(2, 3, 64, 64)
    block = net.layer1[0]
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        first = torch.relu(block.bn1(block.conv1(h)))
        bn2 = block.bn2(block.conv2(first))
        out = features.extract(net, x, ["layer1.0.relu", "layer1.0.bn2", "layer1.0.relu_1", "fc"])
    torch.testing.assert_close(out["layer1.0.relu"], first)
    torch.testing.assert_close(out["layer1.0.bn2"], bn2)
    torch.testing.assert_close(out["layer1.0.relu_1"], torch.relu(bn2 + h))
    torch.testing.assert_close(out["fc"], net(x))
    assert all(m.inplace for m in net.modules() if hasattr(m, "inplace")), "the model's flags are restored"


def test_extraction_keeps_every_submodule_mode():
    net = _resnet18()
    net.layer1[0].bn1.train()                      # a mixed-mode model: one batch-norm layer training
    features.forward_to(net, torch.rand(2, 3, 32, 32), "layer1.0.relu")
    assert net.layer1[0].bn1.training and not net.training and not net.layer2[0].bn1.training


def test_a_mapped_module_called_twice_is_an_error():
    """The hook path (a model with a layer_map) refuses a module whose output is ambiguous."""
    class Wrapped(torch.nn.Module):
        layer_map = {"once": "net.layer1.0.conv1", "twice": "net.layer1.0.relu"}

        def __init__(self):
            super().__init__()
            self.net = _resnet18()

        def forward(self, x):
            return self.net(x)

    model, x = Wrapped(), torch.rand(1, 3, 32, 32)
    assert features.forward_to(model, x, "once").shape == (1, 64, 8, 8)
    with pytest.raises(RuntimeError, match="called more than once"):
        features.forward_to(model, x, "twice")


def test_hooked_captures_survive_later_inplace_operations():
    """On the hook path an earlier capture is copied before an in-place ReLU can overwrite it."""
    class Net(torch.nn.Module):
        layer_map = {"lin": "lin", "act": "act"}

        def __init__(self):
            super().__init__()
            self.lin, self.act = torch.nn.Linear(4, 4), torch.nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(self.lin(x))

    net, x = Net(), torch.randn(8, 4)
    out = features.extract(net, x, ["lin", "act"])
    torch.testing.assert_close(out["lin"], net.lin(x))
    assert (out["lin"] < 0).any() and (out["act"] >= 0).all()
