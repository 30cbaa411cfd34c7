"""featadv_core.plotting_distributions: overlaid histograms and rank scatters (Agg backend)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from featadv_core import plotting
from featadv_core.plotting import distributions as pd_


def test_as_array_accepts_tensors_lists_and_arrays():
    assert pd_.as_array(torch.tensor([[1.0, 2.0]])).tolist() == [1.0, 2.0]
    assert pd_.as_array([1, 2, 3]).dtype == np.float64
    assert pd_.as_array(np.ones((2, 2))).shape == (4,)


def test_shared_bins_pool_samples_and_handle_degenerate_input():
    edges = pd_.shared_bins([np.array([0.0, 1.0]), np.array([3.0, np.inf])], bins=3)
    assert np.allclose(edges, [0, 1, 2, 3])                     # inf dropped, range pooled
    assert np.allclose(pd_.shared_bins([np.array([2.0, 2.0])], bins=2), [1.5, 2.0, 2.5])
    assert np.allclose(pd_.shared_bins([np.arange(101.0)], bins=2, clip_quantile=0.1), [10, 50, 90])
    assert np.allclose(pd_.shared_bins([], bins=1), [0, 1])
    with pytest.raises(ValueError):
        pd_.shared_bins([np.ones(3)], bins=0)
    with pytest.raises(ValueError):
        pd_.shared_bins([np.ones(3)], bins=2, clip_quantile=0.7)


def test_overlaid_histograms_are_densities_on_shared_edges():
    plotting.apply_style()
    fig, ax = plt.subplots()
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 500), torch.tensor(rng.normal(2, 1, 50))
    edges = pd_.overlaid_histograms(ax, {"alpha": a, "far": b}, bins=20, colors=pd_.COLORS, xlabel="x")
    assert len(edges) == 21
    # two patches per sample (filled + outline); each filled one integrates to 1
    filled = [p for p in ax.patches if p.get_fill()]
    assert len(filled) == 2
    heights = [np.histogram(v, bins=edges, density=True)[0] for v in (a, b.numpy())]
    for counts in heights:
        assert np.sum(counts * np.diff(edges)) == pytest.approx(1.0)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["alpha (n=500)", "far (n=50)"]
    plt.close(fig)


def test_overlaid_histograms_clip_and_counts():
    fig, ax = plt.subplots()
    values = np.concatenate([np.zeros(10), [-1e6]])
    edges = pd_.overlaid_histograms(ax, {"dl": values}, bins=4, range=(-1, 0), density=False)
    assert edges[0] == -1 and edges[-1] == 0
    assert ax.get_ylabel() == "count"
    assert ax.get_legend().get_texts()[0].get_text() == "dl (n=11, 1 off-scale)"
    plt.close(fig)


def test_histogram_panels_grid_and_lines():
    panels = [{"samples": {"a": [1, 2, 3]}, "title": "p1", "lines": {"median": 2.0}},
              {"samples": {"a": [1, 2], "b": [2, 3]}, "xlabel": "x", "clip_quantile": 0.0},
              {"samples": {"c": [0.0]}}, {"samples": {"d": [5.0, 6.0]}, "density": False}]
    fig = pd_.histogram_panels(panels, ncols=3)
    axes = fig.axes
    assert len(axes) == 6 and sum(ax.get_visible() for ax in axes) == 4
    assert axes[0].get_title() == "p1"
    assert any(line.get_label() == "median" for line in axes[0].get_lines())
    plt.close(fig)
    with pytest.raises(ValueError):
        pd_.histogram_panels([])
    with pytest.raises(ValueError):
        pd_.histogram_panels([{"title": "no samples"}])


def test_rank_scatter_draws_groups_and_diagonal():
    fig, ax = plt.subplots()
    pd_.rank_scatter(ax, {"feature-opt": ([1, 2], [1, 3]), "label-opt": (np.ones(3), np.zeros(3))})
    assert len(ax.collections) == 2
    assert ax.get_xlim() == (0.0, 100.0)
    with pytest.raises(ValueError):
        pd_.rank_scatter(ax, {"bad": ([1, 2], [1])})
    plt.close(fig)


def test_import_has_no_side_effects():
    import subprocess
    import sys

    code = ("import matplotlib as mpl; before = dict(mpl.rcParams); import featadv_core.plotting.distributions; "
            "assert dict(mpl.rcParams) == before")
    subprocess.run([sys.executable, "-c", code], check=True)
