"""Image figures: grids of images and difference images. Nothing here runs at import time."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["image_grid", "to_numpy_image", "difference_image"]



def to_numpy_image(x: torch.Tensor) -> np.ndarray:
    """C×H×W tensor in [0, 1] → H×W (grey) or H×W×3 float array for ``imshow``."""
    arr = x.detach().float().cpu().clamp(0, 1).numpy()
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def difference_image(x: torch.Tensor, reference: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """``x - reference`` mapped to [0, 1] with 0.5 = no change, amplified to fill the range.

    ``scale`` is the difference shown as full white/black; default: the largest absolute
    difference (so an L∞-bounded perturbation uses the whole grey range).
    """
    diff = (x - reference).detach().float()
    s = scale if scale is not None else float(diff.abs().max().clamp_min(1e-12))
    return (0.5 + 0.5 * diff / s).clamp(0, 1)


def image_grid(images: Sequence[Sequence[torch.Tensor | None]], *, row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, titles: Sequence[Sequence[str]] | None = None,
               cell_size: float = 1.4, cmap: str = "gray"):
    """A figure showing ``images[r][c]`` (C×H×W tensors in [0, 1]; ``None`` leaves a blank).

    Returns the matplotlib figure, so notebooks can ``glue`` it.
    """
    import matplotlib.pyplot as plt

    rows = len(images)
    cols = max(len(r) for r in images)
    fig, axes = plt.subplots(rows, cols, figsize=(cell_size * cols, cell_size * rows + 0.3), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            img = images[r][c] if c < len(images[r]) else None
            if img is not None:
                ax.imshow(to_numpy_image(img), cmap=cmap, vmin=0, vmax=1)
            if titles is not None and titles[r][c]:
                ax.set_title(titles[r][c], fontsize=8)
            if r == 0 and col_labels is not None and c < len(col_labels) and not (titles and titles[r][c]):
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig
