"""The model zoo: stable ids → trained, eval-mode models with named layers and cards.

Our own models are defined by a :class:`Recipe` (architecture builder, dataset, training
config, optionally a zoo model to start from and a loss other than cross-entropy). A recipe's
**key** hashes the recipe's fields (by name for its functions), its explicit ``version`` and the
keys of the models it starts from — not the data source, so a checkpoint trained on the offline
copy serves a user who reads torchvision's originals (its card says which it saw), and not the
code's text: editing the training loop, an architecture helper or the claims code re-keys
nothing by itself. A person who changes what a recipe computes bumps its ``version`` on purpose.
The code's fingerprint (:func:`featadv_core.repro.code_fingerprint` of the builder, loss, data
function and training loop, docstrings and comments excluded) is recorded in every card as a
*warning*: :func:`code_drift` lists the shipped checkpoints whose code has changed since they
were trained, and ``make models`` prints them, so that the person decides (bump the version, or
``--restamp`` when the change does not alter training).

:func:`get` looks for a checkpoint in this order:

1. the **shipped** checkpoint ``featadv_core/models/checkpoints/<id>.pt``, if its card's
   recipe key is the current one (so a fresh clone never retrains);
2. the user cache ``FEATADV_CACHE/models/<id>-<key>.pt``;
3. otherwise it trains (file-locked: concurrent processes train once) into the user cache.

``make models`` (:mod:`.retrain`) retrains the stale shipped checkpoints, or all of them.
Checkpoints store float tensors in half precision (the models are rounded to it right after
training, so a cached and a shipped model are the same; the card records the accuracy before
and after rounding). torchvision's ImageNet models (``alexnet``, ``vgg16``, ``vgg19``,
``googlenet``, ``resnet50``) load their pretrained weights instead, and the ``robustbench-*`` ids
RobustBench's defended models (:mod:`.robustbench_zoo`; the optional ``robustbench`` package).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import data, distributed
from ..devices import resolve_device
from ..features import feature_shapes, layer_names
from ..repro import atomic_save, code_fingerprint, stable_hash, state_hash
from . import (adain, adversarial_data, adversarial_training, architectures, atda, decoder_evaluation, decoder_training,
               robustbench_zoo, trades)
from .robustbench_zoo import RobustBenchSpec
from .train import (SMOKE_IMAGES, LossFn, TrainConfig, accuracy, budgeted, cross_entropy_loss, train_budget,
                    train_classifier)

__all__ = ["Recipe", "TorchvisionSpec", "RobustBenchSpec", "ZOO", "WeightsUnavailableError", "available", "get",
           "model_card", "recipe_key", "reevaluate", "weights_mode", "WEIGHTS_ENV", "recipe_code", "code_drift", "restamp", "checkpoint_path", "shipped_path",
           "shipped_is_current", "train", "SHIPPED_DIR"]

SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
FINGERPRINTS = "code_fingerprints.json"  # shipped id → fingerprint of its training code when last judged


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be downloaded here; the message says what to do."""


TrainData = Callable[["Recipe", "nn.Module | None"], "tuple[torch.Tensor, torch.Tensor]"]
Trainer = Callable[["nn.Module", "Recipe", "nn.Module | None"], "dict | None"]
Evaluate = Callable[["nn.Module", "Recipe", "nn.Module | None"], dict]


@dataclass(frozen=True)
class Recipe:
    """How one of our own models is made: everything its checkpoint key depends on.

    ``builder`` is a function of :mod:`.architectures` (called with the dataset's
    normalisation); ``base`` a zoo id whose weights training starts from (fine-tuning);
    ``loss`` the per-batch loss (:data:`.train.LossFn`; adversarial training passes its own);
    ``train_data(recipe, base_model)`` the training images and labels (e.g. clean ∪ adversarial
    images of the base model); ``None`` is the dataset's whole training split.

    A model that is not a classifier trained by :func:`.train.train_classifier` (chapter 3's
    style decoder) names its own ``trainer(model, recipe, base_model)``, which trains the freshly
    built model in place and may return card entries (its loss log); ``config`` is then the trainer's own config dataclass.
    ``evaluate(model, recipe, base_model)`` returns extra card entries measured on the final
    (half-precision) weights — a decoder's PSNR, a robust model's PGD accuracy. It is not part
    of the recipe key: it measures the weights, it does not make them.

    ``ships=False`` marks a paper-scale recipe (torchvision weights, GPU-sized training): no
    checkpoint ships with the project; :func:`get` trains it into the user cache on first use.

    ``version`` is bumped by hand when the code a recipe runs changes what it trains (the key
    does not follow the code's text; :func:`code_drift` warns when that text has changed).
    """

    builder: Callable[..., nn.Module]
    dataset: str
    config: TrainConfig
    description: str
    base: str | None = None
    loss: LossFn = cross_entropy_loss
    train_data: TrainData | None = None
    trainer: Trainer | None = None
    evaluate: Evaluate | None = None
    ships: bool = True
    version: int = 1


