"""featadv_core.models: architectures, training, the zoo's cache and cards."""
from __future__ import annotations

import pytest
import torch

import dataclasses
from pathlib import Path

from featadv_core import models
from featadv_core.models import architectures, retrain, zoo
from featadv_core.models.train import TrainConfig, accuracy, augment, train_classifier
from featadv_core.repro import state_hash as repro_state_hash


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


@pytest.fixture
def tiny_zoo(monkeypatch, tmp_path):
    """The zoo on fake data with a 1-epoch LeNet recipe and an empty shipped-checkpoint folder."""
    calls = []
    fake_x = torch.rand(40, 1, 28, 28)
    fake_y = torch.arange(40) % 10

    def fake_load(name, split, **kwargs):
        calls.append(("load", split))
        return fake_x, fake_y

    monkeypatch.setattr(zoo.data, "load", fake_load)
    monkeypatch.setattr(zoo.data, "data_source", lambda name: "test-source")
    monkeypatch.setattr(zoo.data, "describe_source", lambda name: "fake data")
    monkeypatch.setattr(zoo, "SHIPPED_DIR", tmp_path / "shipped")
    monkeypatch.setattr(zoo, "ZOO", {"lenet-mnist": zoo.Recipe(architectures.lenet, "mnist", TrainConfig(epochs=1), "test"),
                                     "alexnet": zoo.ZOO["alexnet"]})
    return calls


def test_zoo_trains_once_then_loads(tiny_zoo):
    """get() trains on a cache miss, writes the checkpoint atomically, and loads it next time."""
    m1 = models.get("lenet-mnist", device="cpu")
    assert m1.card["test_accuracy"] >= 0 and len(m1.card["checkpoint_hash"]) == 64
    assert models.checkpoint_path("lenet-mnist").is_file() and not m1.card["shipped"]
    n_loads = len(tiny_zoo)
    m2 = models.get("lenet-mnist", device="cpu")
    assert len(tiny_zoo) == n_loads, "second get must not retrain"
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert repro_state_hash(m2) == m2.card["checkpoint_hash"]
    card = models.model_card("lenet-mnist")
    assert card["feature_shapes"]["pool2"] == (50, 4, 4) and card["layers"][-1] == "ip2"
    assert card["data_source_description"] == "fake data" and card["recipe_key"] == models.recipe_key("lenet-mnist")


def test_checkpoints_are_half_precision_and_rounded(tiny_zoo):
    model = models.get("lenet-mnist", device="cpu")
    blob = torch.load(models.checkpoint_path("lenet-mnist"), weights_only=False)
    assert all(v.dtype == torch.float16 for v in blob["state_dict"].values() if v.is_floating_point())
    for p in model.parameters():
        assert p.dtype == torch.float32 and torch.equal(p, p.half().float())
    assert 0 <= model.card["test_accuracy_fp32"] <= 1


def test_a_current_shipped_checkpoint_is_used_a_stale_one_is_not(tiny_zoo):
    card = zoo.train("lenet-mnist", out=zoo.shipped_path("lenet-mnist"))
    n_loads = len(tiny_zoo)
    model = models.get("lenet-mnist", device="cpu")
    assert model.card["shipped"] and len(tiny_zoo) == n_loads, "a current shipped checkpoint is loaded, not retrained"
    assert model.card["checkpoint_hash"] == card["checkpoint_hash"]
    assert retrain.stale() == []
    zoo.ZOO["lenet-mnist"] = dataclasses.replace(zoo.ZOO["lenet-mnist"], config=TrainConfig(epochs=1, lr=0.01))
    assert retrain.stale() == ["lenet-mnist"]
    other = models.get("lenet-mnist", device="cpu")
    assert not other.card["shipped"] and len(tiny_zoo) > n_loads, "another recipe retrains"


def test_retrain_writes_stale_shipped_checkpoints(tiny_zoo, capsys):
    retrain.main(["lenet-mnist"])
    assert zoo.shipped_path("lenet-mnist").is_file() and "test accuracy" in capsys.readouterr().out
    before = zoo.shipped_path("lenet-mnist").read_bytes()
    retrain.main(["lenet-mnist"])
    assert "nothing to do" in capsys.readouterr().out
    assert zoo.shipped_path("lenet-mnist").read_bytes() == before, "a current checkpoint is not rewritten"
    with pytest.raises(SystemExit):
        retrain.main(["alexnet"])


