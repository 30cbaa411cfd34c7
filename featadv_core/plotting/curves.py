"""Line and bar plots of per-pair statistics against a parameter (Sabour et al. 2016, Fig. 5, §5).

* :func:`paper_layer_label` — the paper's short layer names (``conv2`` → ``C2``);
* :func:`curve_summary` — quartiles (median and band) of per-pair values, per curve and x;
* :func:`plot_curves` — Fig. 5-style plot: one median line per curve, quartile band shaded;
* :func:`layer_bars` — grouped bars with error bars, per layer and method.

Everything takes plain mappings of 1-d tensors or arrays; NaN values are ignored by the
summaries and counted out of ``n``. Nothing runs at import time; matplotlib and pandas are
imported inside the functions.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..analysis.statistics import _finite

__all__ = ["paper_layer_label", "curve_summary", "plot_curves", "layer_bars"]

QUARTILES = (0.25, 0.5, 0.75)

_PAPER_PREFIX = {"conv": "C", "pool": "P", "norm": "Norm", "fc": "F"}


def paper_layer_label(layer: str) -> str:
    """Sabour et al.'s short name of a CaffeNet layer: ``conv2`` → ``C2``, ``pool5`` → ``P5``,
    ``fc7`` → ``F7``, ``norm2`` → ``Norm2``; any other name is returned unchanged."""
    for prefix, short in _PAPER_PREFIX.items():
        rest = layer[len(prefix):]
        if layer.startswith(prefix) and rest.isdigit():
            return short + rest
    return layer


def curve_summary(curves: Mapping[str, Mapping[float, object]], *, q: Sequence[float] = QUARTILES):
    """Quantiles of per-pair values for every curve and x → a tidy pandas DataFrame.

    ``curves[label][x]`` holds the per-pair values of curve ``label`` at ``x`` (e.g. the distance
    ratios of the feature-opt adversaries at ``conv2`` for ``δ = x``). Returns one row per
    (curve, x), in the mappings' order, with columns ``curve``, ``x``, one column per quantile
    named ``q25``, ``q50`` … (``q50`` is the median), ``mean`` and ``n`` (the number of finite
    values; NaN/inf values are left out). A cell without finite values gets NaN statistics.
    """
    import pandas as pd

    qs = [float(v) for v in q]
    if not qs or any(not 0.0 <= v <= 1.0 for v in qs):
        raise ValueError(f"quantiles must lie in [0, 1], got {list(q)}")
    rows = []
    for label, by_x in curves.items():
        for x, values in by_x.items():
            arr = _finite(values)
            row = {"curve": label, "x": x}
            for v in qs:
                row[f"q{round(100 * v):02d}"] = float(np.quantile(arr, v)) if arr.size else math.nan
            row["mean"] = float(arr.mean()) if arr.size else math.nan
            row["n"] = int(arr.size)
            rows.append(row)
    return pd.DataFrame(rows, columns=["curve", "x", *[f"q{round(100 * v):02d}" for v in qs], "mean", "n"])


def plot_curves(summary, *, ax=None, styles: Mapping[str, Mapping] | None = None, band: bool = True,
                lower: str = "q25", center: str = "q50", upper: str = "q75",
                hlines: Sequence[float] = (), xlabel: str = "δ", ylabel: str = "",
                title: str | None = None, legend: bool | str = True,
                ylim: tuple[float, float] | None = None, figsize: tuple[float, float] | None = None):
    """Fig. 5-style plot of a :func:`curve_summary`: per curve, ``center`` against x, band shaded.

    ``styles[label]`` are keyword arguments for that curve's ``ax.plot`` (``color``,
    ``linestyle``, ``marker``, ``label`` …; defaults: the colour cycle, solid line, round
    markers, the curve's name as label). With ``band`` the area between the ``lower`` and
    ``upper`` columns is filled in the curve's colour. ``hlines`` draws thin dashed reference
    lines (e.g. 0.5 and 0.8). ``legend``: ``True`` (matplotlib's best place), ``False``, a
    matplotlib ``loc`` string, or ``"outside"`` (right of the axes). Returns the figure (a new
    one when ``ax`` is None, of size ``figsize``).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize or ((6.0, 3.4) if legend == "outside" else (4.6, 3.4)))
    else:
        fig = ax.figure
    styles = dict(styles or {})
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, (label, group) in enumerate(summary.groupby("curve", sort=False)):
        group = group.sort_values("x")
        style = {"color": cycle[i % len(cycle)], "marker": "o", "markersize": 4, "linewidth": 1.5,
                 "label": label}
        style.update(styles.get(label, {}))
        ax.plot(group["x"], group[center], **style)
        if band and lower in group and upper in group:
            ax.fill_between(group["x"], group[lower], group[upper], color=style["color"], alpha=0.15,
                            linewidth=0)
    for y in hlines:
        ax.axhline(y, color="0.5", linestyle=":", linewidth=0.8, zorder=0)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    xs = sorted(summary["x"].unique())
    if len(xs) <= 12:
        ax.set_xticks(xs)
    if legend == "outside":
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    elif isinstance(legend, str):
        ax.legend(loc=legend)
    elif legend:
        ax.legend()
    return fig


def layer_bars(means: Mapping[str, Sequence[float]], errors: Mapping[str, Sequence[float]] | None = None,
               *, layers: Sequence[str], ax=None, ylabel: str = "", title: str | None = None,
               colors: Mapping[str, str] | None = None, zero_line: bool = True):
    """Grouped bars: one group per layer, one bar per method (``means[method][i]`` for ``layers[i]``).

    ``errors[method]`` are half-lengths of the error bars (e.g. standard deviations or standard
    errors). Returns the figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 3.0))
    else:
        fig = ax.figure
    methods = list(means)
    width = 0.8 / max(len(methods), 1)
    pos = np.arange(len(layers))
    for i, method in enumerate(methods):
        vals = np.asarray(means[method], dtype=float)
        if vals.shape != (len(layers),):
            raise ValueError(f"means[{method!r}] has {vals.size} values for {len(layers)} layers")
        err = None if errors is None or method not in errors else np.asarray(errors[method], dtype=float)
        kw = {} if colors is None or method not in colors else {"color": colors[method]}
        ax.bar(pos + (i - (len(methods) - 1) / 2) * width, vals, width, yerr=err, capsize=2,
               label=method, error_kw={"linewidth": 0.8}, **kw)
    if zero_line:
        ax.axhline(0, color="0.3", linewidth=0.8)
    ax.set_xticks(pos)
    ax.set_xticklabels(layers)
    ax.grid(axis="x", visible=False)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return fig