@dataclass(frozen=True)
class TorchvisionSpec:
    """A torchvision ImageNet model with pretrained weights."""

    builder: str               # torchvision.models function name
    weights: str               # torchvision weights enum name
    description: str


def evaluate_decoder(ae: adain.StyleAutoencoder, recipe, base: torch.nn.Module) -> dict:
    """The zoo card's entries for a decoder: :func:`.decoder_evaluation.decoder_quality` on 2,000 test images.

    The classifier is ``base`` when it classifies the decoder's dataset (the encoder's own
    network), else the zoo's ``allconv-<dataset>`` (an ImageNet VGG-19 encoder on CIFAR-10)."""
    classifier = base if base.card.get("dataset") == recipe.dataset else get(f"allconv-{recipe.dataset}",
                                                                            device=ae.decoder.mean.device)
    x, y = data.load(recipe.dataset, "test", n=budgeted(2000), seed=0)
    return dict(decoder_evaluation.decoder_quality(ae, x, y, classifier), quality_classifier=classifier.model_id)


DECODER_STEPS = 4000
_CIFAR = dict(crop_pad=4, flip=True, label_smoothing=0.1, bf16=True, channels_last=True, batch_size=256)

ZOO: dict[str, Recipe | TorchvisionSpec | RobustBenchSpec] = {
    "lenet-mnist": Recipe(architectures.lenet, "mnist",
                          TrainConfig(epochs=12, lr=0.05, batch_size=64),
                          "Caffe LeNet on MNIST"),
    "lenet-fashion": Recipe(architectures.lenet, "fashion_mnist",
                            TrainConfig(epochs=12, lr=0.05, batch_size=64),
                            "Caffe LeNet on Fashion-MNIST"),
    "caffenet-cifar10": Recipe(architectures.caffenet_cifar, "cifar10",
                               TrainConfig(epochs=30, lr=0.05, **_CIFAR),
                               "CaffeNet-shaped CNN (LRN, grouped convs, fc6/fc7) on CIFAR-10"),
    "allconv-cifar10": Recipe(architectures.allconv_cifar, "cifar10",
                              TrainConfig(epochs=22, lr=0.2, **_CIFAR),
                              "VGG-style all-convolutional CNN with batch norm on CIFAR-10"),
    # Rozsa et al. (2017), Table 1: the Basic LeNet fine-tuned on clean ∪ adversarial digits (see
    # .adversarial_data), with Caffe's solver values (lr 0.01, momentum 0.9, batch 64) on our one-cycle
    # schedule, restarted; epochs over the union as many as the paper's iterations make over its own
    # (FGS/FGV 20K it. ≈ 11 epochs, HC 50K ≈ 5, LOTS 100K ≈ 3, one LOTS layer 50K ≈ 5).
    **{f"lenet-mnist-ft-{name}": Recipe(architectures.lenet, "mnist", TrainConfig(epochs=epochs, lr=0.01, batch_size=64),
                                        f"Basic LeNet fine-tuned on clean ∪ {label} digits (Rozsa et al. 2017, Table 1)",
                                        base="lenet-mnist", train_data=fn)
       for name, label, epochs, fn in [
           # epochs: ≈ a fifth of the paper's iterations on each row's union (FGS/FGV 20K, HC 50K, LOTS 100K;
           # one LOTS layer 50K, the chapter's choice), the sets a tenth of the paper's (adversarial_data)
           ("fgs", "FGS", 4, adversarial_data.fgs_union), ("fgv", "FGV", 4, adversarial_data.fgv_union),
           ("hc", "hot/cold", 6, adversarial_data.hc_union), ("lots", "LOTS (4 layers)", 5, adversarial_data.lots_union),
           ("lots-conv1", "LOTS conv1", 6, adversarial_data.lots_conv1_union),
           ("lots-conv2", "LOTS conv2", 6, adversarial_data.lots_conv2_union),
           ("lots-ip1", "LOTS ip1", 6, adversarial_data.lots_ip1_union),
           ("lots-ip2", "LOTS ip2", 6, adversarial_data.lots_ip2_union),
           ("clean", "nothing adversarial (control: more training on the clean digits)", 5,
            adversarial_data.clean_training_set)]},
    "lenet-mnist-deformed": Recipe(architectures.lenet, "mnist", TrainConfig(epochs=5, lr=0.05, batch_size=64),
                                   "Caffe LeNet on MNIST + elastic/affine deformations (stand-in for InfiMNIST, "
                                   "Rozsa et al. 2017, Table 1)", train_data=adversarial_data.deformed_mnist),
    # Chapter 3 (feature-space attack): the style decoder of allconv-cifar10's conv2_1 encoder, the CPU
    # stand-in for the paper's VGG-19 relu2_1 decoder (paper scale: 300k steps × 64 pairs, lr 1e-4).
    # pixel_weight: our identity-reconstruction term (a deviation, see decoder_training): with the
    # feature losses alone 8,000 steps reached 21.4 dB PSNR, under the chapter's 25 dB gate.
    "decoder-allconv-cifar10": Recipe(adain.allconv_style_autoencoder, "cifar10",
                                      decoder_training.DecoderConfig(steps=DECODER_STEPS, pairs=32, lr=2e-3, decay=2e-4,
                                                                     pixel_weight=4.0),
                                      "Style decoder g for allconv-cifar10 cut at conv2_1 (stand-in for the paper's "
                                      "VGG-19 relu2_1 decoder; called on images it returns g(f(x))); trained with "
                                      "the paper's content and style losses plus our pixel term (pixel_weight)",
                                      base="allconv-cifar10", trainer=decoder_training.fit_decoder,
                                      evaluate=evaluate_decoder),
    # Chapter 3's defended models (CPU stand-ins for Madry's and TRADES' CIFAR-10 models, Xie et al.'s ImageNet
    # DenoiseAll, ATDA on SVHN). Madry and TRADES: ResNet-20s on the full 50,000 training images, about an hour of
    # one CPU thread each (N-FGSM 16 epochs; TRADES K = 2, 8 epochs); every card has its PGD-20 accuracy.
    **{model_id: Recipe(architectures.resnet20, "cifar10",
                        TrainConfig(epochs=epochs, lr=lr, batch_size=128, crop_pad=4, flip=True, weight_decay=5e-4,
                                    bf16=True, channels_last=True),
                        description, loss=loss, evaluate=adversarial_training.evaluate_robust)
       for model_id, loss, epochs, lr, description in [
           ("madry-resnet20-cifar10", adversarial_training.nfgsm_loss, 16, 0.2,
            "ResNet-20, N-FGSM adversarial training (de Jorge et al. 2022), ε 8/255, full training set (stand-in "
            "for the paper's Madry PGD-trained CIFAR-10 model)"),
           ("trades-resnet20-cifar10", trades.trades_k2_loss, 8, 0.15,
            "ResNet-20, TRADES β 6, ε 0.031, 2 KL steps, full training set (stand-in for the paper's TRADES WRN-34-10)"),
       ]},
    # The first stand-ins (20,000 training images, 5–8 epochs, 10–25 minutes): kept as points of the frontier of
    # clean vs robust accuracy vs training time, and ATDA's and the denoising model's recipes.
    **{model_id: Recipe(builder, "cifar10", TrainConfig(epochs=epochs, lr=0.1, batch_size=128, crop_pad=4, flip=True,
                                                          weight_decay=5e-4, label_smoothing=smoothing, bf16=True,
                                                          channels_last=True),
                        description, loss=loss, train_data=adversarial_training.cifar10_train_20k,
                        evaluate=adversarial_training.evaluate_robust)
       for model_id, builder, loss, epochs, smoothing, description in [
           ("madry-pgd3-20k-resnet20-cifar10", architectures.resnet20, adversarial_training.pgd3_loss, 8, 0.0,
            "ResNet-20, PGD-3 adversarial training, ε 8/255, 20,000 training images (the first Madry stand-in)"),
           ("trades-k3-20k-resnet20-cifar10", architectures.resnet20, trades.trades_k3_loss, 5, 0.0,
            "ResNet-20, TRADES β 6, ε 0.031, 3 KL steps, 20,000 training images (the first TRADES stand-in)"),
           ("atda-resnet20-cifar10", architectures.resnet20, atda.atda_loss, 8, 0.0,
            "ResNet-20, ATDA adversarial training with domain adaptation, FGSM ε 4/255, on CIFAR-10 "
            "(stand-in for the paper's SVHN 'Adaption' model: no SVHN offline)"),
           ("denoise-resnet20-cifar10", architectures.resnet20_denoise, adversarial_training.targeted_pgd3_loss,
            8, 0.1,
            "ResNet-20 with non-local denoising blocks, targeted PGD-3 ε 8/255 (stand-in for Xie et al.'s "
            "ImageNet ResNeXt-101 DenoiseAll)"),
       ]},
    # Paper-scale recipes (not shipped: they need torchvision's VGG-19 weights or GPU-sized training).
    "decoder-vgg19-cifar10": Recipe(adain.vgg19_style_autoencoder, "cifar10",
                                    decoder_training.DecoderConfig(steps=300_000, pairs=64, lr=1e-4, decay=2e-5, warmup=0),
                                    "Style decoder for torchvision VGG-19 cut at relu2_1 on 32×32 CIFAR-10 (the paper's "
                                    "encoder; 300k steps × 64 pairs, lr 1e-4 as the authors' code)",
                                    base="vgg19", trainer=decoder_training.fit_decoder,
                                    evaluate=evaluate_decoder, ships=False,
                                    version=2),  # 2: the encoder is rounded to float16 before training (its check failed)
    "madry-pgd7-resnet20-cifar10": Recipe(architectures.resnet20, "cifar10",
                                          TrainConfig(epochs=100, lr=0.1, batch_size=128, crop_pad=4, flip=True,
                                                      weight_decay=5e-4),
                                          "ResNet-20, Madry PGD-7 adversarial training (ε 8/255, α 2/255), full training "
                                          "set, 100 epochs (paper scale)", loss=adversarial_training.pgd7_loss,
                                          evaluate=adversarial_training.evaluate_robust, ships=False),
    "madry-fgsmrs-resnet20-cifar10": Recipe(architectures.resnet20, "cifar10",
                                            TrainConfig(epochs=8, lr=0.1, batch_size=128, crop_pad=4, flip=True,
                                                        weight_decay=5e-4, bf16=True, channels_last=True),
                                            "ResNet-20, FGSM-RS (Wong et al. 2020) at the CPU budget: overfits "
                                            "catastrophically (0 % PGD-20), kept to show it",
                                            loss=adversarial_training.fgsm_rs_loss,
                                            train_data=adversarial_training.cifar10_train_20k,
                                            evaluate=adversarial_training.evaluate_robust, ships=False),
    "trades-k10-resnet20-cifar10": Recipe(architectures.resnet20, "cifar10",
                                          TrainConfig(epochs=76, lr=0.1, batch_size=128, crop_pad=4, flip=True,
                                                      weight_decay=2e-4),
                                          "ResNet-20, TRADES β 6, ε 0.031, 10 KL steps of 0.007, full training set, 76 "
                                          "epochs (the reference setting)", loss=trades.trades_k10_loss,
                                          evaluate=adversarial_training.evaluate_robust, ships=False),
    "alexnet": TorchvisionSpec("alexnet", "AlexNet_Weights", "torchvision AlexNet, ImageNet"),
    "vgg16": TorchvisionSpec("vgg16", "VGG16_Weights", "torchvision VGG-16, ImageNet"),
    "vgg19": TorchvisionSpec("vgg19", "VGG19_Weights", "torchvision VGG-19, ImageNet"),
    "googlenet": TorchvisionSpec("googlenet", "GoogLeNet_Weights", "torchvision GoogLeNet, ImageNet"),
    "resnet50": TorchvisionSpec("resnet50", "ResNet50_Weights", "torchvision ResNet-50, ImageNet"),
    # the paper's defences, pretrained (chapter 3's paper presets); numbers from RobustBench's leaderboard
    "robustbench-madry-cifar10": RobustBenchSpec(
        "Engstrom2019Robustness", "cifar10", "Linf", "ResNet-50", 8 / 255, 0.8703, 0.4925,
        "Madry et al.'s PGD adversarial training (ε = 8/255), ResNet-50 of the robustness library (Engstrom et "
        "al. 2019), RobustBench: clean 87.03 %, AutoAttack 49.25 %"),
    "robustbench-trades-cifar10": RobustBenchSpec(
        "Zhang2019Theoretically", "cifar10", "Linf", "WideResNet-34-10", 0.031, 0.8492, 0.5308,
        "TRADES (Zhang et al. 2019; ε = 0.031), WideResNet-34-10, RobustBench: clean 84.92 %, AutoAttack 53.08 %"),
    "robustbench-madry-imagenet": RobustBenchSpec(
        "Engstrom2019Robustness", "imagenet", "Linf", "ResNet-50", 4 / 255, 0.6256, 0.2922,
        "Madry-style PGD adversarial training on ImageNet (ε = 4/255), ResNet-50 of the robustness library, "
        "RobustBench: clean 62.56 %, AutoAttack 29.22 %"),
}

