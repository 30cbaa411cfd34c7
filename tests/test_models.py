"""featadv_core.models: architectures, training, the zoo's cache and cards."""
from __future__ import annotations

import pytest
import torch

from featadv_core import models
from featadv_core.models import architectures, zoo
from featadv_core.models.train import TrainConfig, accuracy, augment, train_classifier


def test_normalisation_is_inside(tiny_lenet):
    x = torch.rand(2, 1, 28, 28)
    manual = tiny_lenet.net((x - 0.1307) / 0.3081)
    assert torch.allclose(tiny_lenet(x), manual, atol=1e-6)


@pytest.mark.parametrize("builder,shape", [
    (architectures.lenet, (1, 28, 28)), (architectures.caffenet_cifar, (3, 32, 32)),
    (architectures.allconv_cifar, (3, 32, 32))])
def test_architectures_output_10_logits(builder, shape):
    model = builder().eval()
    assert model(torch.rand(4, *shape)).shape == (4, 10)
    assert model.input_shape == shape


def test_augment_shapes_and_determinism():
    x = torch.rand(8, 3, 32, 32)
    a = augment(x, crop_pad=4, flip=True, generator=torch.Generator().manual_seed(1))
    b = augment(x, crop_pad=4, flip=True, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    same = augment(x, crop_pad=0, flip=False, generator=torch.Generator())
    assert torch.equal(same, x)


def test_augment_translation_is_a_shift():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    out = augment(x, crop_pad=1, flip=False, generator=gen)
    padded = torch.nn.functional.pad(x, (1,) * 4, mode="reflect")
    windows = [padded[..., i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
    assert any(torch.equal(out, w) for w in windows)


def test_training_learns_a_separable_problem():
    torch.manual_seed(0)
    x = torch.rand(256, 1, 28, 28) * 0.5
    y = torch.randint(0, 2, (256,))
    x[y == 1, :, :14] += 0.5                 # class 1: bright top half
    model = architectures.lenet(num_classes=2)
    train_classifier(model, x, y, TrainConfig(epochs=3, lr=0.01, batch_size=32))
    assert not model.training
    assert accuracy(model, x, y) > 0.95


def test_unknown_model_id():
    with pytest.raises(ValueError, match="valid ids: lenet-mnist"):
        models.get("lenet-imagenet")


def test_zoo_trains_once_then_loads(monkeypatch, tmp_path):
    """get() trains on a cache miss, writes the checkpoint atomically, and loads it next time."""
    calls = []
    fake_x = torch.rand(40, 1, 28, 28)
    fake_y = torch.arange(40) % 10

    def fake_load(name, split, **kwargs):
        calls.append(("load", split))
        return fake_x, fake_y

    monkeypatch.setattr(zoo.data, "load", fake_load)
    monkeypatch.setattr(zoo.data, "data_source", lambda name: "test-source")
    monkeypatch.setitem(zoo.ZOO, "lenet-mnist", zoo.OwnSpec("lenet", "mnist", TrainConfig(epochs=1), "test"))
    m1 = models.get("lenet-mnist", device="cpu")
    assert m1.card["test_accuracy"] >= 0 and len(m1.card["checkpoint_hash"]) == 64
    assert models.checkpoint_path("lenet-mnist").is_file()
    n_loads = len(calls)
    m2 = models.get("lenet-mnist", device="cpu")
    assert len(calls) == n_loads, "second get must not retrain"
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    card = models.model_card("lenet-mnist")
    assert card["feature_shapes"]["pool2"] == (50, 4, 4) and card["layers"][-1] == "ip2"


def test_torchvision_layer_maps_without_weights():
    import torchvision.models as tvm

    alex = zoo._torchvision_layer_map("alexnet", tvm.alexnet())
    assert list(alex) == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5",
                          "fc6", "fc7", "fc8"]
    vgg = zoo._torchvision_layer_map("vgg16", tvm.vgg16())
    assert "conv5_3" in vgg and "pool5" in vgg and vgg["fc8"] == "net.classifier.6"
    res = zoo._torchvision_layer_map("resnet50", tvm.resnet50())
    assert list(res)[-3:] == ["layer4", "avgpool", "fc"]


def test_torchvision_weights_offline_is_clear(monkeypatch):
    import torchvision.models as tvm

    def no_net(*a, **k):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(tvm, "alexnet", no_net)
    with pytest.raises(models.WeightsUnavailableError, match="without internet"):
        models.get("alexnet", device="cpu")


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("model_id,floor", [("lenet-mnist", 0.975), ("lenet-fashion", 0.89),
                                            ("caffenet-cifar10", 0.62)])
def test_zoo_accuracy_floors(offline_dir, model_id, floor, monkeypatch):
    """The issue's floors on the offline data (trains on first run, then uses the cache)."""
    monkeypatch.delenv("FEATADV_CACHE")  # share the real cache: training is minutes
    assert models.model_card(model_id)["test_accuracy"] >= floor
