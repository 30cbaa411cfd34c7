"""Class labels: the one batched predictor and the one validator that every layer uses.

Attacks, analyses, trainers and cached runs all need "the network's label of these images" and
"these are valid class labels for N images"; each had grown its own copy (some without the cast
to the model's dtype, so a half-precision model crashed). They live here, below the attacks.
"""
from __future__ import annotations

import torch
from torch import nn

from .features import model_dtype

__all__ = ["predict_labels", "check_labels"]


@torch.no_grad()
def predict_labels(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """argmax of ``model``'s logits on ``x``, in chunks of ``batch_size``, computed in the model's dtype.

    Each chunk is moved to ``device`` (default: ``x``'s own) for the forward pass; the labels
    come back on ``x``'s device, so a CPU-held dataset can be labelled by a GPU model chunk by chunk.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not len(x):
        return torch.zeros(0, dtype=torch.long, device=x.device)
    mdtype = model_dtype(model, x.dtype)
    run_on = x.device if device is None else torch.device(device)
    return torch.cat([model(x[i:i + batch_size].to(device=run_on, dtype=mdtype)).argmax(1).to(x.device)
                      for i in range(0, len(x), batch_size)])


def check_labels(labels, n: int, *, num_classes: int | None = None, name: str = "labels",
                 broadcast: bool = False, device: torch.device | str | None = None) -> torch.Tensor:
    """``labels`` as a length-``n`` long tensor on ``device``, or a ``ValueError`` that says what is wrong.

    ``labels`` are integer class indices, one per image (``broadcast=True`` also accepts one
    class for all ``n``), non-negative and, when ``num_classes`` is given, below it.
    """
    t = torch.as_tensor(labels, device=device)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices, got dtype {t.dtype}")
    if broadcast and t.numel() == 1:
        t = t.reshape(()).expand(n)
    if t.dim() != 1 or len(t) != n:
        raise ValueError(f"{name} must hold one class per image ({n}){' or one for all' if broadcast else ''}, "
                         f"got shape {tuple(t.shape)}")
    if n:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            valid = f"0..{num_classes - 1}" if num_classes is not None else "non-negative"
            raise ValueError(f"{name} must be classes in {valid}, got values {lo}..{hi}")
    return t.long()
