"""Perturbation directions of the line-search attacks: LOTS, magnify/reduce, FGS, FGV, hot/cold.

Every direction is one *backpropagation* of a feature-space vector to the image (Rozsa et
al. 2017, Eq. 3's operator ``B_l``): set the gradient of layer ``l``'s output to ``v`` and
backpropagate, ``B_l(v) = J_l(x)ᵀ v``. One vector–Jacobian product serves a whole batch: to
attack one origin towards nine targets, replicate the origin nine times and give each row its
own ``v`` (never a Python loop over targets). The directions are *raw* (not normalised); the
line search (:mod:`.line_search`) scales them to unit L∞.

* LOTS towards a target (Eq. 3): ``η = J_l(x_o)ᵀ (f_l(x_t) − f_l(x_o))`` — the steepest-descent
  direction of ``½‖f_l(x) − f_l(x_t)‖²`` at ``x_o`` (add it to approach the target).
* LOTS on the origin itself (Eq. 4): ``η_± = ±J_l(x_o)ᵀ f_l(x_o)``, magnifying (+) or reducing
  (−) the layer's representation.
* FGS / FGV (Goodfellow et al. 2015; Rozsa et al. 2016): the sign / the value of the gradient of
  the cross-entropy of the label ``y`` — they *ascend* the loss.
* Hot/cold (Rozsa et al. 2016, §4.2): ``B_logits(w)`` with ``w_t = |h_t(x_o)|`` for the hot class
  ``t``, ``w_y = −h_y(x_o)`` for the cold (origin) class and 0 elsewhere, ``h`` the logits.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import features
from ..images import check_images
from ..labels import check_labels

__all__ = ["backpropagate", "lots_direction", "lots_self_direction", "gradient_direction", "hot_cold_direction"]


def backpropagate(model: nn.Module, x: torch.Tensor, vector: Callable[[torch.Tensor], torch.Tensor], *,
                  layer: str | None) -> torch.Tensor:
    """``B_l(v) = J_l(x)ᵀ v`` for every image of ``x``: one forward to ``layer`` and one backward.

    ``vector(f)`` receives the layer's output ``f`` (detached, N×...) and returns ``v`` of the
    same shape; ``layer=None`` means the model's output (the logits). Returns the image-shaped
    direction in ``x``'s dtype. The model's mode and parameters are untouched.
    """
    check_images(x)
    mdtype = features.model_dtype(model, x.dtype)
    with torch.enable_grad():
        xg = x.detach().to(mdtype).requires_grad_(True)
        f = model(xg) if layer is None else features.forward_to(model, xg, layer)
        v = vector(f.detach())
        if v.shape != f.shape:
            raise ValueError(f"the feature-space vector must have the layer's shape {tuple(f.shape)}, "
                             f"got {tuple(v.shape)}")
        (g,) = torch.autograd.grad(f, xg, grad_outputs=v.to(f.dtype))
    return g.detach().to(x.dtype)


def lots_direction(model: nn.Module, x: torch.Tensor, target_features: torch.Tensor, *, layer: str) -> torch.Tensor:
    """LOTS (Eq. 3): ``J_l(x)ᵀ (f_l(x_t) − f_l(x))``, one target representation per image.

    ``target_features`` is N×(the layer's shape), e.g. ``features.forward_to(model, x_t, layer)``,
    held constant (the paper's "stolen" template works as well as the target image).
    """
    return backpropagate(model, x, lambda f: target_features.to(f) - f, layer=layer)


def lots_self_direction(model: nn.Module, x: torch.Tensor, *, layer: str, sign: int) -> torch.Tensor:
    """LOTS on the origin itself (Eq. 4): ``sign · J_l(x)ᵀ f_l(x)``; ``sign=+1`` magnifies, ``-1`` reduces."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 (magnify) or -1 (reduce), got {sign!r}")
    return backpropagate(model, x, lambda f: sign * f, layer=layer)


def gradient_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, kind: str) -> torch.Tensor:
    """``sign(∇_x J(x, y))`` (FGS, ``kind="sign"``) or ``∇_x J(x, y)`` (FGV, ``kind="value"``).

    ``J`` is the softmax cross-entropy of label ``y`` (the paper uses the true = predicted
    label). Its input gradient is ``J_logitsᵀ (p − onehot(y))``, computed in the model's dtype:
    where float32 saturates (``p_y`` rounds to 1 and every other ``p_j`` underflows to 0) it is
    exactly zero, and the line search reports a failure (see chapter 2 on FGS = FGV).
    """
    if kind not in ("sign", "value"):
        raise ValueError(f"kind must be 'sign' (FGS) or 'value' (FGV), got {kind!r}")

    def vector(logits: torch.Tensor) -> torch.Tensor:
        labels = check_labels(y, len(logits), num_classes=logits.shape[1], name="y", device=logits.device)
        return torch.softmax(logits, 1) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)

    g = backpropagate(model, x, vector, layer=None)
    return g.sign() if kind == "sign" else g


def hot_cold_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, hot: torch.Tensor) -> torch.Tensor:
    """Hot/cold (Rozsa et al. 2016, §4.2): ``B_logits(w)``, ``w_hot = |h_hot|``, ``w_y = −h_y``, else 0.

    ``y`` is the origin's (cold) class, ``hot`` the class to push towards, one per image;
    ``hot == y`` raises. The image's own logits set the proportions, as the paper recommends.
    """
    def vector(logits: torch.Tensor) -> torch.Tensor:
        cold = check_labels(y, len(logits), num_classes=logits.shape[1], name="y", device=logits.device)
        warm = check_labels(hot, len(logits), num_classes=logits.shape[1], name="hot", device=logits.device)
        if bool((cold == warm).any()):
            raise ValueError("every hot class must differ from its image's own class y")
        rows = torch.arange(len(logits), device=logits.device)
        w = torch.zeros_like(logits)
        w[rows, warm] = logits[rows, warm].abs()
        w[rows, cold] = -logits[rows, cold]
        return w

    return backpropagate(model, x, vector, layer=None)
