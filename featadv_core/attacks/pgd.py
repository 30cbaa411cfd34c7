"""Projected gradient descent in the L∞ ball (Madry et al. 2018): the pixel-space baseline.

    x_{t+1} = Π_{B∞(x, ε) ∩ [0,1]} ( x_t + α · sign ∇_x ℓ(M(x_t), y) )

from a random start in the ball, on :func:`.projected.projected_descent` with the signed step.
Chapter 3 uses it as the tables' baseline (8/255, 20 steps of 2/255 on CIFAR-10), O2's
attack (10 steps of ε/4 on the predicted label), and the inner maximisation of adversarial
training (FGSM with a random start = one step; TRADES maximises a KL divergence instead of the
cross-entropy: pass ``objective``). ``topk`` scores an untargeted attack by top-k (success = the
label is not among the k best classes), with ``objective="margin"`` the C&W hinge that pushes the
label out of the k best (:func:`.style.margin_loss`, the loss FSA uses for its top-k columns).
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
from .style import margin_loss

__all__ = ["pgd", "cross_entropy_objective", "margin_objective", "OBJECTIVES"]

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OBJECTIVES = ("ce", "margin")  # the objectives a plain value (a cache key, a notebook parameter) can name


def cross_entropy_objective(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-image cross-entropy: the loss PGD ascends (untargeted) or descends (targeted)."""
    return F.cross_entropy(logits, labels, reduction="none")


def margin_objective(*, kappa: float = 1.0, topk: int = 1, targeted: bool = False) -> Objective:
    """The C&W margin as a PGD objective (:func:`.style.margin_loss`, FSA's adversarial loss).

    Untargeted, PGD *ascends* the objective, so this is the negated hinge
    ``−Σ_{j ∈ k best other classes} max(z_y − z_j + κ, 0)``: 0 once the label is ``κ`` below the
    k best other logits, i.e. out of the top k. Targeted, PGD descends it toward the target, so it
    is the hinge ``max(max_{j≠t} z_j − z_t + κ, 0)`` itself.
    """
    if targeted:
        return lambda logits, labels: margin_loss(logits, labels, kappa=kappa, targeted=True)
    return lambda logits, labels: -margin_loss(logits, labels, kappa=kappa, topk=topk)


def _top_k_success(logits: torch.Tensor, labels: torch.Tensor, aim: torch.Tensor, targeted: bool,
                   topk: int) -> torch.Tensor:
    """Untargeted: the label is not among the ``topk`` best classes (top-1: ``argmax ≠ label``);
    targeted: the argmax is the target."""
    if targeted:
        return logits.argmax(1) == aim
    if topk == 1:
        return logits.argmax(1) != labels
    return ~(logits.topk(topk, dim=1).indices == labels[:, None]).any(1)


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
    objective: Objective | str | None = None,
    topk: int = 1,
    kappa: float = 1.0,
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
        objective: ``objective(logits, labels) -> per-image loss`` to ascend (descend when
            targeted; labels are ``y`` or ``target``), or a name: ``"ce"`` (the default, the
            cross-entropy) or ``"margin"`` (:func:`margin_objective` with ``kappa`` and ``topk``).
        topk: untargeted success criterion: the label is not among the ``topk`` best classes
            (1: misclassified). Targeted attacks succeed on the target's top-1 only (``topk`` 1).
        kappa: the hinge margin κ of ``objective="margin"`` (FSA's κ = 1); unused otherwise.
        keep: ``"best"``: per image, a successful iterate (misclassified in the top-``topk`` sense,
            or on-target) before one that is not, then the higher objective; ``"last"``: the final
            iterate (adversarial training).
        generator: seeds the random start, drawn on its device (``None``: the CPU's global stream).
        details: also return ``(success, curve)``: the kept iterate's success per image (in the
            ``topk`` sense) and the fraction of successes after each step.

    Returns:
        ``x_adv`` (``|x_adv − x| ≤ eps`` and ``x_adv ∈ [0, 1]`` exactly), or ``(x_adv, success,
        curve)`` with ``details``.
    """
    check_images(x)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if random_start not in ("uniform", "normal", None):
        raise ValueError(f"random_start must be 'uniform', 'normal' or None, got {random_start!r}")
    if not (isinstance(topk, int) and topk >= 1):
        raise ValueError(f"topk must be an integer >= 1, got {topk!r}")
    if target is not None and topk != 1:
        raise ValueError(f"a targeted attack succeeds on the target's top-1; topk must be 1, got {topk}")
    if isinstance(objective, str) and objective not in OBJECTIVES:
        raise ValueError(f"objective must be a callable or one of {OBJECTIVES}, got {objective!r}")
    lo, hi = linf_box(x, eps)
    if objective == "margin":
        objective = margin_objective(kappa=kappa, topk=topk, targeted=target is not None)
    elif objective is None or objective == "ce":
        objective = cross_entropy_objective
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
        success = _top_k_success(logits, labels, aim, target is not None, topk)
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
            success = _top_k_success(model(x_adv.to(mdtype)), labels, aim, target is not None, topk)
    return x_adv, success, result.curve
