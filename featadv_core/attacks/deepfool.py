"""DeepFool (Moosavi-Dezfooli et al. 2016), batched: untargeted, targeted and confined to a subspace.

DeepFool looks for the smallest L2 perturbation that changes a classifier's label by
linearising it and stepping onto the nearest linearised boundary, over and over. With logits
``F`` and clean label ``l`` it keeps ``r`` (start 0) and, while the label of ``x + (1+η) r``
is still ``l`` (and fewer than ``max_iter`` steps were taken):

* at the *un-overshot* iterate ``x_u = x + r``, for every candidate class ``k ≠ l``:
  ``w_k = ∇F_k(x_u) − ∇F_l(x_u)`` and ``f_k = F_k(x_u) − F_l(x_u)``;
* ``k* = argmin_k |f_k| / ‖w_k‖`` (the nearest linearised boundary), and
  ``r ← r + |f_k*| / ‖w_k*‖² · w_k*``;

and returns ``r̂ = (1+η) r`` (the overshoot is applied **once**, to the total). This is the
LTS4 MATLAB reference that Jetley et al. (2018) ran; its Python port linearises at the
overshot point instead, torchattacks compounds ``(1+η)`` into every step, ART's overshoot
defaults to 1e-6 (see ``benchmarks/deepfool_peers.py``).

Options, all keyword-only and explicit because the chapters (and peers) differ on each:

* ``candidates``: ``None`` = every class (Jetley et al.'s code), ``K`` = the clean label and
  the ``K − 1`` classes with the next-highest clean logits (the DeepFool paper's ImageNet 10);
* ``target``: the *targeted* ("fixed-label") variant of Jetley et al.'s Algorithm 1: one class
  ``c`` per image; each step linearises ``F_c − F_{l_cur}``, ``l_cur`` the label of the
  current overshot point, and the loop stops once that point is labelled ``c``;
* ``basis``: an orthonormal ``D×k`` matrix ``Q``; every ``w_k`` is replaced by ``QQᵀ w_k``
  *before* the distances and the step, so ``r̂ ∈ span(Q)`` (Jetley et al.'s "confined
  DeepFool", Fig. 5);
* ``box``: ``(lo, hi)`` clips every iterate and the result (the default, DESIGN §3's "clip
  last"); ``None`` leaves the perturbation unconstrained, as Jetley et al. ran it — a
  deliberate exception chapter 4 names.

One iteration costs one forward pass with gradients, ``K − 1`` backward passes of the same
graph (one per candidate, the cotangent ``onehot(k) − onehot(l)``), and one forward pass to
check the overshot point, for the images still running only (per-image masks; no per-image
Python loop).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import features
from ..images import check_images
from ..labels import check_labels

__all__ = ["DeepFoolResult", "deepfool", "check_basis"]


@dataclass(frozen=True)
class DeepFoolResult:
    """Per-image details of :func:`deepfool` (all on the input's device).

    ``perturbation`` is ``x_adv − x`` (``r̂`` = (1+η)·r, clipped when a box is given);
    ``clean_label`` the label of ``x``; ``label`` that of ``x_adv``; ``iterations`` the steps
    taken; ``success`` whether ``label`` differs from ``clean_label`` (targeted: equals the
    target); ``norm`` ``‖x_adv − x‖₂`` in float64.
    """

    perturbation: torch.Tensor
    clean_label: torch.Tensor
    label: torch.Tensor
    iterations: torch.Tensor
    success: torch.Tensor
    norm: torch.Tensor


def check_basis(basis: torch.Tensor, dim: int, *, tol: float = 1e-4) -> torch.Tensor:
    """``basis`` as a ``dim×k`` matrix with orthonormal columns, or a ``ValueError`` that says why."""
    if not isinstance(basis, torch.Tensor) or basis.dim() != 2:
        raise ValueError(f"basis must be a 2-D D×k tensor of orthonormal columns, got "
                         f"{type(basis).__name__ if not isinstance(basis, torch.Tensor) else tuple(basis.shape)}")
    if basis.shape[0] != dim:
        raise ValueError(f"basis must have one row per input dimension ({dim}), got shape {tuple(basis.shape)}")
    if basis.shape[1] > dim or basis.shape[1] == 0:
        raise ValueError(f"basis must have between 1 and {dim} columns, got {basis.shape[1]}")
    gram = basis.T.double() @ basis.double()
    err = (gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)).abs().max().item()
    if err > tol:
        raise ValueError(f"basis columns must be orthonormal (max |QᵀQ − I| = {err:.2g} > {tol:g}); "
                         "orthonormalise them first, e.g. torch.linalg.qr(basis).Q")
    return basis


def _candidates(logits: torch.Tensor, clean: torch.Tensor, candidates: int | None) -> torch.Tensor:
    """N×K classes per image: the clean label first, then the next-highest clean logits."""
    c = logits.shape[1]
    k = c if candidates is None else int(candidates)
    if not 2 <= k <= c:
        raise ValueError(f"candidates must be None (all {c} classes) or an integer in 2..{c}, got {candidates!r}")
    boosted = logits.scatter(1, clean[:, None], float("inf"))
    return boosted.topk(k, dim=1).indices


def deepfool(model: nn.Module, x: torch.Tensor, *, overshoot: float = 0.02, max_iter: int = 100,
             candidates: int | None = None, target=None, basis: torch.Tensor | None = None,
             box: tuple[float, float] | None = (0.0, 1.0), details: bool = False):
    """DeepFool adversaries ``x + r̂`` of the images ``x`` (N×C×H×W in [0, 1]); see the module docstring.

    Returns the adversarial images (``x``'s dtype and device), and with ``details=True`` also a
    :class:`DeepFoolResult`. Images the attack could not move (every candidate's gradient
    difference is zero, e.g. inside a confining subspace orthogonal to it) stop early and count
    as failures.
    """
    check_images(x)
    return _deepfool(model, x, overshoot=overshoot, max_iter=max_iter, candidates=candidates, target=target,
                     basis=basis, box=box, details=details)


def _deepfool(model: nn.Module, x: torch.Tensor, *, overshoot: float, max_iter: int, candidates: int | None,
              target, basis: torch.Tensor | None, box: tuple[float, float] | None, details: bool):
    """:func:`deepfool` without the [0, 1] check of ``x`` (UAP attacks ``x + v``, which may leave it)."""
    if overshoot < 0:
        raise ValueError(f"overshoot must be ≥ 0, got {overshoot}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be ≥ 0, got {max_iter}")
    if box is not None and not box[0] < box[1]:
        raise ValueError(f"box must be (lo, hi) with lo < hi, or None, got {box!r}")
    mdtype = features.model_dtype(model, x.dtype)
    x0 = x.detach().to(mdtype)
    n, dim = len(x0), x0[0].numel() if len(x0) else int(torch.tensor(x0.shape[1:]).prod())
    q = None if basis is None else check_basis(basis, dim).detach().to(device=x0.device, dtype=mdtype)
    clip = (lambda t: t) if box is None else (lambda t: t.clamp(box[0], box[1]))
    with torch.no_grad():
        logits0 = model(x0)
    num_classes = logits0.shape[1]
    clean = logits0.argmax(1)
    r = torch.zeros_like(x0)
    iters = torch.zeros(n, dtype=torch.long, device=x0.device)
    if target is None:
        cand = _candidates(logits0, clean, candidates)
        label, active = clean.clone(), torch.ones(n, dtype=torch.bool, device=x0.device)
    else:
        tgt = check_labels(target, n, num_classes=num_classes, name="target", broadcast=True, device=x0.device)
        label, active = clean.clone(), clean != tgt
    for _ in range(max_iter):
        idx = active.nonzero().flatten()
        if not len(idx):
            break
        with torch.enable_grad():
            xg = clip(x0[idx] + r[idx]).requires_grad_(True)
            out = model(xg)
            here = label[idx] if target is not None else clean[idx]
            others = tgt[idx][:, None] if target is not None else cand[idx, 1:]
            grads = []
            for j in range(others.shape[1]):
                cot = (F.one_hot(others[:, j], num_classes) - F.one_hot(here, num_classes)).to(out.dtype)
                (g,) = torch.autograd.grad(out, xg, grad_outputs=cot, retain_graph=j < others.shape[1] - 1)
                grads.append(g.flatten(1))
        w = torch.stack(grads, 1).detach()  # n×(K−1)×D
        floor = torch.zeros_like(w[..., 0])
        if q is not None:  # a projected gradient at round-off level of the full one is zero
            floor = w.norm(dim=2) * (64 * torch.finfo(w.dtype).eps)
            w = (w @ q) @ q.T
        out = out.detach()
        f = out.gather(1, others) - out.gather(1, here[:, None])  # n×(K−1)
        wnorm = w.norm(dim=2)
        wnorm = torch.where(wnorm > floor, wnorm, torch.zeros_like(wnorm))
        dist = torch.where(wnorm > 0, f.abs() / wnorm, torch.full_like(f, float("inf")))
        best = dist.argmin(1)
        rows = torch.arange(len(idx), device=x0.device)
        wb, fb, nb = w[rows, best], f[rows, best], wnorm[rows, best]
        stuck = ~(nb > 0)
        step = torch.where(stuck[:, None], torch.zeros_like(wb), (fb.abs() / nb.clamp_min(1e-300) ** 2)[:, None] * wb)
        r[idx] += step.view_as(r[idx])
        iters[idx] += 1
        with torch.no_grad():
            now = model(clip(x0[idx] + (1 + overshoot) * r[idx])).argmax(1)
        label[idx] = now
        done = (now != clean[idx]) if target is None else (now == tgt[idx])
        active[idx] = ~done & ~stuck
    x_adv = clip(x0 + (1 + overshoot) * r).to(x.dtype)
    if not details:
        return x_adv
    # ``label`` was computed on this very image (in the model's dtype) by the loop's last check.
    success = (label != clean) if target is None else (label == tgt)
    delta = x_adv - x
    return x_adv, DeepFoolResult(perturbation=delta, clean_label=clean, label=label, iterations=iters,
                                 success=success, norm=delta.flatten(1).double().norm(dim=1))
