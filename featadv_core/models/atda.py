"""ATDA: adversarial training with domain adaptation (Song, He, Wang & Hopcroft, ICLR 2019).

Clean and FGSM images are treated as two domains whose logit distributions are pulled together:

    L = CE(x) + CE(x_adv) + (1/3)·(CORAL + MMD + Margin)          on the logits z

* CORAL = mean |C(z_clean) − C(z_adv)| over the entries of the two logit covariance matrices;
* MMD = mean |mean(z_clean) − mean(z_adv)| (the linear-kernel MMD);
* Margin = supervised domain adaptation with class centres ``c_k`` kept on the logits: the
  mean over (sample, other class k ≠ y) of ``softplus(‖z − c_y‖₁ − ‖z − c_k‖₁)``, on the clean
  and adversarial logits together (labels duplicated). The centres start at 0, are not trained
  by gradient, and move after each batch toward their class's logits:
  ``c_k ← c_k − α · Σ_{i: y_i = k} (c_k − z_i) / (1 + n_k)`` with α = 0.1 (the reference code's
  centre-loss update).
* ``x_adv`` = FGSM (one signed step of ε, no random start) on the current model.

Reference (``JHL-HUST/ATDA``): Adam lr 1e-3; ε = 0.02 on SVHN (the FSA paper's "Adaption"
column), 4/255 on CIFAR-10. There is no SVHN here, so the chapter's stand-in trains on CIFAR-10
at ATDA's CIFAR-10 ε = 4/255 (with this project's SGD one-cycle schedule, not Adam).

The centres live on the model being trained as the plain attribute ``_atda_centres`` (not a
buffer, so they are not part of its checkpoint: they exist only during training).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.pgd import pgd
from .train import TrainConfig

__all__ = ["EPS", "ALPHA", "coral", "mmd", "margin", "atda_loss"]

EPS = 4 / 255
ALPHA = 0.1


def coral(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the two batches' covariance matrices (features in columns)."""
    return (torch.cov(a.T) - torch.cov(b.T)).abs().mean()


def mmd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the two batches' means (linear-kernel MMD)."""
    return (a.mean(0) - b.mean(0)).abs().mean()


def margin(z: torch.Tensor, y: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Mean over (sample, k ≠ y) of softplus(‖z − c_y‖₁ − ‖z − c_k‖₁)."""
    dist = (z[:, None, :] - centres[None]).abs().sum(2)  # n×K L1 distances to every centre
    own = dist.gather(1, y[:, None])
    others = torch.ones_like(dist, dtype=torch.bool).scatter(1, y[:, None], False)
    return F.softplus(own - dist)[others].mean()


@torch.no_grad()
def _update_centres(centres: torch.Tensor, z: torch.Tensor, y: torch.Tensor, alpha: float) -> None:
    k = centres.shape[0]
    diff = torch.zeros_like(centres).index_add_(0, y, centres[y] - z)
    count = torch.bincount(y, minlength=k).to(z.dtype)[:, None]
    centres -= alpha * diff / (1 + count)


def atda_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The ATDA objective on a batch at ε = 4/255 (updates the model's class centres)."""
    x_adv = pgd(model, x, y, eps=EPS, steps=1, step_size=EPS, random_start=None, keep="last")
    z_clean, z_adv = model(x).float(), model(x_adv).float()
    centres = getattr(model, "_atda_centres", None)
    if centres is None or centres.shape != (z_clean.shape[1],) * 2:
        centres = torch.zeros(z_clean.shape[1], z_clean.shape[1], device=z_clean.device)
        model._atda_centres = centres
    z_all, y_all = torch.cat([z_clean, z_adv]), torch.cat([y, y])
    adaptation = coral(z_clean, z_adv) + mmd(z_clean, z_adv) + margin(z_all, y_all, centres)
    loss = F.cross_entropy(z_clean, y) + F.cross_entropy(z_adv, y) + adaptation / 3
    _update_centres(centres, z_all.detach(), y_all, ALPHA)
    return loss
