"""Validation of image batches, shared by every layer that takes images (attacks, metrics, defences).

The core's convention (DESIGN.md §3): images are floating N×C×H×W tensors in [0, 1], and the
normalisation lives inside the model. Kept apart from the attacks so that metrics and defences
can check their inputs without importing an attack module.
"""
from __future__ import annotations

import torch

__all__ = ["check_images"]


def check_images(x: torch.Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a floating N×C×H×W tensor with values in [0, 1].

    NaNs count as outside [0, 1]. The message names ``name`` and says what was wrong.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of images, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor with values in [0, 1], got dtype {x.dtype} "
                         "(convert uint8 images with x.float() / 255)")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D N×C×H×W batch of images, got shape {tuple(x.shape)} "
                         "(add a batch axis with x.unsqueeze(0) for a single image)")
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        bad = x[~((x >= 0) & (x <= 1))]
        raise ValueError(f"{name} must have values in [0, 1] (pixel units, normalisation lives inside "
                         f"the model); found values such as {bad.flatten()[0].item():g} "
                         f"(min {x.min().item():g}, max {x.max().item():g})")
