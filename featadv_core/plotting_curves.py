"""Line plots of per-pair statistics against a parameter, and the tables that summarise them.

Chapter 1 (Sabour et al. 2016) reports per-pair statistics — distance ratios
``d(α, g) / d(s, g)``, sparsity changes ΔS, I/U of active units — summarised over many
source–guide pairs: as curves against the L∞ bound δ (Fig. 5, the random-network table of §5)
or as ``mean ± std`` cells of a layer × method table (Table 2). This module holds those
summaries and their rendering:

* :func:`median` — the median of the finite values (the same as :func:`curve_summary`'s);
* :func:`curve_summary` — quartiles (median and band) of per-pair values, per curve and x;
* :func:`plot_curves` — Fig. 5-style plot: one median line per curve, quartile band shaded;
* :func:`describe` / :func:`one_sample_t` — mean, std, standard error and t-statistic of a sample;
* :func:`mean_std_table` — a table of ``"mean ± std"`` strings (Table 2's layout);
* :func:`difference_table` — two summaries side by side with their difference, absolute
  (percentage points) and relative;
* :func:`layer_bars` — grouped bars with error bars, per layer and method.

Everything takes plain mappings of 1-d tensors or arrays; NaN values (e.g. a ratio with a zero
denominator) are ignored by the summaries and counted out of ``n``. Nothing runs at import time;
matplotlib and pandas are imported inside the functions.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

__all__ = ["paper_layer_label", "as_array", "median", "curve_summary", "plot_curves", "describe", "one_sample_t", "mean_std_table",
           "difference_table", "layer_bars"]

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



def as_array(values) -> np.ndarray:
    """1-d float64 NumPy array of ``values`` (a tensor on any device, an array or a sequence)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-d sequence of per-pair values, got shape {arr.shape}")
    return arr


def _finite(values) -> np.ndarray:
    arr = as_array(values)
    return arr[np.isfinite(arr)]


def median(values) -> float:
    """Median of the finite values (NaN if none), the average of the two middle ones for an even
    count — as :func:`curve_summary`'s ``q50``, unlike ``torch.median``, which returns the lower."""
    arr = _finite(values)
    return float(np.median(arr)) if arr.size else math.nan


# --------------------------------------------------------------------------- curves

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


# --------------------------------------------------------------------------- statistics

def describe(values) -> dict[str, float]:
    """``n``, ``mean``, ``std`` (sample, ddof=1), ``sem`` = std/√n and ``t`` = mean/sem of the finite values.

    ``t`` is the one-sample t-statistic of the hypothesis "mean = 0". With fewer than two values
    ``std``, ``sem`` and ``t`` are NaN; with zero spread, ``t`` is ±inf (or NaN for a zero mean).
    """
    arr = _finite(values)
    n = int(arr.size)
    mean = float(arr.mean()) if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "sem": math.nan, "t": math.nan}
    std = float(arr.std(ddof=1))
    sem = std / math.sqrt(n)
    if sem > 0:
        t = mean / sem
    else:
        t = math.nan if mean == 0 else math.copysign(math.inf, mean)
    return {"n": n, "mean": mean, "std": std, "sem": sem, "t": t}


def one_sample_t(values) -> float:
    """One-sample t-statistic ``mean / (std / √n)`` of the finite values (see :func:`describe`)."""
    return describe(values)["t"]


def mean_std_table(columns: Mapping[str, Mapping[Hashable, object]], *, fmt: str = "{:.2f}",
                   rows: Sequence[Hashable] | None = None, index_name: str = "layer"):
    """A DataFrame of ``"mean ± std"`` strings: ``columns[col][row]`` holds per-pair values.

    Row order is ``rows`` (default: the first column's keys); a missing cell is ``""``.
    ``fmt`` formats both numbers (e.g. ``"{:+.2f}"`` for signed differences).
    """
    import pandas as pd

    if rows is None:
        rows = list(next(iter(columns.values()), {}).keys())
    table = {}
    for col, cells in columns.items():
        out = []
        for row in rows:
            if row not in cells:
                out.append("")
                continue
            d = describe(cells[row])
            std = fmt.format(d["std"]).lstrip("+") if math.isfinite(d["std"]) else "–"
            out.append(f"{fmt.format(d['mean'])} ± {std}")
        table[col] = out
    frame = pd.DataFrame(table, index=list(rows))
    frame.index.name = index_name
    return frame


def difference_table(reference: Mapping[tuple, float], other: Mapping[tuple, float], *,
                     names: tuple[str, str] = ("reference", "other"), scale: float = 100.0,
                     index_names: Sequence[str] = ("layer", "δ"), unit: str = "pp"):
    """``reference`` and ``other`` side by side with ``other − reference``, absolute and relative.

    Both map the same keys (e.g. ``(layer, δ)``) to one number each (e.g. a median distance
    ratio). Columns: the two values, ``Δ (<unit>)`` = ``scale · (other − reference)``
    (percentage points of the ratio with the default ``scale=100``) and ``Δ relative (%)`` =
    ``100 · (other − reference) / reference``. Keys of ``reference`` missing from ``other`` are
    a ``KeyError``. The index is a MultiIndex named ``index_names`` when the keys are tuples.
    """
    import pandas as pd

    keys = list(reference)
    missing = [k for k in keys if k not in other]
    if missing:
        raise KeyError(f"keys missing from the second mapping: {missing}")
    ref = np.array([float(reference[k]) for k in keys])
    oth = np.array([float(other[k]) for k in keys])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = 100.0 * (oth - ref) / ref
    index = (pd.MultiIndex.from_tuples(keys, names=list(index_names))
             if keys and isinstance(keys[0], tuple) else pd.Index(keys, name=index_names[0]))
    return pd.DataFrame({names[0]: ref, names[1]: oth, f"Δ ({unit})": scale * (oth - ref),
                         "Δ relative (%)": rel}, index=index)


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
