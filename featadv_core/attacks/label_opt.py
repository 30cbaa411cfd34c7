"""Label adversaries by optimisation ("label-opt", Szegedy et al. 2014; Sabour et al. 2016, §2, §5).

Szegedy et al.'s box-constrained L-BFGS adversary, as Sabour et al. describe it: given an image
``I``, a classifier ``f`` and a target label ``ℓ``, find the perturbation ``r`` minimising

    c·||r||²₂ + loss(f(I + r), ℓ)    s.t.   I + r ∈ [0, 1]

(cross-entropy loss), with ``c`` "chosen by line-search to find the smallest r that achieves
f(I + r) = ℓ". Larger ``c`` weighs the perturbation more, so the search looks for the largest
``c`` whose minimiser is still classified ``ℓ``: a per-pair bisection on ``log c`` (growing or
shrinking ``c`` tenfold until it is bracketed). Every pair has its own ``c``; all pairs are
optimised at once at each search step.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import features
from ..images import check_images
from ..labels import check_labels
from .box import linf_box, project
from .solvers import solve

__all__ = ["label_opt"]


def label_opt(
    model: nn.Module,
    x_src: torch.Tensor,
    target: torch.Tensor | int,
    *,
    steps: int = 100,
    c_init: float = 0.1,
    search_steps: int = 8,
    solver: str = "lbfgsb",
    eps: float | torch.Tensor | None = None,
    history: int = 10,
    progress: bool = True,
    **solver_options,
) -> torch.Tensor:
    """Smallest-L2 label adversaries of ``x_src`` classified as ``target`` (Szegedy et al.'s method).

    Args:
        model: a classifier returning logits for [0, 1] images; its mode and parameters are
            never changed.
        x_src: N×C×H×W floating images in [0, 1].
        target: the target labels (N, or one int for all).
        steps: iteration budget per pair of each inner box-constrained minimisation.
        c_init: the first weight ``c`` of ``||r||²`` (> 0).
        search_steps: number of inner minimisations (search steps on ``c``).
        solver: ``"lbfgsb"`` (default), ``"scipy"`` or ``"pgd"`` (see :mod:`.solvers`).
        eps: optionally also bound ``||r||_∞ ≤ eps`` (pixel units).
        history: L-BFGS memory.
        progress: show progress bars.

    Returns:
        Per pair, the successful adversary (classified ``target``) of smallest ``||r||₂`` found,
        or the last attempt when no search step succeeded; ``x_src``'s shape, dtype and device,
        within [0, 1] (and the eps box) exactly.
    """
    check_images(x_src, "x_src")
    if not c_init > 0:
        raise ValueError(f"c_init must be > 0, got {c_init}")
    if search_steps < 1:
        raise ValueError(f"search_steps must be >= 1, got {search_steps}")
    N, dev = x_src.shape[0], x_src.device
    mdtype = features.model_dtype(model, x_src.dtype)
    xs = x_src.detach()
    with torch.no_grad():
        n_classes = model(xs[:1].to(mdtype)).shape[1]
    tgt = check_labels(target, N, num_classes=n_classes, name="target", broadcast=True, device=dev)
    if eps is None:
        lo, hi = torch.zeros_like(xs), torch.ones_like(xs)
    else:
        lo, hi = linf_box(xs, eps)

    log_c = torch.full((N,), math.log(c_init), dtype=torch.float64, device=dev)
    log_lo = torch.full_like(log_c, -math.inf)   # largest log c known to succeed
    log_hi = torch.full_like(log_c, math.inf)    # smallest log c known to fail
    best = xs.clone()
    best_norm = torch.full((N,), math.inf, dtype=torch.float64, device=dev)
    found = torch.zeros(N, dtype=torch.bool, device=dev)
    view = (-1,) + (1,) * (xs.dim() - 1)

    for step in range(search_steps):
        c = log_c.exp().to(mdtype)

        def value_and_grad(x: torch.Tensor, idx: torch.Tensor, c=c) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                r = (x - xs[idx]).to(mdtype).flatten(1)
                logits = model(x.to(mdtype).contiguous(memory_format=torch.channels_last))  # as feature_opt
                loss = c[idx] * r.square().sum(1) + F.cross_entropy(logits, tgt[idx], reduction="none")
                (grad,) = torch.autograd.grad(loss.sum(), x)
            return loss.detach(), grad

        x_adv, _ = solve(solver, value_and_grad, xs, lo, hi, steps=steps, history=history,
                         progress=progress, desc=f"label-opt c-search {step + 1}/{search_steps}",
                         **solver_options)
        x_adv = project(x_adv.to(xs.dtype), lo, hi)
        with torch.no_grad():
            success = model(x_adv.to(mdtype)).argmax(1) == tgt
        norm = (x_adv - xs).to(torch.float64).flatten(1).norm(dim=1)
        improve = success & (norm < best_norm)
        best = torch.where(improve.view(view), x_adv, best)
        best_norm = torch.where(improve, norm, best_norm)
        found |= success
        best = torch.where((~found).view(view), x_adv, best)  # no success yet: keep the last attempt
        # bracket the largest successful c: success → grow c, failure → shrink c
        log_lo = torch.where(success, torch.maximum(log_lo, log_c), log_lo)
        log_hi = torch.where(~success, torch.minimum(log_hi, log_c), log_hi)
        bracketed = torch.isfinite(log_lo) & torch.isfinite(log_hi)
        log_c = torch.where(bracketed, (log_lo + log_hi) / 2,
                            torch.where(success, log_c + math.log(10), log_c - math.log(10)))
    return project(best, lo, hi)
