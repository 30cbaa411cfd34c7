"""Figures of feature adversaries: adversary/difference grids, activation patterns, ratio plots.

Chapter 1 (Sabour et al. 2016) draws three kinds of pictures, and these helpers draw them in
the book's style (call :func:`featadv_core.plotting.apply_style` first):

* :func:`adversary_grid` — Fig. 1: per row a source, a guide and several adversaries, each
  beside its amplified difference from the source, all differences on one grey scale so that a
  larger δ *looks* larger;
* :func:`activation_patterns` — Fig. 2 (lower panel): the units of a layer as a stem plot, one
  row per image (source, guide, adversary), rows of a column sharing their y-range;
* :func:`ratio_boxplot` — distributions of ``d(α, g) / d(s, g)`` side by side, with the
  paper's 0.5 line ("closer to the guide than to the source");
* :func:`perturbation_stats` — the numbers printed beside such figures: the largest and mean
  pixel change (out of 255) and the pixel correlation of the perturbation with ``g − s``, a
  quantitative proxy for "the guide is not perceptible in the adversary".

Every function returns the matplotlib figure (for ``myst_nb.glue``) and computes nothing but
what it draws. Images are C×H×W tensors in [0, 1] (grey or RGB); vectors are 1-d tensors or
arrays (a conv layer's features flattened). Nothing runs at import time.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .images import difference_image, to_numpy_image

__all__ = ["adversary_grid", "activation_patterns", "ratio_boxplot", "difference_scale", "perturbation_stats"]

DIFF_SCALES = ("figure", "row", "image")


def _blank(ax) -> None:
    ax.set_xticks([]), ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _show(ax, img: torch.Tensor) -> None:
    ax.imshow(to_numpy_image(img), cmap="gray", vmin=0, vmax=1)


def difference_scale(sources: Sequence[torch.Tensor], adversaries: Sequence[Sequence[torch.Tensor]],
                     mode: str | float = "figure") -> list[list[float]]:
    """The value shown as full black/white in each difference image of :func:`adversary_grid`.

    ``mode`` is ``"figure"`` (the largest ``|α − s|`` of the whole figure, so differences of
    all rows and columns are comparable), ``"row"`` (the largest of each row), ``"image"``
    (each difference stretched to the full range) or a positive number in pixel units (e.g.
    ``15 / 255``). Returns ``scale[r][c]``; an all-zero difference gets a tiny positive scale.
    """
    tiny = 1e-12
    peaks = [[float((a - s).abs().max()) for a in row] for s, row in zip(sources, adversaries)]
    if isinstance(mode, str):
        if mode not in DIFF_SCALES:
            raise ValueError(f"unknown difference scale {mode!r}; valid: {', '.join(DIFF_SCALES)} or a number")
        if mode == "image":
            return [[max(p, tiny) for p in row] for row in peaks]
        if mode == "row":
            return [[max(max(row, default=0.0), tiny)] * len(row) for row in peaks]
        top = max((p for row in peaks for p in row), default=0.0)
        return [[max(top, tiny)] * len(row) for row in peaks]
    value = float(mode)
    if not value > 0:
        raise ValueError(f"a numeric difference scale must be positive, got {mode}")
    return [[value] * len(row) for row in peaks]


def adversary_grid(sources: Sequence[torch.Tensor], guides: Sequence[torch.Tensor],
                   adversaries: Sequence[Sequence[torch.Tensor]], *,
                   row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
                   captions: Sequence[Sequence[str]] | None = None, diff_scale: str | float = "figure",
                   cell_size: float = 1.05):
    """Fig. 1 of Sabour et al.: source, guide, then each adversary beside its difference.

    Row ``r`` shows ``sources[r]``, ``guides[r]`` and, for every column ``c``,
    ``adversaries[r][c]`` followed by ``α − s`` (grey = no change; the scale is chosen by
    ``diff_scale``, see :func:`difference_scale`). ``col_labels[c]`` heads the adversary
    column ``c`` (e.g. ``"δ = 10"``), ``row_labels[r]`` names the row (e.g. ``"pair 1, FC7"``)
    and ``captions[r][c]`` is printed under adversary ``c`` of row ``r`` (e.g. the achieved
    distance ratio). Rows may have different numbers of adversaries. Returns the figure.
    """
    import matplotlib.pyplot as plt

    rows = len(sources)
    if rows == 0:
        raise ValueError("adversary_grid needs at least one row")
    if len(guides) != rows or len(adversaries) != rows:
        raise ValueError(f"one guide and one list of adversaries per source: got {rows} sources, "
                         f"{len(guides)} guides, {len(adversaries)} adversary rows")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels has {len(row_labels)} entries for {rows} rows")
    if captions is not None and (len(captions) != rows or any(len(c) != len(a) for c, a in zip(captions, adversaries))):
        raise ValueError("captions must have one string per adversary, shaped like adversaries")
    for s, row in zip(sources, adversaries):
        for a in row:
            if a.shape != s.shape:
                raise ValueError(f"an adversary of shape {tuple(a.shape)} does not match its source {tuple(s.shape)}")
    n_adv = max(len(row) for row in adversaries)
    scales = difference_scale(sources, adversaries, diff_scale)
    cols = 2 + 2 * n_adv
    # a little gap after the guide column and between adversary/difference pairs
    widths = [1, 1, 0.25] + [1, 1, 0.15] * n_adv
    fig = plt.figure(figsize=(cell_size * (cols + 0.25 + 0.15 * n_adv) + 0.9,
                              cell_size * rows * (1.22 if captions is not None else 1.0) + 0.5))
    grid = fig.add_gridspec(rows, len(widths), width_ratios=widths, wspace=0.05,
                            hspace=0.35 if captions is not None else 0.1)
    for r in range(rows):
        for c, (img, title) in enumerate(((sources[r], "source"), (guides[r], "guide"))):
            ax = fig.add_subplot(grid[r, c])
            _blank(ax)
            _show(ax, img)
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=8, rotation=0, ha="right", va="center")
        for c, adv in enumerate(adversaries[r]):
            base = 3 + 3 * c
            ax_adv = fig.add_subplot(grid[r, base])
            ax_diff = fig.add_subplot(grid[r, base + 1])
            for ax in (ax_adv, ax_diff):
                _blank(ax)
            _show(ax_adv, adv)
            _show(ax_diff, difference_image(adv, sources[r], scale=scales[r][c]))
            if r == 0 and col_labels is not None and c < len(col_labels):
                ax_adv.set_title(col_labels[c], fontsize=8, loc="left")
                ax_diff.set_title("α − s", fontsize=7, color="0.4")
            if captions is not None and captions[r][c]:
                ax_adv.set_xlabel(captions[r][c], fontsize=7, labelpad=2)
    return fig


def _as_vector(v) -> np.ndarray:
    arr = v.detach().float().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=float)
    return arr.reshape(-1)


def activation_patterns(columns: Sequence[tuple[str, Sequence[tuple[str, object]]]], *,
                        row_height: float = 0.8, col_width: float = 3.4, colors: Sequence[str] | None = None):
    """Fig. 2 (lower panel): activation patterns as stem plots, one row per image.

    ``columns`` is a sequence of ``(title, rows)`` with ``rows`` a sequence of
    ``(label, vector)`` — e.g. ``("FC7", [("source", f_s), ("guide", f_g), ("FC7 adv.", f_a)])``.
    Each vector (1-d, or any shape, flattened) is drawn as vertical lines from 0 at its unit
    indices; the rows of one column share their x- and y-range so that patterns compare at a
    glance. ``colors`` gives one colour per row (default: grey, blue, red, then matplotlib's
    cycle). Returns the figure.
    """
    import matplotlib.pyplot as plt

    if not columns:
        raise ValueError("activation_patterns needs at least one column")
    n_rows = max(len(rows) for _, rows in columns)
    if n_rows == 0:
        raise ValueError("every column needs at least one (label, vector) row")
    default = ["0.35", "tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange"]
    colors = list(colors) if colors is not None else default
    fig, axes = plt.subplots(n_rows, len(columns), figsize=(col_width * len(columns), row_height * n_rows + 0.6),
                             squeeze=False, sharex="col", sharey="col")
    for c, (title, rows) in enumerate(columns):
        for r in range(n_rows):
            ax = axes[r][c]
            if r >= len(rows):
                ax.set_visible(False)
                continue
            label, vector = rows[r]
            v = _as_vector(vector)
            ax.vlines(np.arange(v.size), 0, v, color=colors[r % len(colors)], linewidth=0.6)
            ax.axhline(0, color="0.7", linewidth=0.5)
            ax.set_xlim(-0.5, v.size - 0.5)
            ax.grid(False)
            ax.tick_params(labelsize=6, length=2)
            ax.text(0.99, 0.92, label, transform=ax.transAxes, ha="right", va="top", fontsize=7)
            if r == 0:
                ax.set_title(title, fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel("unit", fontsize=7)
    fig.tight_layout(h_pad=0.3)
    return fig


def ratio_boxplot(ratios: Mapping[str, object], *, ax=None, reference: float | None = 0.5,
                  ylabel: str = "d(α, g) / d(s, g)", title: str | None = None, log: bool = False):
    """Distributions of distance ratios side by side (one box per entry of ``ratios``).

    ``ratios`` maps a label (e.g. ``"CIFAR-10, FC7, δ=10"``) to a 1-d tensor/array of per-pair
    ratios; each box also shows the individual pairs as jittered dots and its median as a
    number. ``reference`` draws a dashed line (0.5: closer to the guide than to the source;
    ``None`` draws none). Draws into ``ax`` when given, else a new figure; returns the figure.
    """
    import matplotlib.pyplot as plt

    if not ratios:
        raise ValueError("ratio_boxplot needs at least one group of ratios")
    labels = list(ratios)
    values = [_as_vector(ratios[k]) for k in labels]
    if any(v.size == 0 for v in values):
        raise ValueError("every group of ratios needs at least one value")
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(3.0, 1.1 * len(labels) + 1.2), 3.0))
    else:
        fig = ax.figure
    ax.boxplot(values, showfliers=False, widths=0.5, medianprops={"color": "tab:red"})
    ax.set_xticks(range(1, len(labels) + 1), labels)
    rng = np.random.default_rng(0)  # the jitter is cosmetic; fixed so figures are reproducible
    for i, v in enumerate(values, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, v.size), v, s=6, color="0.3", alpha=0.5, zorder=3)
        ax.annotate(f"{np.median(v):.2f}", (i + 0.28, np.median(v)), fontsize=7, color="tab:red", va="center")
    if reference is not None:
        ax.axhline(reference, color="0.5", linestyle="--", linewidth=0.8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.tick_params(axis="x", labelsize=7)
    return fig


def perturbation_stats(x_adv: torch.Tensor, x_src: torch.Tensor, x_guide: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pair numbers describing the perturbations ``α − s`` of a batch → dict of ``(N,)`` tensors.

    * ``"linf"``: ``max |α − s| · 255`` (to compare with the bound δ, out of 255);
    * ``"mean_abs"``: ``mean |α − s| · 255`` (how noticeable, on average, the change is);
    * ``"corr_guide"``: the Pearson correlation over pixels between ``α − s`` and ``g − s`` — a
      *proxy* for "the guide is perceptible in the adversary" (a pasted-in guide correlates
      strongly, structure-free noise not at all); ``0`` when either difference is constant.

    ``x_adv``, ``x_src``, ``x_guide`` are N×C×H×W images in [0, 1] of the same shape.
    """
    if not (x_adv.shape == x_src.shape == x_guide.shape) or x_adv.ndim < 2:
        raise ValueError(f"x_adv, x_src and x_guide must be batches of the same shape, got "
                         f"{tuple(x_adv.shape)}, {tuple(x_src.shape)}, {tuple(x_guide.shape)}")
    pert = (x_adv - x_src).detach().flatten(1).double()
    to_guide = (x_guide - x_src).detach().flatten(1).double()
    a = pert - pert.mean(1, keepdim=True)
    b = to_guide - to_guide.mean(1, keepdim=True)
    denom = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    corr = torch.where(denom > 0, (a * b).sum(1) / denom.clamp_min(1e-300), torch.zeros_like(denom))
    dtype = x_adv.dtype if x_adv.is_floating_point() else torch.get_default_dtype()
    return {"linf": (pert.abs().amax(1) * 255).to(dtype), "mean_abs": (pert.abs().mean(1) * 255).to(dtype),
            "corr_guide": corr.to(dtype)}
