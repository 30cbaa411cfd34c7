"""Distribution plots in the style of Sabour et al. 2016 (Fig. 3, Fig. 4): overlaid histograms.

The paper's quantitative figures are histograms aggregated over source–guide pairs — of a
distance ratio (Fig. 3a), of adversarial distances beside class-average distances
(Fig. 3b–c), of ``ΔL`` and ``Ω`` for α against close and far natural neighbours (Fig. 4) —
plus one scatter of ranks (Fig. 4 bis a). These helpers draw them on given axes with shared
bin edges, so the overlaid distributions are comparable bar for bar. Nothing here runs at
import time; matplotlib is imported lazily. Call :func:`featadv_core.plotting.apply_style`
first for the book's look.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["COLORS", "as_array", "shared_bins", "overlaid_histograms", "mark_values", "histogram_panels",
           "rank_scatter"]

#: Default colours by role: adversaries blue, close neighbours green, far ones red, reference
#: (class-average) distributions grey; other labels cycle through matplotlib's palette.
COLORS = {"alpha": "tab:blue", "close": "tab:green", "far": "tab:red", "reference": "0.45"}


def as_array(values) -> np.ndarray:
    """Any tensor/array/sequence of numbers as a flat float64 NumPy array (tensors detached, on CPU)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).ravel()


def shared_bins(samples: Sequence, bins: int = 30, range: tuple[float, float] | None = None,
                clip_quantile: float | None = None) -> np.ndarray:
    """Bin edges common to several samples (their finite values pooled).

    ``range`` fixes the edges' extent; otherwise it is the pooled finite range, or with
    ``clip_quantile=q`` the ``[q, 1 − q]`` pooled quantiles (values outside are then left out of
    the histograms: useful for the heavy left tail of ``ΔL``). A sample with a single distinct
    value gets a unit-wide range around it.
    """
    if isinstance(bins, bool) or int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    pooled = np.concatenate([as_array(s) for s in samples]) if len(samples) else np.empty(0)
    pooled = pooled[np.isfinite(pooled)]
    if range is None:
        if pooled.size == 0:
            range = (0.0, 1.0)
        elif clip_quantile is not None:
            if not 0 <= clip_quantile < 0.5:
                raise ValueError(f"clip_quantile must be in [0, 0.5), got {clip_quantile}")
            range = tuple(np.quantile(pooled, [clip_quantile, 1 - clip_quantile]))
        else:
            range = (float(pooled.min()), float(pooled.max()))
    lo, hi = float(range[0]), float(range[1])
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, int(bins) + 1)


def _color(label: str, i: int, colors: Mapping[str, str] | None) -> str | None:
    if colors and label in colors:
        return colors[label]
    return None if colors is None else f"C{i}"


def overlaid_histograms(ax, samples: Mapping[str, object], *, bins: int | np.ndarray = 30,
                        range: tuple[float, float] | None = None, clip_quantile: float | None = None,
                        density: bool = True, colors: Mapping[str, str] | None = None, alpha: float = 0.45,
                        xlabel: str | None = None, ylabel: str | None = None, title: str | None = None,
                        legend: bool = True):
    """Overlaid filled histograms of ``samples`` (``{label: values}``) with shared bin edges.

    Each sample is drawn as a translucent filled histogram with a solid outline, like the
    paper's Fig. 3–4 panels; ``density=True`` normalises each one (samples of different sizes,
    e.g. one α per guide against five ``N_c`` points per guide, stay comparable). Non-finite
    values and values outside the edges are not drawn (the legend counts them as
    "off-scale"; densities are normalised by the full sample size, so their mass is visibly
    missing rather than redistributed). ``bins`` is a count (edges from :func:`shared_bins` with ``range`` /
    ``clip_quantile``) or explicit edges. ``colors`` maps labels to colours (default: the
    matplotlib cycle). Returns the bin edges.
    """
    arrays = {label: as_array(v) for label, v in samples.items()}
    edges = (np.asarray(bins, dtype=float) if np.ndim(bins) else
             shared_bins(list(arrays.values()), int(bins), range, clip_quantile))
    for i, (label, values) in enumerate(arrays.items()):
        total = values.size
        values = values[np.isfinite(values)]
        values = values[(values >= edges[0]) & (values <= edges[-1])]
        off = total - values.size
        color = _color(label, i, colors) or f"C{i}"
        weights = None
        if density and values.size:   # normalised by the total: off-scale mass stays missing
            weights = np.full(values.size, 1.0 / (total * np.diff(edges).mean()))
        ax.hist(values, bins=edges, weights=weights, histtype="stepfilled", alpha=alpha, color=color,
                label=f"{label} (n={total}" + (f", {off} off-scale)" if off else ")"))
        ax.hist(values, bins=edges, weights=weights, histtype="step", color=color, linewidth=1.0)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel if ylabel is not None else ("density" if density else "count"))
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(loc="best")
    return edges