_DATA_NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_IMAGENET_NORMALISATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def available() -> list[str]:
    """All model ids of the zoo."""
    return list(ZOO)


def _spec(model_id: str) -> Recipe | TorchvisionSpec | RobustBenchSpec:
    if model_id not in ZOO:
        raise ValueError(f"unknown model id {model_id!r}; valid ids: {', '.join(ZOO)}")
    return ZOO[model_id]


def _recipe(model_id: str) -> Recipe:
    spec = _spec(model_id)
    if not isinstance(spec, Recipe):
        raise ValueError(f"{model_id!r} is not one of our own models (torchvision or RobustBench weights)")
    return spec


def _name(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _code(recipe: Recipe) -> tuple:
    """The functions whose code trains ``recipe``'s weights (followed through their imports)."""
    if recipe.trainer is not None:
        return (recipe.builder, recipe.trainer)
    return tuple([recipe.builder, recipe.loss, train_classifier] + ([recipe.train_data] if recipe.train_data else []))


def _base_key(base: str) -> str:
    spec = _spec(base)
    if isinstance(spec, TorchvisionSpec):  # a pretrained encoder (e.g. VGG-19 for chapter 3's decoder)
        weights = spec.weights if weights_mode() == "pretrained" else "random"  # never share a random run's cache
        return stable_hash({"torchvision": spec.builder, "weights": weights})
    if isinstance(spec, RobustBenchSpec):  # a model fine-tuned from a RobustBench defence
        return stable_hash({"robustbench": spec.name, "dataset": spec.dataset, "weights": weights_mode()})
    return recipe_key(base)


def recipe_key(model_id: str) -> str:
    """SHA-256 of everything that determines ``model_id``'s weights, except the data source and the code's text.

    Recipe fields (functions by their qualified names), the recipe's ``version`` and the base
    model's key, recursively (a torchvision base by its weights' name). The zoo's own module and
    the code's text are not part of it: adding a model, or an edit that does not change what a
    recipe trains, retrains nothing; a change that does is marked by bumping ``version``
    (:func:`code_drift` points at the candidates).
    """
    recipe = _recipe(model_id)
    fields = {"builder": _name(recipe.builder), "dataset": recipe.dataset,
              "config": dataclasses.asdict(recipe.config),
              "base": _base_key(recipe.base) if recipe.base else None, "version": recipe.version}
    if _smoke(recipe):  # a smoke-budget model never shares a full one's cache
        fields["budget"] = "smoke"
    if recipe.trainer is not None:
        fields["trainer"] = _name(recipe.trainer)
    else:
        fields.update(loss=_name(recipe.loss), train_data=_name(recipe.train_data) if recipe.train_data else None)
    return stable_hash(fields)


def _smoke(recipe: Recipe) -> bool:
    """Whether ``recipe`` trains under the smoke budget: only paper-scale recipes (shipped ones load their checkpoint)."""
    return not recipe.ships and train_budget() == "smoke"


def _smoke_recipe(recipe: Recipe) -> Recipe:
    """The smoke budget's version of a paper-scale recipe: one epoch, or a few decoder steps, on few images."""
    if isinstance(recipe.config, TrainConfig):
        config = dataclasses.replace(recipe.config, epochs=1)
    else:
        config = dataclasses.replace(recipe.config, steps=2, pairs=4, calibration_images=16, warmup=0)
    return dataclasses.replace(recipe, config=config, description="[SMOKE BUDGET: a few training steps] "
                               + recipe.description)


def recipe_code(model_id: str) -> str:
    """:func:`~featadv_core.repro.code_fingerprint` of the code that trains ``model_id`` (its base's included)."""
    recipe = _recipe(model_id)
    base = recipe_code(recipe.base) if recipe.base and isinstance(_spec(recipe.base), Recipe) else None
    return stable_hash({"code": code_fingerprint(*_code(recipe)), "base": base})


def _fingerprints() -> dict[str, str]:
    path = SHIPPED_DIR / FINGERPRINTS
    return json.loads(path.read_text()) if path.is_file() else {}


def code_drift() -> list[str]:
    """Shipped, current checkpoints whose training code has changed since it was last judged.

    A warning, not a verdict: the key does not follow the code's text. The reference is
    ``checkpoints/code_fingerprints.json`` (the fingerprint at training time, or at the last
    :func:`restamp`), a small text file, so judging a change never rewrites a checkpoint. For each
    listed id a person decides whether the change alters what the recipe trains (bump its
    ``version``, ``make models`` retrains it) or not (``python -m featadv_core.models.retrain --restamp``).
    """
    known = _fingerprints()
    return [model_id for model_id, spec in ZOO.items()
            if isinstance(spec, Recipe) and spec.ships and shipped_is_current(model_id)
            and known.get(model_id) != recipe_code(model_id)]


def restamp(model_id: str) -> None:
    """Record the current code fingerprint of ``model_id``'s training code as judged harmless (weights untouched).

    For a code change a person has judged not to alter training (see :func:`code_drift`); also
    called when ``make models`` writes a shipped checkpoint.
    """
    _recipe(model_id)
    known = dict(_fingerprints(), **{model_id: recipe_code(model_id)})
    path = SHIPPED_DIR / FINGERPRINTS
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
    os.replace(tmp, path)


def checkpoint_path(model_id: str) -> Path:
    """Where a locally trained checkpoint of ``model_id``'s current recipe is (or will be) cached."""
    return data.cache_dir() / "models" / f"{model_id}-{recipe_key(model_id)[:16]}.pt"


def shipped_path(model_id: str) -> Path:
    """The checkpoint of ``model_id`` that ships with the project (current or not)."""
    _recipe(model_id)
    return SHIPPED_DIR / f"{model_id}.pt"


def _build(recipe: Recipe) -> nn.Module:
    mean, std = _DATA_NORMALISATION[recipe.dataset]
    return recipe.builder(mean=mean, std=std)


def _round_to_half(model: nn.Module) -> None:
    """Round every float tensor of the state dict to float16 precision, in place (kept as float32).

    Only what a checkpoint stores: non-persistent buffers (e.g. the LRN band) are rebuilt
    exactly on loading, so they must not be rounded here either.
    """
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())


