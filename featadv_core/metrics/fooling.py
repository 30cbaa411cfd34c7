"""The fooling rate of a perturbation (Moosavi-Dezfooli et al. 2017; Jetley et al. 2018, footnote 7)."""
from __future__ import annotations

import torch

__all__ = ["fooling_rate"]


def fooling_rate(clean_labels: torch.Tensor, perturbed_labels: torch.Tensor) -> float:
    """The fraction of images whose *predicted* label changes: ``mean(k̂(x + v) ≠ k̂(x))``.

    Both arguments are predictions of the same network (for a defended network ``net∘R``, its
    predictions on the clean and on the perturbed images), counted over **all** images,
    misclassified ones included: it is not an error rate against ground truth.
    """
    a, b = torch.as_tensor(clean_labels).flatten(), torch.as_tensor(perturbed_labels).flatten()
    if a.shape != b.shape:
        raise ValueError(f"need one clean and one perturbed label per image, got {a.numel()} and {b.numel()}")
    if not a.numel():
        raise ValueError("no labels: the fooling rate of an empty set is undefined")
    return (a != b.to(a.device)).double().mean().item()