def test_reevaluate_updates_the_card_not_the_weights(tiny_zoo, capsys):
    """retrain --evaluate reruns a recipe's evaluation on the shipped weights (an evaluation added after training)."""
    retrain.main(["lenet-mnist"])
    before = torch.load(zoo.shipped_path("lenet-mnist"), weights_only=False)
    zoo.ZOO["lenet-mnist"] = dataclasses.replace(zoo.ZOO["lenet-mnist"], evaluate=lambda m, r, b: {"extra": 0.5})
    assert zoo.shipped_is_current("lenet-mnist"), "an evaluation is not part of the recipe key"
    retrain.main(["lenet-mnist", "--evaluate"])
    assert "re-evaluated" in capsys.readouterr().out
    after = torch.load(zoo.shipped_path("lenet-mnist"), weights_only=False)
    assert after["card"] == dict(before["card"], extra=0.5)
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    zoo.ZOO["lenet-mnist"] = dataclasses.replace(zoo.ZOO["lenet-mnist"], evaluate=None)
    with pytest.raises(ValueError, match="no evaluation"):
        zoo.reevaluate("lenet-mnist")


def test_recipe_key_follows_recipe_and_version_not_code_or_zoo(tiny_zoo, monkeypatch):
    key = models.recipe_key("lenet-mnist")
    assert key == models.recipe_key("lenet-mnist")
    monkeypatch.setitem(zoo.ZOO, "other", zoo.Recipe(architectures.allconv_cifar, "cifar10", TrainConfig(epochs=1), "x"))
    assert models.recipe_key("lenet-mnist") == key, "adding a model changes no other key"
    for change in (dict(config=TrainConfig(epochs=2)), dict(dataset="fashion_mnist"), dict(loss=_zero_loss),
                   dict(builder=architectures.caffenet_cifar), dict(version=2)):
        monkeypatch.setitem(zoo.ZOO, "x", dataclasses.replace(zoo.ZOO["lenet-mnist"], **change))
        assert models.recipe_key("x") != key, change
    monkeypatch.setitem(zoo.ZOO, "tuned", dataclasses.replace(zoo.ZOO["lenet-mnist"], base="lenet-mnist"))
    tuned = models.recipe_key("tuned")
    zoo.ZOO["lenet-mnist"] = dataclasses.replace(zoo.ZOO["lenet-mnist"], config=TrainConfig(epochs=3))
    assert models.recipe_key("tuned") != tuned, "a fine-tuned model's key follows its base"
    monkeypatch.setattr(zoo, "code_fingerprint", lambda *objs: "edited")
    assert models.recipe_key("tuned") == zoo.recipe_key("tuned"), "an edit to the code re-keys nothing"


def test_recipe_key_of_a_torchvision_base():
    """The paper-scale decoder starts from torchvision's VGG-19: its key must not need a recipe for it."""
    key = zoo.recipe_key("decoder-vgg19-cifar10")
    assert len(key) == 64 and key != zoo.recipe_key("decoder-allconv-cifar10")


def test_code_drift_warns_and_restamp_clears_it(tiny_zoo, monkeypatch):
    """The code's fingerprint is a warning: drift is listed, a restamp records it in a small JSON file."""
    seen = []

    def fake_fingerprint(*objs):
        seen.append(objs)
        return "v1"

    monkeypatch.setattr(zoo, "code_fingerprint", fake_fingerprint)
    retrain.main(["lenet-mnist"])
    modules = {getattr(o, "__module__", None) for o in seen[0]}
    assert modules == {"featadv_core.models.architectures.lenet", "featadv_core.models.train"}
    assert zoo.code_drift() == [], "make models records the fingerprint of the code that trained it"
    monkeypatch.setattr(zoo, "code_fingerprint", lambda *objs: "v2")
    assert zoo.code_drift() == ["lenet-mnist"] and retrain.stale() == [], "drift warns, it does not retrain"
    before = zoo.shipped_path("lenet-mnist").read_bytes()
    retrain.main(["--restamp"])
    assert zoo.code_drift() == []
    assert zoo.shipped_path("lenet-mnist").read_bytes() == before, "a restamp never rewrites a checkpoint"


