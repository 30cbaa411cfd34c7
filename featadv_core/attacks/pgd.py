"""Projected gradient descent in the L∞ ball (Madry et al. 2018): the pixel-space baseline.

    x_{t+1} = Π_{B∞(x, ε) ∩ [0,1]} ( x_t + α · sign ∇_x ℓ(M(x_t), y) )

from a random start in the ball, on :func:`.projected.projected_descent` with the signed step.
Chapter 3 uses it as the tables' baseline (8/255, 20 steps of 2/255 on CIFAR-10), O2's
attack (10 steps of ε/4 on the predicted label), and the inner maximisation of adversarial
training (FGSM with a random start = one step; TRADES maximises a KL divergence instead of the
cross-entropy: pass ``objective``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import features
from ..images import check_images
from .box import linf_box, project
from .projected import Iterate, projected_descent

__all__ = ["pgd", "cross_entropy_objective"]

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_objective(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-image cross-entropy: the loss PGD ascends (untargeted) or descends (targeted)."""
    return F.cross_entropy(logits, labels, reduction="none")


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    target: torch.Tensor | None = None,
    random_start: str | None = "uniform",
    objective: Objective | None = None,
    keep: str = "best",
    generator: torch.Generator | None = None,
    details: bool = False,
    progress: bool = False,
):
    """L∞ PGD adversarial examples of ``x`` for ``model``.

    Args:
        model: a classifier on [0, 1] images, in the mode it is attacked in (never changed).
        x: N×C×H×W images in [0, 1].
        y: the labels to move away from; ``None``: the model's predictions (O2's convention).
        eps: the L∞ radius in pixel units (``8/255``), > 0.
        steps: number of signed steps (1 with ``step_size = 1.25·eps`` and a uniform start is
            Wong et al.'s FGSM-RS).
        step_size: α; default ``2.5·eps/steps`` (Madry et al.'s rule of thumb).
        target: per-image target classes: descend the objective toward them instead.
        random_start: ``"uniform"`` in the ball (Madry), ``"normal"`` (0.001·N(0, 1), TRADES' start,
            needed where the objective's gradient vanishes at ``x``), or ``None`` (start at ``x``).
        objective: ``objective(logits, labels) -> per-image loss`` to ascend (cross-entropy by
            default; labels are ``y`` or ``target``).
        keep: ``"best"``: per image, a misclassified (or on-target) iterate before one that is not,
            then the higher objective; ``"last"``: the final iterate (adversarial training).
        generator: seeds the random start, drawn on its device (``None``: the CPU's global stream).
        details: also return ``(success, curve)``: the kept iterate's success per image and the
            fraction of successes after each step.

    Returns:
        ``x_adv`` (``|x_adv − x| ≤ eps`` and ``x_adv ∈ [0, 1]`` exactly), or ``(x_adv, success,
        curve)`` with ``details``.
    """
    check_images(x)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if random_start not in ("uniform", "normal", None):
        raise ValueError(f"random_start must be 'uniform', 'normal' or None, got {random_start!r}")
    lo, hi = linf_box(x, eps)
    objective = objective or cross_entropy_objective
    mdtype = features.model_dtype(model, x.dtype)
    with torch.no_grad():
        labels = model(x.to(mdtype)).argmax(1) if y is None else y.to(x.device)
    aim = labels if target is None else target.to(x.device)
    sign = -1.0 if target is None else 1.0  # the loop minimises
    start = x.detach().clone()
    gdev = generator.device if generator is not None else torch.device("cpu")
    if random_start == "uniform":
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=gdev).to(x.device)
        start = start + (noise * 2 - 1) * eps
    elif random_start == "normal":
        start = start + 0.001 * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=gdev).to(x.device)
    start = project(start, lo, hi)

    def evaluate(v):
        logits = model(v[0].to(mdtype))  # the iterate stays in x's dtype
        # a half-precision model's objective and ranking in float32; autocast's bf16 logits (adversarial
        # training of a float32 model) are left as they are, so that training is unchanged
        if mdtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        value = objective(logits, aim)
        pred = logits.argmax(1)
        success = (pred != labels) if target is None else (pred == aim)
        return Iterate(loss=sign * value, success=success, rank=sign * value.detach(), output=v[0])

    def box(v):
        v[0].copy_(project(v[0], lo, hi))

    result = projected_descent(evaluate, [start], project=box, steps=steps, method="sign",
                               lr=step_size if step_size is not None else 2.5 * eps / steps, keep=keep,
                               progress=progress, desc="PGD")
    x_adv = project((result.variables[0] if keep == "last" else result.output).detach(), lo, hi)
    if not details:
        return x_adv
    success = result.success
    if success is None:
        with torch.no_grad():
            pred = model(x_adv.to(mdtype)).argmax(1)
        success = (pred != labels) if target is None else (pred == aim)
    return x_adv, success, result.curve
