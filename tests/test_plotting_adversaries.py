"""featadv_core.plotting_adversaries: chapter-1 figures on synthetic tensors (no display needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from featadv_core import plotting
from featadv_core.plotting import adversaries as pa


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _rows(n_rows=2, n_adv=3, channels=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    src = [torch.rand(channels, 8, 8, generator=gen) * 0.8 + 0.1 for _ in range(n_rows)]
    gde = [torch.rand(channels, 8, 8, generator=gen) for _ in range(n_rows)]
    adv = [[(s + (c + 1) / 255 * torch.sign(torch.randn(channels, 8, 8, generator=gen))).clamp(0, 1)
            for c in range(n_adv)] for s in src]
    return src, gde, adv


def test_difference_scale_modes():
    src, _, adv = _rows(n_rows=2, n_adv=3)
    fig_scale = pa.difference_scale(src, adv, "figure")
    assert all(v == pytest.approx(3 / 255, rel=1e-4) for row in fig_scale for v in row)
    row_scale = pa.difference_scale(src, adv, "row")
    assert row_scale[0] == [row_scale[0][0]] * 3
    img_scale = pa.difference_scale(src, adv, "image")
    assert [round(v * 255) for v in img_scale[0]] == [1, 2, 3]
    assert pa.difference_scale(src, adv, 0.1) == [[0.1] * 3] * 2
    zero = pa.difference_scale([torch.zeros(1, 2, 2)], [[torch.zeros(1, 2, 2)]], "figure")
    assert zero[0][0] > 0
    with pytest.raises(ValueError, match="valid"):
        pa.difference_scale(src, adv, "bogus")
    with pytest.raises(ValueError, match="positive"):
        pa.difference_scale(src, adv, -1.0)


def test_figure_scale_makes_larger_perturbations_look_larger():
    # with one scale for the figure, a δ=1 difference is closer to grey than a δ=3 one
    src, _, adv = _rows(n_rows=1, n_adv=3)
    scale = pa.difference_scale(src, adv, "figure")[0]
    shown = [(plotting.difference_image(a, src[0], scale=s) - 0.5).abs().mean() for a, s in zip(adv[0], scale)]
    assert shown[0] < shown[1] < shown[2]


def test_adversary_grid_layout_and_labels():
    plotting.apply_style()
    src, gde, adv = _rows(n_rows=2, n_adv=3)
    captions = [[f"r={r}{c}" for c in range(3)] for r in range(2)]
    fig = pa.adversary_grid(src, gde, adv, row_labels=["a", "b"], col_labels=["δ=1", "δ=2", "δ=3"],
                            captions=captions)
    # per row: source, guide, and an adversary + difference per column
    assert len(fig.axes) == 2 * (2 + 2 * 3)
    texts = ({ax.get_title() for ax in fig.axes} | {ax.get_title(loc="left") for ax in fig.axes}
             | {ax.get_xlabel() for ax in fig.axes})
    assert {"source", "guide", "δ=1", "α − s", "r=12"} <= texts
    assert {ax.get_ylabel() for ax in fig.axes} >= {"a", "b"}


def test_adversary_grid_greyscale_and_ragged_rows():
    src, gde, adv = _rows(n_rows=2, n_adv=2, channels=1)
    adv[1] = adv[1][:1]
    fig = pa.adversary_grid(src, gde, adv, diff_scale="row")
    assert len(fig.axes) == (2 + 4) + (2 + 2)


def test_adversary_grid_rejects_bad_input():
    src, gde, adv = _rows(n_rows=2, n_adv=2)
    with pytest.raises(ValueError, match="one guide"):
        pa.adversary_grid(src, gde[:1], adv)
    with pytest.raises(ValueError, match="captions"):
        pa.adversary_grid(src, gde, adv, captions=[["x"], ["y"]])
    with pytest.raises(ValueError, match="does not match"):
        pa.adversary_grid(src, gde, [[torch.zeros(3, 4, 4)], [torch.zeros(3, 4, 4)]])
    with pytest.raises(ValueError, match="at least one row"):
        pa.adversary_grid([], [], [])


def test_activation_patterns_shares_axes_within_a_column():
    fc7 = [("source", torch.relu(torch.randn(64))), ("guide", torch.relu(torch.randn(64)) * 3),
           ("adv", np.maximum(np.random.default_rng(0).normal(size=64), 0))]
    pool5 = [("source", torch.rand(4, 2, 2)), ("guide", torch.rand(16))]
    fig = pa.activation_patterns([("FC7", fc7), ("P5", pool5)])
    axes = np.array(fig.axes).reshape(3, 2)
    assert axes[0, 0].get_ylim() == axes[2, 0].get_ylim()          # shared y-range in a column
    assert axes[0, 0].get_ylim()[1] >= float(fc7[1][1].max())      # the largest value is visible
    assert axes[0, 1].get_xlim() == pytest.approx((-0.5, 15.5))    # a 4×2×2 map is flattened to 16 units
    assert not axes[2, 1].get_visible()                            # the short column leaves a blank
    assert axes[0, 0].get_title() == "FC7"
    with pytest.raises(ValueError):
        pa.activation_patterns([])


def test_ratio_boxplot_draws_one_box_per_group():
    ratios = {"CIFAR": torch.tensor([0.1, 0.2, 0.3]), "MNIST": np.array([0.8, 0.9])}
    fig = pa.ratio_boxplot(ratios, title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CIFAR", "MNIST"]
    medians = sorted(t.get_text() for t in ax.texts)
    assert medians == ["0.20", "0.85"]
    _, ax2 = plt.subplots()
    assert pa.ratio_boxplot(ratios, ax=ax2, reference=None, log=True) is ax2.figure
    with pytest.raises(ValueError):
        pa.ratio_boxplot({})
    with pytest.raises(ValueError):
        pa.ratio_boxplot({"x": []})


def test_perturbation_stats_known_answers():
    gen = torch.Generator().manual_seed(1)
    src = torch.rand(4, 3, 8, 8, generator=gen) * 0.5 + 0.25
    guide = torch.rand(4, 3, 8, 8, generator=gen)
    pasted = src + 0.1 * (guide - src)                    # the guide pasted in: correlation 1
    noise = src + 5 / 255 * torch.sign(torch.randn(4, 3, 8, 8, generator=gen))
    st = pa.perturbation_stats(pasted, src, guide)
    assert torch.allclose(st["corr_guide"], torch.ones(4), atol=1e-5)
    assert torch.allclose(pa.perturbation_stats(src - 0.1 * (guide - src), src, guide)["corr_guide"],
                          -torch.ones(4), atol=1e-5)
    st = pa.perturbation_stats(noise, src, guide)
    assert torch.allclose(st["linf"], torch.full((4,), 5.0), atol=1e-4)
    assert torch.allclose(st["mean_abs"], torch.full((4,), 5.0), atol=1e-4)
    assert st["corr_guide"].abs().max() < 0.5             # independent noise: weak correlation
    assert pa.perturbation_stats(src, src, guide)["corr_guide"].eq(0).all()   # no perturbation
    with pytest.raises(ValueError):
        pa.perturbation_stats(src[:2], src, guide)
