"""Saliency directions (Simonyan et al. 2013), as vectors in image space (Jetley et al. 2018, Fig. 3).

Simonyan et al.'s image-specific class saliency is the input gradient of a class score,
``w = ∂F_ĉ/∂x`` at the image; their *displayed* map (max over channels of ``|w|``) is not a
vector of image space and cannot be projected onto a subspace, so Jetley et al.'s Fig. 3 can
only have used the signed gradient itself. We take the logit of the *predicted* class.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.directions import backpropagate

__all__ = ["saliency"]


def saliency(model: nn.Module, x: torch.Tensor, *, classes: torch.Tensor | None = None) -> torch.Tensor:
    """``∂F_c/∂x`` for every image (``c`` its predicted class, or ``classes``): N×C×H×W, signed."""
    def onehot(logits: torch.Tensor) -> torch.Tensor:
        c = logits.argmax(1) if classes is None else torch.as_tensor(classes, device=logits.device).long()
        if c.shape != (len(logits),):
            raise ValueError(f"classes must hold one class per image ({len(logits)}), got shape {tuple(c.shape)}")
        return F.one_hot(c, logits.shape[1]).to(logits.dtype)

    return backpropagate(model, x, onehot, layer=None)