def _half_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def train(model_id: str, *, device: str | torch.device = "auto", out: Path | None = None) -> dict:
    """Train ``model_id`` from its recipe (ignoring every existing checkpoint) and save it.

    Writes ``out`` (default: the user cache, :func:`checkpoint_path`) atomically and returns
    the card: data source, sizes, config, accuracy before/after the half-precision rounding,
    time, device and machine, recipe key and checkpoint hash.
    """
    recipe = _recipe(model_id)
    smoke = _smoke(recipe)
    recipe = _smoke_recipe(recipe) if smoke else recipe
    dev = resolve_device(device)
    base = get(recipe.base, device=dev) if recipe.base else None
    if recipe.trainer is not None:
        return _train_own(model_id, recipe, base, dev, out)
    x_train, y_train = (recipe.train_data(recipe, base) if recipe.train_data
                        else data.load(recipe.dataset, "train", n=SMOKE_IMAGES if smoke else None))
    x_test, y_test = data.load(recipe.dataset, "test", n=budgeted(10_000) if smoke else None)
    x_train, y_train = (x_train[:SMOKE_IMAGES], y_train[:SMOKE_IMAGES]) if smoke else (x_train, y_train)
    model = _build(recipe)
    if base is not None:
        model.load_state_dict(base.state_dict())
    model = model.to(dev)
    start = time.perf_counter()
    train_classifier(model, x_train, y_train, recipe.config, loss_fn=recipe.loss, desc=f"training {model_id}")
    seconds = time.perf_counter() - start
    acc_fp32 = accuracy(model, x_test, y_test)
    model = model.cpu()
    _round_to_half(model)
    card = {
        "id": model_id, "description": recipe.description, "architecture": _name(recipe.builder),
        "dataset": recipe.dataset, "data_source": data.data_source(recipe.dataset),
        "data_source_description": data.describe_source(recipe.dataset),
        "base": recipe.base, "loss": _name(recipe.loss),
        "train_data": _name(recipe.train_data) if recipe.train_data else "training split",
        "train_size": len(x_train), "test_size": len(x_test),
        "epochs": recipe.config.epochs, "train_config": dataclasses.asdict(recipe.config),
        "test_accuracy": accuracy(model, x_test, y_test), "test_accuracy_fp32": acc_fp32,
        **(recipe.evaluate(model.to(dev), recipe, base) if recipe.evaluate else {}),
        "train_seconds": round(seconds, 1), "train_device": str(dev), "machine": _machine(),
        "trained_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "recipe_key": recipe_key(model_id), "recipe_code": recipe_code(model_id),
        "checkpoint_hash": state_hash(model),
    }
    model = model.cpu()
    _save_checkpoint({"state_dict": _half_state(model), "card": card}, out or checkpoint_path(model_id))
    return card


