"""Pretrained defended models from RobustBench's model zoo (Croce et al. 2021), as zoo ids.

Chapter 3's paper-scale presets attack the defences the paper attacked — Madry et al.'s PGD
adversarial training and TRADES on CIFAR-10, Madry's ImageNet ResNet-50 — and RobustBench
hosts exactly those, evaluated with AutoAttack: training them from scratch would cost days of
GPU time for a worse copy. ``robustbench.utils.load_model`` downloads a checkpoint on first use
into ``FEATADV_CACHE/robustbench`` (internet needed once) and returns a model that takes
[0, 1] images and normalises inside, the zoo's convention.

RobustBench is an optional dependency (its pins — ``timm==1.0.9``, ``gdown`` — are not the
book's): ``pip install robustbench``. Without it, or offline, :func:`load` raises
:class:`~featadv_core.models.zoo.WeightsUnavailableError` saying what to do. With
``FEATADV_WEIGHTS=random`` (the paper presets' smoke run) the zoo passes a labelled random-weight
stand-in instead — torchvision's ResNet-50 for the ImageNet model (the same architecture),
the zoo's ResNet-20 for CIFAR-10 (a smaller one: the smoke run checks the notebook's code path,
not the network) — so every line of a preset runs on a machine without internet.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from . import architectures

__all__ = ["RobustBenchSpec", "load", "last_linear"]


@dataclass(frozen=True)
class RobustBenchSpec:
    """A RobustBench model: its leaderboard name, dataset and threat model, with the leaderboard's numbers."""

    name: str                  # RobustBench's model name, e.g. "Engstrom2019Robustness"
    dataset: str               # "cifar10" or "imagenet"
    threat_model: str          # "Linf"
    architecture: str
    eps: float                 # the ε of the leaderboard entry ([0, 1] pixels)
    clean_accuracy: float      # RobustBench's leaderboard (model_info/<dataset>/<threat>/<name>.json)
    autoattack_accuracy: float
    description: str


def last_linear(net: nn.Module) -> str:
    """The dotted name of ``net``'s last ``nn.Linear`` (the classifier head), for the layer map."""
    names = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(net).__name__} has no linear layer to name as its head")
    return names[-1]


def _download(model_id: str, spec: RobustBenchSpec, cache_dir: str, unavailable: type[Exception]) -> nn.Module:
    try:
        from robustbench.utils import load_model
    except ImportError:
        raise unavailable(f"{model_id!r} is RobustBench's {spec.name}: `pip install robustbench` (an optional "
                          f"dependency) and rerun; FEATADV_WEIGHTS=random builds a random stand-in (smoke runs "
                          f"only)") from None
    try:
        return load_model(spec.name, model_dir=cache_dir, dataset=spec.dataset, threat_model=spec.threat_model)
    except Exception as exc:
        raise unavailable(f"could not load RobustBench's {spec.name} ({spec.dataset}, {spec.threat_model}) for "
                          f"{model_id!r}: {type(exc).__name__}: {exc}\nThe first use downloads it (internet needed); "
                          f"a copied checkpoint goes in {cache_dir}/{spec.dataset}/{spec.threat_model}/"
                          f"{spec.name}.pt. FEATADV_WEIGHTS=random builds a random stand-in (smoke runs only).") from None


def load(model_id: str, spec: RobustBenchSpec, *, standin: nn.Module | None, cache_dir: str,
         unavailable: type[Exception]) -> tuple[nn.Module, dict]:
    """``(model, card)`` for RobustBench's ``spec``, downloaded on first use (cached in ``cache_dir``;
    ``unavailable`` is raised with what to do), or ``standin``, a random-weight network of the zoo's
    frame, labelled as such in the card (the ``FEATADV_WEIGHTS=random`` smoke run)."""
    random = standin is not None
    if random:
        model = standin
    else:
        net = _download(model_id, spec, cache_dir, unavailable)
        shape = (3, 32, 32) if spec.dataset == "cifar10" else (3, 224, 224)
        # RobustBench's models normalise inside (they take [0, 1] pixels): the frame's normalisation is the identity
        identity = architectures.Normalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        model = architectures.NamedLayerNet(identity, net, {"fc": f"net.{last_linear(net)}"}, shape)
    card = {
        "id": model_id, "dataset": spec.dataset, "architecture": spec.architecture,
        "description": ("[RANDOM WEIGHTS: smoke run only] " if random else "") + spec.description,
        "data_source": ("random weights (FEATADV_WEIGHTS=random)" if random
                        else f"RobustBench {spec.dataset}/{spec.threat_model}/{spec.name}"),
        "weights": "random" if random else f"robustbench:{spec.name}",
        # NaN for a random network: it has no accuracy to report (a page that formats it still renders)
        "test_accuracy": float("nan") if random else spec.clean_accuracy,
        "robustbench_autoattack_accuracy": float("nan") if random else spec.autoattack_accuracy,
        "robustbench_eps": spec.eps,
    }
    return model.eval(), card
