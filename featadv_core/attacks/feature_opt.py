"""Feature adversaries by optimisation ("feature-opt", Sabour et al. 2016, §3, Eq. 1–2).

    I_α = argmin_I ||φ_k(I) − φ_k(I_g)||²₂   s.t.   ||I − I_s||_∞ ≤ δ,  I ∈ [0, 1]

where ``φ_k`` is the network's representation at layer ``k``; the paper solves it with
L-BFGS-B, the L∞ constraint written as a box around the source ``I_s``, starting at ``I_s``.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import features
from ..images import check_images
from .box import linf_box, project, quantize as quantize_box
from .solvers import solve

__all__ = ["feature_opt"]


def _check_pair(x_src: torch.Tensor, x_other: torch.Tensor, name: str = "x_guide") -> None:
    """Both batches of images valid (:func:`check_images`), same shape, same device."""
    check_images(x_src, "x_src")
    check_images(x_other, name)
    if x_src.shape != x_other.shape:
        raise ValueError(f"x_src and {name} must have the same shape (one {name.split('_')[-1]} per "
                         f"source), got {tuple(x_src.shape)} and {tuple(x_other.shape)}")
    if x_src.device != x_other.device:
        raise ValueError(f"x_src and {name} must be on the same device, got {x_src.device} and "
                         f"{x_other.device}")


def feature_opt(
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
    """Feature adversaries ``I_α`` of the sources ``x_src`` mimicking ``x_guide`` at ``layer``.

    Minimises, per pair, ``||φ_k(I) − φ_k(I_g)||²`` (squared Euclidean distance summed over the
    layer's units, Eq. 1) subject to ``||I − I_s||_∞ ≤ eps`` and ``I ∈ [0, 1]`` (Eq. 2), starting
    at ``I_s``. The guides' features are computed once, without gradients; the model is run
    only up to ``layer`` (:func:`featadv_core.features.forward_to`).

    Args:
        model: a classifier taking [0, 1] images (zoo model or any ``nn.Module``), in the mode
            you want it attacked in (eval); its mode and parameters are never changed.
        x_src, x_guide: N×C×H×W floating images in [0, 1], same shape and device.
        layer: layer name (an unknown name is a ``ValueError`` listing the valid ones).
        eps: the L∞ bound in pixel units, ``δ / 255`` (float or per-pair tensor, > 0).
        steps: iteration budget per pair (the paper's L-BFGS-B iterations).
        solver: ``"lbfgsb"`` (batched, default), ``"scipy"`` (the paper's per-pair L-BFGS-B),
            ``"pgd"`` (projected Adam); see :mod:`.solvers`. Extra keyword options (``ftol``,
            ``gtol``, ``max_ls``, ``step_size``) go to :func:`.solvers.solve`.
        history: L-BFGS memory (scipy's ``maxcor``).
        quantize: round the result to 8-bit values ``k/255`` inside the box.
        progress: show a progress bar.

    Returns:
        ``x_adv`` with ``x_src``'s shape, dtype and device, with ``|x_adv − x_src| ≤ eps`` and
        ``0 ≤ x_adv ≤ 1`` holding exactly (the result is projected last).
    """
    _check_pair(x_src, x_guide)
    lo, hi = linf_box(x_src, eps)
    mdtype = features.model_dtype(model, x_src.dtype)
    with torch.no_grad():
        target = features.forward_to(model, x_guide.to(mdtype), layer).detach().flatten(1)

    def value_and_grad(x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            # channels-last convolutions: ≈ 1.2–1.3× faster passes on CPU for colour images, same values up
            # to float round-off (benchmarks/solver_overhead.py); the gradient comes back in x's layout
            phi = features.forward_to(model, x.to(mdtype).contiguous(memory_format=torch.channels_last),
                                      layer).flatten(1)
            loss = (phi - target[idx]).square().sum(1)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad

    x_adv, _ = solve(solver, value_and_grad, x_src.detach(), lo, hi, steps=steps, history=history,
                     progress=progress, desc=f"feature-opt {layer}", **solver_options)
    x_adv = project(x_adv.to(x_src.dtype), lo, hi)
    if quantize:
        x_adv = quantize_box(x_adv, lo, hi)
    return x_adv