def reevaluate(model_id: str, *, device: str | torch.device = "auto") -> dict:
    """Rerun the recipe's ``evaluate`` on ``model_id``'s current shipped checkpoint and update its card.

    For an evaluation added or changed after the model was trained (``evaluate`` is not part of
    the recipe key: it measures the weights, it does not make them). The weights are untouched.
    """
    recipe = _recipe(model_id)
    if recipe.evaluate is None:
        raise ValueError(f"{model_id!r} has no evaluation to rerun")
    if not shipped_is_current(model_id):
        raise ValueError(f"{model_id!r} has no current shipped checkpoint; make models retrains it (and evaluates it)")
    dev = resolve_device(device)
    path = shipped_path(model_id)
    model, card = _read(path, recipe)
    base = get(recipe.base, device=dev) if recipe.base else None
    card = dict(card, **recipe.evaluate(model.to(dev).eval(), recipe, base))
    _save_checkpoint({"state_dict": _half_state(model.cpu()), "card": card}, path)
    return card


def _train_own(model_id: str, recipe: Recipe, base: nn.Module | None, dev: torch.device, out: Path | None) -> dict:
    """:func:`train` for a recipe with its own ``trainer`` (the card takes the trainer's entries)."""
    torch.manual_seed(getattr(recipe.config, "seed", 0))  # the initial weights
    model = _build(recipe).to(dev)
    start = time.perf_counter()
    log = recipe.trainer(model, recipe, base) or {}
    seconds = time.perf_counter() - start
    model = model.cpu()
    _round_to_half(model)
    quality = recipe.evaluate(model.to(dev).eval(), recipe, base) if recipe.evaluate else {}
    model = model.cpu()
    card = {
        "id": model_id, "description": recipe.description, "architecture": _name(recipe.builder),
        "dataset": recipe.dataset, "data_source": data.data_source(recipe.dataset),
        "data_source_description": data.describe_source(recipe.dataset), "base": recipe.base,
        "trainer": _name(recipe.trainer), "train_config": dataclasses.asdict(recipe.config), **quality, **log,
        "train_seconds": round(seconds, 1), "train_device": str(dev), "machine": _machine(),
        "trained_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "recipe_key": recipe_key(model_id), "recipe_code": recipe_code(model_id),
        "checkpoint_hash": state_hash(model),
    }
    _save_checkpoint({"state_dict": _half_state(model), "card": card}, out or checkpoint_path(model_id))
    return card


