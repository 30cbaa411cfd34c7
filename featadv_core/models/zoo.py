"""The model zoo: stable ids → trained, cached, eval-mode models with named layers.

Our own models (``lenet-mnist``, ``lenet-fashion``, ``caffenet-cifar10``,
``allconv-cifar10``) are trained on demand on whatever :func:`featadv_core.data.load` reads
(offline copy or torchvision download) and cached under
``FEATADV_CACHE/models/<id>-<key>.pt``, where the key hashes the training recipe, the data's
identity and the source of the architecture and training code. torchvision's ImageNet models
(``alexnet``, ``vgg16``, ``vgg19``, ``googlenet``, ``resnet50``) load their pretrained weights.
"""
from __future__ import annotations

import dataclasses
import fcntl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import data
from ..devices import resolve_device
from ..features import feature_shapes, layer_names
from ..repro import atomic_save, source_fingerprint, stable_hash, state_hash
from . import architectures
from .train import TrainConfig, accuracy, train_classifier

__all__ = ["OwnSpec", "TorchvisionSpec", "ZOO", "WeightsUnavailableError", "available", "get",
           "model_card", "checkpoint_path"]


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be downloaded here; the message says what to do."""


@dataclass(frozen=True)
class OwnSpec:
    """A model we train ourselves."""

    builder: str               # function name in architectures
    dataset: str
    config: TrainConfig
    description: str


@dataclass(frozen=True)
class TorchvisionSpec:
    """A torchvision ImageNet model with pretrained weights."""

    builder: str               # torchvision.models function name
    weights: str               # torchvision weights enum name
    description: str


ZOO: dict[str, OwnSpec | TorchvisionSpec] = {
    "lenet-mnist": OwnSpec("lenet", "mnist", TrainConfig(epochs=15, lr=0.05, batch_size=64),
                           "Caffe LeNet on MNIST"),
    "lenet-fashion": OwnSpec("lenet", "fashion_mnist", TrainConfig(epochs=8, lr=0.05, batch_size=64),
                             "Caffe LeNet on Fashion-MNIST"),
    "caffenet-cifar10": OwnSpec("caffenet_cifar", "cifar10",
                                TrainConfig(epochs=60, lr=0.05, crop_pad=4, flip=True),
                                "CaffeNet-shaped CNN (LRN, grouped convs, fc6/fc7) on CIFAR-10"),
    "allconv-cifar10": OwnSpec("allconv_cifar", "cifar10",
                               TrainConfig(epochs=20, lr=0.1, crop_pad=4, flip=True),
                               "VGG-style all-convolutional CNN with batch norm on CIFAR-10"),
    "alexnet": TorchvisionSpec("alexnet", "AlexNet_Weights", "torchvision AlexNet, ImageNet"),
    "vgg16": TorchvisionSpec("vgg16", "VGG16_Weights", "torchvision VGG-16, ImageNet"),
    "vgg19": TorchvisionSpec("vgg19", "VGG19_Weights", "torchvision VGG-19, ImageNet"),
    "googlenet": TorchvisionSpec("googlenet", "GoogLeNet_Weights", "torchvision GoogLeNet, ImageNet"),
    "resnet50": TorchvisionSpec("resnet50", "ResNet50_Weights", "torchvision ResNet-50, ImageNet"),
}

_DATA_NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_IMAGENET_NORMALISATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_CODE = Path(__file__).resolve().parent


def available() -> list[str]:
    """All model ids of the zoo."""
    return list(ZOO)


def _spec(model_id: str) -> OwnSpec | TorchvisionSpec:
    if model_id not in ZOO:
        raise ValueError(f"unknown model id {model_id!r}; valid ids: {', '.join(ZOO)}")
    return ZOO[model_id]


def _build_own(spec: OwnSpec) -> architectures.NamedLayerNet:
    mean, std = _DATA_NORMALISATION[spec.dataset]
    return getattr(architectures, spec.builder)(mean=mean, std=std)


def checkpoint_path(model_id: str) -> Path:
    """Where the checkpoint of one of our own models is (or will be) cached."""
    spec = _spec(model_id)
    if not isinstance(spec, OwnSpec):
        raise ValueError(f"{model_id!r} is a torchvision model; its weights live in torch's hub cache")
    key = stable_hash({
        "builder": spec.builder, "dataset": spec.dataset, "config": dataclasses.asdict(spec.config),
        "data": data.data_source(spec.dataset),
        "code": source_fingerprint(_CODE / "architectures.py", _CODE / "train.py"),
    })
    return data.cache_dir() / "models" / f"{model_id}-{key[:16]}.pt"


def _train_own(model_id: str, spec: OwnSpec, path: Path, device: torch.device) -> dict:
    x_train, y_train = data.load(spec.dataset, "train")
    x_test, y_test = data.load(spec.dataset, "test")
    model = _build_own(spec).to(device)
    start = time.perf_counter()
    train_classifier(model, x_train, y_train, spec.config, desc=f"training {model_id}")
    seconds = time.perf_counter() - start
    model = model.cpu()
    card = {
        "id": model_id, "description": spec.description, "architecture": spec.builder,
        "dataset": spec.dataset, "data_source": data.data_source(spec.dataset),
        "train_size": len(x_train), "test_size": len(x_test),
        "epochs": spec.config.epochs, "train_config": dataclasses.asdict(spec.config),
        "test_accuracy": accuracy(model.eval(), x_test, y_test),
        "train_seconds": round(seconds, 1), "train_device": str(device),
        "checkpoint_hash": state_hash(model),
    }
    atomic_save({"state_dict": model.state_dict(), "card": card}, path)
    return card


def _load_own(model_id: str, device: torch.device) -> tuple[nn.Module, dict]:
    spec = _spec(model_id)
    path = checkpoint_path(model_id)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent processes: one trains, the others wait
            if not path.is_file():
                _train_own(model_id, spec, path, device)
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = _build_own(spec)
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), blob["card"]


def _torchvision_layer_map(builder: str, net: nn.Module) -> dict[str, str]:
    """Paper-style names for torchvision's ImageNet models (post-ReLU, as Caffe's blobs)."""
    if builder == "alexnet" or builder.startswith("vgg"):
        names: dict[str, str] = {}
        block, conv, convs = 1, 0, []
        for idx, module in enumerate(net.features):
            if isinstance(module, nn.Conv2d):
                conv += 1
                convs.append(idx)
            elif isinstance(module, nn.ReLU):
                label = f"conv{len(convs)}" if builder == "alexnet" else f"conv{block}_{conv}"
                names[label] = f"net.features.{idx}"
            elif isinstance(module, nn.MaxPool2d):
                # AlexNet pools after conv1, conv2, conv5 → pool1, pool2, pool5 (CaffeNet's names)
                label = f"pool{len(convs) if builder == 'alexnet' else block}"
                names[label] = f"net.features.{idx}"
                block, conv = block + 1, 0
        relus = [i for i, m in enumerate(net.classifier) if isinstance(m, nn.ReLU)]
        names["fc6"] = f"net.classifier.{relus[0]}"
        names["fc7"] = f"net.classifier.{relus[1]}"
        names["fc8"] = f"net.classifier.{len(net.classifier) - 1}"
        return names
    # googlenet, resnet50: torchvision's own top-level child names
    return {name: f"net.{name}" for name, _ in net.named_children()
            if name not in ("aux1", "aux2", "dropout")}


def _load_torchvision(model_id: str, spec: TorchvisionSpec, device: torch.device) -> tuple[nn.Module, dict]:
    import torchvision.models as tvm

    weights = getattr(tvm, spec.weights).DEFAULT
    try:
        net = getattr(tvm, spec.builder)(weights=weights)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"could not download the pretrained weights of {model_id!r} ({weights.url}): "
            f"{type(exc).__name__}: {exc}\nOn a machine without internet, use the zoo's own "
            f"models ({', '.join(k for k, v in ZOO.items() if isinstance(v, OwnSpec))}) or copy "
            f"the file into torch's hub cache ({torch.hub.get_dir()}/checkpoints)."
        ) from None
    mean, std = _IMAGENET_NORMALISATION
    model = architectures.NamedLayerNet(architectures.Normalize(mean, std), net,
                                        _torchvision_layer_map(spec.builder, net), (3, 224, 224))
    card = {
        "id": model_id, "description": spec.description, "architecture": spec.builder,
        "dataset": "imagenet", "data_source": weights.url,
        "test_accuracy": weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] / 100.0,
        "checkpoint_hash": state_hash(model),
    }
    return model.to(device).eval(), card


def _load(model_id: str, device: str | torch.device) -> tuple[nn.Module, dict]:
    spec = _spec(model_id)
    dev = resolve_device(device)
    if isinstance(spec, OwnSpec):
        return _load_own(model_id, dev)
    return _load_torchvision(model_id, spec, dev)


def get(model_id: str, *, device: str | torch.device = "auto") -> nn.Module:
    """The zoo model ``model_id`` in eval mode on ``device``, taking [0, 1] input.

    Our own models are trained on first use (a few minutes on a CPU) and cached; later calls
    load the checkpoint. The model carries ``model_id`` and ``card`` attributes.
    """
    model, card = _load(model_id, device)
    model.model_id, model.card = model_id, card
    return model


def model_card(model_id: str) -> dict:
    """Architecture, data, epochs, test accuracy, layers with feature shapes, checkpoint hash."""
    model = get(model_id, device="cpu")
    card = dict(model.card)
    card["layers"] = layer_names(model)
    card["feature_shapes"] = feature_shapes(model, model.input_shape)
    card["parameters"] = sum(p.numel() for p in model.parameters())
    return card
