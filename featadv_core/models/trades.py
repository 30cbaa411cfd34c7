"""TRADES (Zhang et al. 2019): the natural loss plus β × the KL between clean and adversarial predictions.

    L = CE(M(x), y) + β · (1/B) Σ KL( softmax M(x) ‖ softmax M(x') ),
    x' = argmax_{‖x' − x‖∞ ≤ ε} KL( softmax M(x) ‖ softmax M(x') )

The inner problem maximises the **KL** (not the cross-entropy with labels, which is what ART's
``AdversarialTrainerTRADESPyTorch`` feeds its attack) by :func:`featadv_core.attacks.pgd` with
``objective=`` the KL, from ``x + 0.001·N(0, I)`` (the KL's gradient vanishes at ``x' = x``),
with the model in **eval** mode while crafting and in train mode for the loss, as the reference
code (``yaodongyu/TRADES``) does. Reference: ε = 0.031, K = 10 steps of 0.007, β = 6. The CPU
stand-in on the full training set, :func:`trades_k2_loss`, keeps ε and β and takes K = 2 steps of ε/2
(:func:`trades_k3_loss`, K = 3, trained the earlier 20,000-image stand-in).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.pgd import pgd
from .train import TrainConfig

__all__ = ["trades_loss", "trades_k2_loss", "trades_k3_loss", "trades_k10_loss", "kl_to"]

EPS = 0.031
BETA = 6.0


def kl_to(p_clean: torch.Tensor):
    """The per-image objective ``KL(p_clean ‖ softmax(logits))`` for :func:`pgd`'s ``objective``."""
    def objective(logits: torch.Tensor, _labels: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, 1), p_clean, reduction="none").sum(1)
    return objective


def trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, beta: float, eps: float, steps: int,
                step_size: float) -> torch.Tensor:
    """The TRADES objective on a batch (the model is left in train mode)."""
    model.eval()
    with torch.no_grad():
        p_clean = F.softmax(model(x).float(), 1)
    x_adv = pgd(model, x, y, eps=eps, steps=steps, step_size=step_size, random_start="normal",
                objective=kl_to(p_clean), keep="last")
    model.train()
    logits = model(x)
    robust = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * robust


def trades_k2_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The full-training-set CPU stand-in: β = 6, ε = 0.031, 2 steps of ε/2."""
    return trades_loss(model, x, y, beta=BETA, eps=EPS, steps=2, step_size=EPS / 2)


def trades_k3_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The CPU stand-in: β = 6, ε = 0.031, 3 steps of ε/2."""
    return trades_loss(model, x, y, beta=BETA, eps=EPS, steps=3, step_size=EPS / 2)


def trades_k10_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The reference setting (paper scale): β = 6, ε = 0.031, 10 steps of 0.007."""
    return trades_loss(model, x, y, beta=BETA, eps=EPS, steps=10, step_size=0.007)