def test_shipped_checkpoints_are_current():
    """Every shipped card carries its recipe's current key (else a fresh clone would retrain in CI)."""
    assert retrain.stale() == []


def _zero_loss(model, x, y, config):
    return (model(x) * 0.0).sum()


def test_fine_tuning_starts_from_the_base_and_uses_the_loss(tiny_zoo, monkeypatch):
    calls = []

    def counting_zero_loss(model, x, y, config):
        calls.append(len(x))
        return _zero_loss(model, x, y, config)

    monkeypatch.setitem(zoo.ZOO, "tuned", zoo.Recipe(architectures.lenet, "mnist",
                                                     TrainConfig(epochs=1, weight_decay=0.0), "fine-tuned",
                                                     base="lenet-mnist", loss=counting_zero_loss))
    base = models.get("lenet-mnist", device="cpu")
    tuned = models.get("tuned", device="cpu")
    assert calls and tuned.card["base"] == "lenet-mnist" and tuned.card["loss"].endswith("counting_zero_loss")
    for (k, a), b in zip(base.state_dict().items(), tuned.state_dict().values()):
        assert torch.equal(a, b), k  # zero gradients, no weight decay: the base's weights unchanged


def test_local_response_norm_matches_torch():
    for channels, size, alpha, beta, k in [(32, 5, 1e-4, 0.75, 1.0), (7, 4, 1e-2, 0.5, 2.0), (3, 1, 1.0, 1.0, 1.0)]:
        ours = architectures.LocalResponseNorm(channels, size, alpha, beta, k)
        ref = torch.nn.LocalResponseNorm(size, alpha, beta, k)
        x = torch.randn(2, channels, 5, 6, dtype=torch.float64) * 20
        assert torch.allclose(ours(x), ref(x), rtol=1e-12, atol=1e-12)
        assert ours.state_dict() == {}
    with pytest.raises(ValueError):
        architectures.LocalResponseNorm(0, 5)


def test_torchvision_layer_maps_without_weights():
    """The papers' names, read off each model's traced graph (no weights needed)."""
    import torchvision.models as tvm

    alex = architectures.torchvision_layer_map("alexnet", tvm.alexnet())
    assert list(alex) == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5",
                          "fc6", "fc7", "fc8"]
    assert alex["conv3"] == "net.features.7" and alex["fc7"] == "net.classifier.5"
    vgg = architectures.torchvision_layer_map("vgg19", tvm.vgg19())
    assert vgg["fc8"] == "net.classifier.6" and vgg["pool5"] == "net.features.36"
    assert vgg["relu2_1"] == vgg["conv2_1"] == "net.features.6" and vgg["relu4_1"] == "net.features.20"
    res = architectures.torchvision_layer_map("resnet50", tvm.resnet50())
    assert list(res)[-3:] == ["layer4", "avgpool", "fc"]
    goog = architectures.torchvision_layer_map("googlenet", tvm.googlenet(weights=None, init_weights=False))
    assert "inception4e" in goog and "avgpool" in goog and "aux1" not in goog and "dropout" not in goog