def _read(path: Path, recipe: Recipe) -> tuple[nn.Module, dict]:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = _build(recipe)
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in blob["state_dict"].items()})
    return model, blob["card"]


def shipped_is_current(model_id: str) -> bool:
    """Whether ``model_id``'s shipped checkpoint exists and was made by its current recipe."""
    path = shipped_path(model_id)
    if not path.is_file():
        return False
    card = torch.load(path, map_location="cpu", weights_only=False)["card"]
    return card.get("recipe_key") == recipe_key(model_id)


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock on ``path`` across processes: ``fcntl`` on POSIX, ``msvcrt`` on Windows."""
    with open(path, "a+b") as fh:
        if os.name == "nt":
            import msvcrt

            while True:
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after 10 s: keep waiting for the trainer
                    continue
        else:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _save_checkpoint(blob: dict, path: Path) -> None:
    """Rank 0 writes the checkpoint; under ``torchrun`` the others wait until it is on disk."""
    if distributed.is_main():
        atomic_save(blob, path)
    distributed.barrier()


def _load_own(model_id: str, device: torch.device) -> tuple[nn.Module, dict]:
    recipe = _recipe(model_id)
    path = shipped_path(model_id) if shipped_is_current(model_id) else checkpoint_path(model_id)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        if distributed.world_size() > 1:  # the ranks of one torchrun job train together (data-parallel)
            train(model_id, device=device, out=path)
        else:
            with _file_lock(path.with_suffix(".lock")):  # independent processes: one trains, the others wait
                if not path.is_file():
                    train(model_id, device=device, out=path)
    model, card = _read(path, recipe)
    card = dict(card, checkpoint_file=str(path), shipped=path.parent == SHIPPED_DIR)
    return model.to(device).eval(), card


WEIGHTS_ENV = "FEATADV_WEIGHTS"


def weights_mode() -> str:
    """``"pretrained"`` (the default) or ``"random"``, from the ``FEATADV_WEIGHTS`` environment variable.

    ``random`` builds torchvision's ImageNet architectures with random weights instead of
    downloading them: the switch that lets the paper presets' smoke run execute every line of a
    paper-scale notebook on a machine without internet. Its numbers mean nothing, and every card,
    model id and cache key says so.
    """
    mode = os.environ.get(WEIGHTS_ENV, "pretrained") or "pretrained"
    if mode not in ("pretrained", "random"):
        raise ValueError(f"{WEIGHTS_ENV} must be 'pretrained' or 'random', got {mode!r}")
    return mode


def _load_torchvision(model_id: str, spec: TorchvisionSpec, device: torch.device) -> tuple[nn.Module, dict]:
    import torchvision.models as tvm

    weights = getattr(tvm, spec.weights).DEFAULT
    if weights_mode() == "random":
        with torch.random.fork_rng(devices=[]):  # the same random network in every process; caller's RNG kept
            torch.manual_seed(0)
            net = getattr(tvm, spec.builder)(weights=None)
    else:
        try:
            net = getattr(tvm, spec.builder)(weights=weights)
        except Exception as exc:
            raise WeightsUnavailableError(
                f"could not download the pretrained weights of {model_id!r} ({weights.url}): "
                f"{type(exc).__name__}: {exc}\nOn a machine without internet, use the zoo's own "
                f"models ({', '.join(k for k, v in ZOO.items() if isinstance(v, Recipe))}) or copy "
                f"the file into torch's hub cache ({torch.hub.get_dir()}/checkpoints); "
                f"{WEIGHTS_ENV}=random builds the architecture with random weights (smoke runs only)."
            ) from None
    net.eval()
    mean, std = _IMAGENET_NORMALISATION
    model = architectures.NamedLayerNet(architectures.Normalize(mean, std), net,
                                        architectures.torchvision_layer_map(spec.builder, net), (3, 224, 224))
    random = weights_mode() == "random"
    card = {
        "id": model_id, "description": ("[RANDOM WEIGHTS: smoke run only] " if random else "") + spec.description,
        "architecture": spec.builder, "dataset": "imagenet",
        "data_source": f"random weights ({WEIGHTS_ENV}=random)" if random else weights.url,
        "weights": "random" if random else spec.weights,
        # NaN, not the pretrained model's number: a random network has no accuracy to report (and a page
        # that formats it still renders, showing "nan")
        "test_accuracy": float("nan") if random else weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] / 100.0,
        "checkpoint_hash": state_hash(model),
    }
    return model.to(device).eval(), card


def _load_robustbench(model_id: str, spec: RobustBenchSpec, device: torch.device) -> tuple[nn.Module, dict]:
    standin = None
    if weights_mode() == "random":  # the smoke run's stand-in: ImageNet's architecture itself, a small CIFAR-10 net
        if spec.dataset == "imagenet":
            standin = _load_torchvision("resnet50", ZOO["resnet50"], device)[0]
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                standin = architectures.resnet20(*_DATA_NORMALISATION[spec.dataset])
    model, card = robustbench_zoo.load(model_id, spec, standin=standin, cache_dir=str(data.cache_dir() / "robustbench"),
                                       unavailable=WeightsUnavailableError)
    return model.to(device).eval(), dict(card, checkpoint_hash=state_hash(model))


def get(model_id: str, *, device: str | torch.device = "auto") -> nn.Module:
    """The zoo model ``model_id`` in eval mode on ``device``, taking [0, 1] input.

    Our own models come from the shipped checkpoint when it matches the current recipe, else
    from the user cache, else they are trained (minutes on a CPU) and cached. The model
    carries ``model_id`` and ``card`` attributes.
    """
    spec = _spec(model_id)
    dev = resolve_device(device)
    if isinstance(spec, Recipe):
        model, card = _load_own(model_id, dev)
    elif isinstance(spec, RobustBenchSpec):
        model, card = _load_robustbench(model_id, spec, dev)
    else:
        model, card = _load_torchvision(model_id, spec, dev)
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
