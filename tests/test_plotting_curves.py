"""Tests of featadv_core.plotting_curves (synthetic data, fast)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from featadv_core.plotting import curves as pc, tables as pt
from featadv_core.analysis import statistics as st


def test_as_array_accepts_tensors_arrays_lists():
    assert st.as_array(torch.tensor([1.0, 2.0])).dtype == np.float64
    np.testing.assert_array_equal(st.as_array([1, 2, 3]), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="1-d"):
        st.as_array(np.zeros((2, 2)))


def test_curve_summary_quartiles_and_nan_handling():
    vals = torch.arange(1, 102, dtype=torch.float64)  # 1..101: quartiles 26, 51, 76
    with_nan = torch.cat([vals, torch.tensor([float("nan"), float("inf")])])
    s = pc.curve_summary({"a": {2: vals, 5: with_nan}, "b": {2: [0.5, 0.5]}})
    assert list(s.columns) == ["curve", "x", "q25", "q50", "q75", "mean", "n"]
    assert list(s["curve"]) == ["a", "a", "b"] and list(s["x"]) == [2, 5, 2]
    for row in (0, 1):
        assert s.loc[row, "q25"] == pytest.approx(26)
        assert s.loc[row, "q50"] == pytest.approx(51)
        assert s.loc[row, "q75"] == pytest.approx(76)
        assert s.loc[row, "n"] == 101
    assert s.loc[2, "q50"] == 0.5 and s.loc[2, "mean"] == 0.5


def test_curve_summary_empty_cell_and_bad_quantiles():
    s = pc.curve_summary({"a": {1: [float("nan")]}})
    assert s.loc[0, "n"] == 0 and math.isnan(s.loc[0, "q50"])
    with pytest.raises(ValueError, match="quantiles"):
        pc.curve_summary({"a": {1: [1.0]}}, q=(0.5, 1.5))
    s = pc.curve_summary({"a": {1: [1.0, 3.0]}}, q=(0.1, 0.9))
    assert {"q10", "q90"} <= set(s.columns)


def test_plot_curves_draws_one_line_per_curve_with_bands():
    s = pc.curve_summary({"C2": {d: np.linspace(0.5, 1, 9) / d for d in (2, 5, 10)},
                          "F7": {d: np.linspace(0.1, 0.3, 9) for d in (2, 5, 10)}})
    fig = pc.plot_curves(s, styles={"F7": {"color": "k", "linestyle": "--", "label": "FC7"}},
                         hlines=(0.5, 0.8), ylabel="ratio", title="t", ylim=(0, 1.2))
    ax = fig.axes[0]
    data_lines = [l for l in ax.get_lines() if l.get_label() in ("C2", "FC7")]
    assert len(data_lines) == 2
    fc7 = next(l for l in data_lines if l.get_label() == "FC7")
    assert fc7.get_linestyle() == "--"
    np.testing.assert_allclose(fc7.get_ydata(), np.full(3, 0.2))
    assert len(ax.collections) == 2  # two quartile bands
    assert ax.get_ylim() == (0, 1.2)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["C2", "FC7"]
    matplotlib.pyplot.close(fig)


def test_plot_curves_on_given_axis_without_band():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    s = pc.curve_summary({"x": {1: [1.0, 2.0], 2: [2.0, 3.0]}})
    out = pc.plot_curves(s, ax=ax, band=False, legend=False)
    assert out is fig and not ax.collections and ax.get_legend() is None
    plt.close(fig)
    for where in ("outside", "upper right"):
        fig = pc.plot_curves(s, legend=where)
        assert fig.axes[0].get_legend() is not None
        plt.close(fig)


def test_describe_known_answer():
    d = st.describe([1.0, 2.0, 3.0, 4.0, float("nan")])
    assert d["n"] == 4 and d["mean"] == 2.5
    assert d["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert d["sem"] == pytest.approx(d["std"] / 2)
    assert d["t"] == pytest.approx(2.5 / d["sem"])
    assert st.one_sample_t(torch.tensor([1.0, 2.0, 3.0, 4.0])) == pytest.approx(d["t"])


def test_describe_edge_cases():
    assert math.isnan(st.describe([1.0])["t"]) and st.describe([1.0])["mean"] == 1.0
    assert st.describe([2.0, 2.0])["t"] == math.inf
    assert st.describe([-2.0, -2.0])["t"] == -math.inf
    assert math.isnan(st.describe([0.0, 0.0])["t"])
    assert st.describe([])["n"] == 0


def test_one_sample_t_detects_shift():
    rng = np.random.default_rng(0)
    assert abs(st.one_sample_t(rng.normal(0.0, 1.0, 400))) < 3
    assert st.one_sample_t(rng.normal(0.5, 1.0, 400)) > 3


def test_mean_std_table_layout():
    cols = {"ΔS a": {"conv1": [1.0, 3.0], "fc7": [-1.0, -1.0]}, "ΔS b": {"conv1": [0.0, 0.0]}}
    t = pt.mean_std_table(cols, fmt="{:+.1f}")
    assert list(t.index) == ["conv1", "fc7"] and t.index.name == "layer"
    assert t.loc["conv1", "ΔS a"] == "+2.0 ± 1.4"
    assert t.loc["fc7", "ΔS a"] == "-1.0 ± 0.0"
    assert t.loc["fc7", "ΔS b"] == ""
    t2 = pt.mean_std_table(cols, rows=["fc7"])
    assert list(t2.index) == ["fc7"]


def test_difference_table_absolute_and_relative():
    ref = {("fc7", 5): 0.20, ("conv2", 5): 0.50}
    oth = {("fc7", 5): 0.21, ("conv2", 5): 0.60, ("extra", 1): 9.0}
    t = pt.difference_table(ref, oth, names=("trained", "random"))
    assert list(t.columns) == ["trained", "random", "Δ (pp)", "Δ relative (%)"]
    assert t.index.names == ["layer", "δ"]
    assert t.loc[("fc7", 5), "Δ (pp)"] == pytest.approx(1.0)
    assert t.loc[("fc7", 5), "Δ relative (%)"] == pytest.approx(5.0)
    assert t.loc[("conv2", 5), "Δ (pp)"] == pytest.approx(10.0)
    assert t.loc[("conv2", 5), "Δ relative (%)"] == pytest.approx(20.0)
    with pytest.raises(KeyError):
        pt.difference_table(oth, ref)
    flat = pt.difference_table({"a": 1.0}, {"a": 2.0})
    assert flat.index.name == "layer" and flat.loc["a", "Δ relative (%)"] == pytest.approx(100.0)


def test_layer_bars():
    import matplotlib.pyplot as plt

    fig = pc.layer_bars({"feature-opt": [1.0, -2.0], "label-opt": [0.5, 0.1]},
                        {"feature-opt": [0.1, 0.2]}, layers=["conv1", "fc7"], ylabel="ΔS")
    ax = fig.axes[0]
    assert len(ax.patches) == 4
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "fc7"]
    plt.close(fig)
    with pytest.raises(ValueError, match="layers"):
        pc.layer_bars({"a": [1.0]}, layers=["conv1", "fc7"])


def test_paper_layer_label():
    assert [pc.paper_layer_label(n) for n in ("conv2", "pool5", "fc7", "norm2", "ip1", "conv")] == \
        ["C2", "P5", "F7", "Norm2", "ip1", "conv"]


def test_median_matches_curve_summary_for_even_counts():
    vals = torch.tensor([1.0, 2.0, 3.0, 10.0, float("nan")])
    assert st.median(vals) == 2.5  # torch.median would give 2.0
    assert pc.curve_summary({"a": {1: vals}}).loc[0, "q50"] == st.median(vals)
    assert math.isnan(st.median([float("nan")]))