def mark_values(ax, values: Mapping[str, float], *, colors: Mapping[str, str] | None = None,
                linestyle: str = "--") -> None:
    """Vertical lines at ``values`` (``{label: x}``), labelled in the legend (thresholds, medians)."""
    for i, (label, x) in enumerate(values.items()):
        color = _color(label, i, colors) or "k"
        ax.axvline(float(x), color=color, linestyle=linestyle, linewidth=1.2, label=label)
    ax.legend(loc="best")


def histogram_panels(panels: Sequence[Mapping], *, ncols: int = 3, panel_size: tuple[float, float] = (3.3, 2.5),
                     suptitle: str | None = None):
    """A figure of :func:`overlaid_histograms` panels, e.g. the 2×3 grid of the paper's Fig. 4.

    Each panel is a mapping with ``samples`` (required) and any of ``title``, ``xlabel``,
    ``bins``, ``range``, ``clip_quantile``, ``density``, ``colors``, ``lines`` (passed to
    :func:`mark_values`). Panels fill the grid row by row; unused cells are hidden. Returns the
    figure.
    """
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("panels is empty")
    ncols = max(1, min(int(ncols), len(panels)))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             squeeze=False)
    keys = ("bins", "range", "clip_quantile", "density", "colors", "xlabel", "title")
    for ax, panel in zip(axes.flat, panels):
        if "samples" not in panel:
            raise ValueError("every panel needs 'samples'")
        overlaid_histograms(ax, panel["samples"], **{k: panel[k] for k in keys if k in panel})
        if panel.get("lines"):
            mark_values(ax, panel["lines"], colors=panel.get("line_colors"))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def rank_scatter(ax, groups: Mapping[str, tuple[object, object]], *, xlabel: str = "rank of n₁(α) (percentile)",
                 ylabel: str = "rank of α (percentile)", colors: Mapping[str, str] | None = None,
                 diagonal: bool = True, limits: tuple[float, float] = (0.0, 100.0)):
    """Scatter ``y`` against ``x`` for each group ``{label: (x, y)}`` (Fig. 4 bis a), with ``y = x``.

    The paper plots the rank of each adversary against the rank of its nearest neighbour
    ``n₁(α)`` for feature-opt and label-opt adversaries; points on the diagonal are adversaries
    exactly as typical as their nearest natural neighbour.
    """
    for i, (label, (x, y)) in enumerate(groups.items()):
        x, y = as_array(x), as_array(y)
        if x.shape != y.shape:
            raise ValueError(f"group {label!r}: x and y differ in length ({x.size} vs {y.size})")
        color = _color(label, i, colors) or f"C{i}"
        ax.scatter(x, y, s=14, alpha=0.7, color=color, edgecolors="none", label=f"{label} (n={x.size})")
    if diagonal:
        ax.plot(limits, limits, color="0.5", linewidth=0.8, linestyle=":")
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best")
    return ax
