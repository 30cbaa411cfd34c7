"""Chapter 5's figures: the same sources under every method, and every measure as a small multiple."""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .images import difference_image, image_grid

__all__ = ["examples_by_method", "measure_panels"]


def examples_by_method(x_src: torch.Tensor, x_guide: torch.Tensor, adversaries: Mapping[str, torch.Tensor],
                       succeeded: Mapping[str, torch.Tensor], pairs: Sequence[int], *, labels: Mapping[str, str],
                       amplify: float = 4.0, cell_size: float = 1.1):
    """For each pair of ``pairs``: a row with the source, the guide and every method's adversary, and under
    it each adversary's difference to the source, amplified ``amplify`` times (0.5 grey: no change; the same
    scale everywhere, so that sizes compare). A method that failed on the pair is marked "✗" in its title
    (titles wrapped to two or three short lines, so that ten columns fit a page)."""
    rows, titles, row_labels = [], [], []
    scale = 0.5 / amplify  # a difference of 0.5/amplify fills the grey range
    for i in pairs:
        rows.append([x_src[i], x_guide[i], *(adv[i] for adv in adversaries.values())])
        titles.append(["source", "guide", *(textwrap.fill(f"{labels[m]}{'' if bool(succeeded[m][i]) else ' ✗'}", 16)
                                            for m in adversaries)])
        rows.append([None, None, *(difference_image(adv[i], x_src[i], scale=scale) for adv in adversaries.values())])
        titles.append([""] * (2 + len(adversaries)))
        row_labels += [f"pair {i}", f"×{amplify:g}"]
    return image_grid(rows, titles=titles, row_labels=row_labels, cell_size=cell_size)


def measure_panels(summary: pd.DataFrame, measures: Mapping[str, str], *, labels: Mapping[str, str],
                   references: Mapping[str, float] | None = None, ncols: int = 4, panel_size=(2.6, 2.2)):
    """One panel per measure (``measures``: column of :func:`featadv_core.comparison.summarise` → axis title):
    each method's estimate as a dot with its 95 % interval as a bar, methods on the y axis in ``summary``'s
    order; ``references`` draws a dashed line (a budget, a random baseline) in a measure's panel."""
    import matplotlib.pyplot as plt

    n = len(measures)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False,
                             sharey=True)
    names = list(summary.index)
    ypos = np.arange(len(names))[::-1]
    for ax, (col, title) in zip(axes.flat, measures.items()):
        v, lo, hi = (summary[(col, k)].to_numpy(dtype=float) for k in ("value", "low", "high"))
        ok = np.isfinite(v)
        err = np.vstack([np.where(np.isfinite(lo), v - lo, 0), np.where(np.isfinite(hi), hi - v, 0)])
        ax.errorbar(v[ok], ypos[ok], xerr=err[:, ok], fmt="o", ms=4, capsize=2, lw=1)
        if references and col in references:
            ax.axvline(references[col], color="k", ls="--", lw=0.8)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_yticks(ypos, [labels.get(m, m) for m in names])
    fig.tight_layout()
    return fig
