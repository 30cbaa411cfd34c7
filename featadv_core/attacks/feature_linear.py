"""Feature adversaries of the linearised network ("feature-linear", Sabour et al. 2016, §5).

The linearity hypothesis (Goodfellow et al. 2015) predicts ``φ(I) ≈ φ(I_s) + J_s (I − I_s)``,
``J_s`` the Jacobian of the layer's representation at the source. The paper tests it by solving

    min_I ||φ(I_s) + J_s (I − I_s) − φ(I_g)||²₂   s.t.   ||I − I_s||_∞ ≤ δ,  I ∈ [0, 1]

(the constraint of Eq. 2) and measuring how close the *true* representation of the result gets
to the guide's (Fig. 5: "feature-linear" gets no closer than ≈80 %). Matrix-free: ``J_s d`` is a
forward-mode product (:func:`torch.func.jvp`) and ``J_sᵀ r`` a reverse-mode one
(:func:`torch.func.vjp`), both at the fixed ``I_s``; ``J_s`` is never formed.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import jvp, vjp

from .. import features
from .box import linf_box, project, quantize as quantize_box
from .feature_opt import _check_pair
from .solvers import solve

__all__ = ["feature_linear", "linearized_features"]


def linearized_features(
    model: nn.Module, x_src: torch.Tensor, *, layer: str
) -> tuple[torch.Tensor, Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """``φ(I_s)`` and matrix-free products with the per-image Jacobians ``J_s`` at ``x_src``.

    Returns ``(phi_s, jvp_fn, vjp_fn)``: ``phi_s`` is N×D (the layer's output, flattened),
    ``jvp_fn(d, idx=None)`` gives ``J_s d`` (N×D) for image-shaped ``d`` and ``vjp_fn(r,
    idx=None)`` gives ``J_sᵀ r`` (image-shaped) for N×D ``r``; ``idx`` restricts both to some of
    the images (then ``d``/``r`` hold only those). Each image's Jacobian is its own block, as
    the model treats the images of a batch independently (eval mode).
    """
    mdtype = features.model_dtype(model, x_src.dtype)
    x_src = x_src.detach()

    def phi(z: torch.Tensor) -> torch.Tensor:
        return features.forward_to(model, z.to(mdtype), layer).flatten(1)

    with torch.no_grad():
        phi_s = phi(x_src)

    def jvp_fn(d: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        xs = x_src if idx is None else x_src[idx]
        with torch.enable_grad():
            _, out = jvp(phi, (xs,), (d.to(xs.dtype),))
        return out.detach()

    def vjp_fn(r: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        xs = x_src if idx is None else x_src[idx]
        with torch.enable_grad():
            out, pullback = vjp(phi, xs)
            (g,) = pullback(r.to(out.dtype))
        return g.detach()

    return phi_s, jvp_fn, vjp_fn


def feature_linear(
    model: nn.Module,
    x_src: torch.Tensor,
    x_guide: torch.Tensor,
    *,
    layer: str,
    eps: float | torch.Tensor,
    steps: int = 500,
    solver: str = "lbfgsb",
    history: int = 10,
    quantize: bool = False,
    progress: bool = True,
    **solver_options,
) -> torch.Tensor:
    """Feature-linear adversaries: :func:`.feature_opt`'s problem on the network linearised at ``x_src``.

    Minimises, per pair, ``||φ(I_s) + J_s (I − I_s) − φ(I_g)||²`` (gradient
    ``2 J_sᵀ(φ(I_s) + J_s (I − I_s) − φ(I_g))``) subject to ``||I − I_s||_∞ ≤ eps`` and
    ``I ∈ [0, 1]``, starting at ``I_s``. Arguments, validation and guarantees as in
    :func:`.feature_opt` (same shape/dtype/device, bound exact, model untouched).
    """
    _check_pair(x_src, x_guide)
    lo, hi = linf_box(x_src, eps)
    mdtype = features.model_dtype(model, x_src.dtype)
    with torch.no_grad():
        target = features.forward_to(model, x_guide.to(mdtype), layer).detach().flatten(1)
    phi_s, jvp_fn, vjp_fn = linearized_features(model, x_src, layer=layer)
    base = phi_s - target                                       # φ(I_s) − φ(I_g)
    xs = x_src.detach()

    def value_and_grad(x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        residual = base[idx] + jvp_fn(x - xs[idx], idx)
        loss = residual.square().sum(1)
        return loss, vjp_fn(2 * residual, idx).to(x.dtype)

    x_adv, _ = solve(solver, value_and_grad, xs, lo, hi, steps=steps, history=history,
                     progress=progress, desc=f"feature-linear {layer}", **solver_options)
    x_adv = project(x_adv.to(x_src.dtype), lo, hi)
    if quantize:
        x_adv = quantize_box(x_adv, lo, hi)
    return x_adv
