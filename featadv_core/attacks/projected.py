"""One projected first-order loop for the attacks that minimise a loss over a constrained variable.

PGD (Madry et al. 2018), TRADES' inner maximisation, the feature-space attack's augmentation
and interpolation (FSA, §3.2, Eq. 9–10), the projected-Adam solver of the feature adversaries
(:mod:`.solvers`, ``"pgd"``) and representation inversion (Mahendran & Vedaldi 2015,
:func:`featadv_core.analysis.invert`) are all

    repeat:  v ← Π_C( v − step(∇_v L(v)) )

with a per-image loss ``L``, a constraint set ``C`` and either a signed step (PGD) or Adam
(FSA: β1 = 0.5, inverse-time decayed lr, per-element gradient clipping; the solver: a cosine
schedule from a per-image step). They differ only in the loss, the projection and the step,
which :func:`projected_descent` takes as arguments. The gradient comes from autograd on the
loss, or from the caller when it has it already (a batched ``value_and_grad``).

It is batched over images: the loss is a vector of per-image values, Adam works per element,
and the bookkeeping (best iterate, success curve) is tensor operations, so an image's result
does not depend on the batch it is in. The **best iterate** is kept per image (the FSA code's
rule): a successful iterate beats an unsuccessful one; between two of the same status, the lower
``rank`` wins (FSA: the content loss; PGD: minus its objective).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

__all__ = ["Iterate", "DescentResult", "projected_descent"]


@dataclass
class Iterate:
    """What the loss function reports for the current variables, per image (length-N tensors).

    ``loss``: the value minimised (it must depend on the variables through autograd, unless
    ``grads`` are given); ``success``: whether this iterate achieves the attack's goal; ``rank``:
    the tie-breaker between iterates of the same status (lower is better); ``output``: the N×…
    result this iterate stands for (the image); ``grads``: the loss's gradients with respect to
    the variables, when the caller computed them (autograd is then not used).
    """

    loss: torch.Tensor | None
    success: torch.Tensor
    rank: torch.Tensor
    output: torch.Tensor
    grads: Sequence[torch.Tensor] | None = None


@dataclass
class DescentResult:
    """The kept iterate per image and the run's history.

    ``output``, ``success``, ``rank``: of the kept iterate. ``curve[t]``: the fraction of images
    whose kept iterate succeeds after ``t`` steps (``curve[0]``: the starting point).
    ``first_success``: per image, the first step after which it succeeded (``steps + 1``: never),
    so curves can be pooled over batches. ``variables``: the variables of the kept iterates.
    """

    output: torch.Tensor
    success: torch.Tensor
    rank: torch.Tensor
    curve: torch.Tensor
    first_success: torch.Tensor
    variables: list[torch.Tensor]


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def projected_descent(
    evaluate: Callable[[Sequence[torch.Tensor]], Iterate],
    variables: Sequence[torch.Tensor],
    *,
    project: Callable[[Sequence[torch.Tensor]], None],
    steps: int,
    lr: float | torch.Tensor,
    method: str = "adam",
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    decay: float = 0.0,
    schedule: str = "inverse_time",
    clip: float | Sequence[float] | None = None,
    keep: str = "best",
    progress: bool = False,
    desc: str = "attack",
) -> DescentResult:
    """Minimise ``evaluate(variables).loss`` per image with projected steps; keep each image's best.

    Args:
        evaluate: maps the variables (each N×…, batch first) to an :class:`Iterate`.
        variables: starting points (copied; they must already lie in the constraint set).
        project: projects the variables onto the constraint set, in place (called without
            gradients after every step).
        steps: number of steps (``steps + 1`` evaluations: the start is evaluated too).
        lr: the step size: a number, or one per image (a length-N tensor); scaled at step ``t``
            by ``schedule``.
        method: ``"adam"`` (bias-corrected Adam with ``betas`` and ``eps``, per element) or
            ``"sign"`` (``v − lr·sign(∇)``, PGD's step).
        schedule: ``"inverse_time"``: ``lr / (1 + decay·t)`` (the FSA code's decay; ``decay=0``
            keeps it constant), or ``"cosine"``: ``lr · ½(1 + cos(π t / steps))``.
        clip: per-element gradient clipping bound(s), one per variable (Adam only).
        keep: ``"best"`` (the rule in the module docstring) or ``"last"``: the final variables,
            not evaluated (adversarial training's inner attack; ``output``, ``success`` and
            ``rank`` are then ``None`` and ``curve`` covers the evaluated steps only).
        progress: show a progress bar.

    Returns:
        :class:`DescentResult`.
    """
    if method not in ("adam", "sign"):
        raise ValueError(f"method must be 'adam' or 'sign', got {method!r}")
    if schedule not in ("inverse_time", "cosine"):
        raise ValueError(f"schedule must be 'inverse_time' or 'cosine', got {schedule!r}")
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not bool((torch.as_tensor(lr) > 0).all()):
        raise ValueError(f"lr must be > 0, got {lr}")
    v = [t.detach().clone().requires_grad_(True) for t in variables]
    lrs = [lr if not isinstance(lr, torch.Tensor) else _expand(lr.to(t.device, t.dtype), t) for t in v]
    clips = [None] * len(v) if clip is None else ([clip] * len(v) if isinstance(clip, (int, float)) else list(clip))
    m1 = [torch.zeros_like(t) for t in v]
    m2 = [torch.zeros_like(t) for t in v]
    b1, b2 = betas
    best = None
    curve = []
    first = None
    bar = tqdm(range(steps + 1), desc=desc, unit="it", leave=False, disable=not progress)
    for t in bar:
        if keep == "last" and t == steps:  # the final iterate needs no evaluation
            break
        with torch.set_grad_enabled(t < steps):  # the last evaluation needs no graph
            it = evaluate(v)
        success, rank = it.success.detach(), it.rank.detach()
        if keep == "last":
            best = [None, success, rank, None]
        elif best is None:
            best = [it.output.detach().clone(), success.clone(), rank.clone(), [x.detach().clone() for x in v]]
        else:
            better = (success & ~best[1]) | ((success == best[1]) & (rank < best[2]))
            best[0] = torch.where(_expand(better, it.output), it.output.detach(), best[0])
            best[1] = best[1] | success
            best[2] = torch.where(better, rank, best[2])
            best[3] = [torch.where(_expand(better, x), x.detach(), k) for x, k in zip(v, best[3])]
        curve.append(best[1].float().mean())  # a device tensor: no host sync per step
        if first is None:
            first = torch.full(best[1].shape, steps + 1, dtype=torch.long, device=best[1].device)
        first = torch.where(best[1] & (first > steps), torch.full_like(first, t), first)
        if t == steps:
            break
        grads = it.grads if it.grads is not None else torch.autograd.grad(it.loss.sum(), v)
        with torch.no_grad():
            for i, (x, g) in enumerate(zip(v, grads)):
                step = (lrs[i] / (1.0 + decay * t) if schedule == "inverse_time"
                        else lrs[i] * 0.5 * (1 + math.cos(math.pi * t / max(steps, 1))))
                if method == "sign":
                    x -= step * g.sign()
                    continue
                if clips[i] is not None:
                    g = g.clamp(-clips[i], clips[i])
                m1[i].mul_(b1).add_(g, alpha=1 - b1)
                m2[i].mul_(b2).addcmul_(g, g, value=1 - b2)
                mhat = m1[i] / (1 - b1 ** (t + 1))
                vhat = m2[i] / (1 - b2 ** (t + 1))
                x -= step * mhat / (vhat.sqrt() + eps)
            project(v)
    bar.close()
    curve = torch.stack(curve).cpu() if curve else torch.zeros(0)
    if keep == "last":
        final = [x.detach() for x in v]
        return DescentResult(None, None, None, curve, first, final)
    return DescentResult(best[0], best[1], best[2], curve, first, best[3])