def test_random_weights_switch_builds_a_labelled_architecture(monkeypatch):
    """FEATADV_WEIGHTS=random: the paper presets' smoke run gets the architecture, labelled as random."""
    monkeypatch.setenv("FEATADV_WEIGHTS", "random")
    rng = torch.random.get_rng_state()
    model = models.get("alexnet", device="cpu")
    assert torch.equal(rng, torch.random.get_rng_state()), "the caller's random stream is untouched"
    assert model.card["weights"] == "random" and model.card["description"].startswith("[RANDOM WEIGHTS")
    assert model.card["test_accuracy"] != model.card["test_accuracy"] and model.input_shape == (3, 224, 224)  # NaN
    assert model.card["checkpoint_hash"] == models.get("alexnet", device="cpu").card["checkpoint_hash"]
    from featadv_core import features
    assert features.forward_to(model, torch.rand(1, 3, 224, 224), "fc7").shape == (1, 4096)
    random_key = zoo.recipe_key("decoder-vgg19-cifar10")
    monkeypatch.setenv("FEATADV_WEIGHTS", "pretrained")
    assert zoo.recipe_key("decoder-vgg19-cifar10") != random_key, "a random encoder never shares a real cache"
    monkeypatch.setenv("FEATADV_WEIGHTS", "imagenet")
    with pytest.raises(ValueError, match="FEATADV_WEIGHTS"):
        models.get("alexnet", device="cpu")


def test_torchvision_weights_offline_is_clear(monkeypatch):
    import torchvision.models as tvm

    def no_net(*a, **k):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(tvm, "alexnet", no_net)
    with pytest.raises(models.WeightsUnavailableError, match="without internet"):
        models.get("alexnet", device="cpu")


def test_robustbench_ids_without_the_package_say_what_to_do(monkeypatch):
    """The paper presets' defences: without robustbench (CI, this machine) a clear error, not an ImportError."""
    import builtins

    real_import = builtins.__import__

    def no_robustbench(name, *args, **kwargs):
        if name.startswith("robustbench"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_robustbench)
    with pytest.raises(models.WeightsUnavailableError, match="pip install robustbench"):
        models.get("robustbench-madry-cifar10", device="cpu")


def test_robustbench_download_failure_names_the_cache(monkeypatch, tmp_path):
    """Offline with robustbench installed: the message names the model and where a copied checkpoint goes."""
    import sys
    import types

    def unreachable(*a, **k):
        raise OSError("Network is unreachable")

    fake = types.ModuleType("robustbench")
    fake.utils = types.ModuleType("robustbench.utils")
    fake.utils.load_model = unreachable
    monkeypatch.setitem(sys.modules, "robustbench", fake)
    monkeypatch.setitem(sys.modules, "robustbench.utils", fake.utils)
    with pytest.raises(models.WeightsUnavailableError, match=r"Zhang2019Theoretically.*Network is unreachable(?s:.*)"
                                                            r"cifar10/Linf/Zhang2019Theoretically\.pt"):
        models.get("robustbench-trades-cifar10", device="cpu")


def test_robustbench_model_is_framed_with_identity_normalisation_and_its_head(monkeypatch):
    """A downloaded RobustBench model (here a stand-in module) takes [0, 1] pixels unchanged and names its head."""
    import sys
    import types

    from torch import nn

    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16), nn.ReLU(), nn.Linear(16, 10))
    calls = []
    fake = types.ModuleType("robustbench")
    fake.utils = types.ModuleType("robustbench.utils")
    fake.utils.load_model = lambda name, **kw: calls.append((name, kw)) or net
    monkeypatch.setitem(sys.modules, "robustbench", fake)
    monkeypatch.setitem(sys.modules, "robustbench.utils", fake.utils)
    model = models.get("robustbench-madry-cifar10", device="cpu")
    assert calls[0][0] == "Engstrom2019Robustness" and calls[0][1]["threat_model"] == "Linf"
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), net(x))
    assert model.layer_map == {"fc": "net.3"} and model.card["test_accuracy"] == 0.8703
    assert model.card["weights"] == "robustbench:Engstrom2019Robustness"


@pytest.mark.parametrize("model_id, shape", [("robustbench-madry-cifar10", (3, 32, 32)),
                                             ("robustbench-madry-imagenet", (3, 224, 224))])
def test_robustbench_random_standin_is_labelled_and_runs(monkeypatch, model_id, shape):
    """FEATADV_WEIGHTS=random: a labelled random network of the right input size (the presets' smoke run)."""
    monkeypatch.setenv("FEATADV_WEIGHTS", "random")
    rng = torch.random.get_rng_state()
    model = models.get(model_id, device="cpu")
    assert torch.equal(rng, torch.random.get_rng_state())
    assert model.card["description"].startswith("[RANDOM WEIGHTS") and model.input_shape == shape
    assert model.card["test_accuracy"] != model.card["test_accuracy"]  # NaN
    assert model(torch.rand(1, *shape)).shape == (1, 10 if shape[1] == 32 else 1000)


SHIPPED_LIMIT_BYTES = 60 * 2**20


def test_every_own_model_ships_a_current_checkpoint():
    """A fresh clone never trains: each recipe's shipped checkpoint exists and is of that recipe."""
    own = [k for k, v in zoo.ZOO.items() if isinstance(v, zoo.Recipe) and v.ships]
    assert retrain.stale() == [], "run `make models` (then commit featadv_core/models/checkpoints)"
    total = sum(zoo.shipped_path(k).stat().st_size for k in own)
    assert total <= SHIPPED_LIMIT_BYTES, f"shipped checkpoints take {total / 2**20:.1f} MB"
    for model_id in own:
        card = torch.load(zoo.shipped_path(model_id), weights_only=False)["card"]
        if zoo.ZOO[model_id].trainer is None:  # classifiers; decoders carry their own quality measures
            assert abs(card["test_accuracy"] - card["test_accuracy_fp32"]) < 0.001, model_id  # fp16 costs < 0.1 pp
        assert {"data_source", "machine", "trained_at", "train_seconds"} <= card.keys()


FLOORS = {"lenet-mnist": 0.99, "lenet-fashion": 0.91, "caffenet-cifar10": 0.80, "allconv-cifar10": 0.87}


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("model_id", list(FLOORS))
def test_zoo_accuracy_floors(offline_dir, model_id):
    """The platform issue's floors, on the full 10,000-image test sets, for the models as loaded."""
    from featadv_core import data

    model = models.get(model_id, device="cpu")
    x, y = data.load(zoo.ZOO[model_id].dataset, "test")
    assert len(y) == 10_000
    acc = accuracy(model, x, y)
    assert acc == pytest.approx(model.card["test_accuracy"], abs=1e-9)
    assert acc >= FLOORS[model_id], f"{model_id}: {acc:.2%} < {FLOORS[model_id]:.0%}"


@pytest.mark.data
@pytest.mark.slow
def test_retraining_reproduces_the_shipped_card(offline_dir):
    """`make models` is reproducible: lenet-mnist retrained from its recipe lands within 1 pp."""
    card = zoo.train("lenet-mnist", device="cpu")
    shipped = torch.load(zoo.shipped_path("lenet-mnist"), weights_only=False)["card"]
    assert card["recipe_key"] == shipped["recipe_key"]
    assert abs(card["test_accuracy"] - shipped["test_accuracy"]) <= 0.01


def test_smoke_budget_trains_paper_recipes_briefly_under_their_own_key(tiny_zoo, monkeypatch):
    """FEATADV_TRAIN_BUDGET=smoke: a paper-scale recipe trains one epoch on few images, labelled, under
    another key; a shipped recipe's key (and so its checkpoint) is untouched."""
    paper = zoo.Recipe(architectures.lenet, "mnist", TrainConfig(epochs=40), "paper-scale", ships=False)
    monkeypatch.setitem(zoo.ZOO, "paper", paper)
    full_key, shipped_key = zoo.recipe_key("paper"), zoo.recipe_key("lenet-mnist")
    monkeypatch.setenv("FEATADV_TRAIN_BUDGET", "smoke")
    assert zoo.recipe_key("paper") != full_key and zoo.recipe_key("lenet-mnist") == shipped_key
    epochs = []
    real = zoo.train_classifier
    monkeypatch.setattr(zoo, "train_classifier", lambda m, x, y, config, **k: epochs.append((config.epochs, len(x)))
                        or real(m, x, y, config, **k))
    card = zoo.train("paper")
    assert epochs == [(1, 40)] and card["description"].startswith("[SMOKE BUDGET")
    monkeypatch.setenv("FEATADV_TRAIN_BUDGET", "huge")
    with pytest.raises(ValueError, match="FEATADV_TRAIN_BUDGET"):
        zoo.recipe_key("paper")
