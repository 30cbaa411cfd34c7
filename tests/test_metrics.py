"""featadv_core.metrics: distances, distance ratios and per-class statistics (known answers)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featadv_core import metrics

SETTINGS = settings(max_examples=25, deadline=None)


def test_flatten_conv_features_and_rejects_single_vector():
    f = torch.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)
    assert metrics.flatten(f).shape == (2, 60)
    assert torch.equal(metrics.flatten(f)[1], f[1].flatten())
    with pytest.raises(ValueError, match="batch axis"):
        metrics.flatten(torch.zeros(7))


def test_euclidean_hand_made_points():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    assert torch.allclose(metrics.euclidean(a, b), torch.tensor([5.0, 0.0]))
    # one row broadcasts against many; conv-shaped inputs are flattened
    assert torch.allclose(metrics.euclidean(a, b[:1]), torch.tensor([5.0, math.sqrt(13.0)]))
    assert torch.allclose(metrics.euclidean(a.view(2, 1, 2, 1), b.view(2, 2, 1)), torch.tensor([5.0, 0.0]))
    with pytest.raises(ValueError, match="same number of rows"):
        metrics.euclidean(torch.zeros(3, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="dimensions"):
        metrics.euclidean(torch.zeros(2, 3), torch.zeros(2, 2))


def test_cosine_distance_known_answers():
    v = torch.tensor([[3.0, -1.0, 2.0]])
    assert metrics.cosine_distance(v, v).item() == pytest.approx(0.0, abs=1e-7)
    assert metrics.cosine_distance(v, 5 * v).item() == pytest.approx(0.0, abs=1e-6)
    assert metrics.cosine_distance(v, -v).item() == pytest.approx(2.0)
    e = torch.eye(2)
    assert metrics.cosine_distance(e[:1], e[1:]).item() == pytest.approx(1.0)
    zero = torch.zeros(1, 3)
    assert metrics.cosine_distance(zero, zero).item() == pytest.approx(1.0), "documented convention"


def test_pairwise_distances_hand_made():
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    expected = torch.tensor([[0.0, 5.0, 10.0], [5.0, 0.0, 5.0], [10.0, 5.0, 0.0]])
    assert torch.allclose(metrics.pairwise_distances(pts), expected, atol=1e-5)
    cos = metrics.pairwise_distances(pts[1:], torch.tensor([[1.0, 0.0], [0.0, 1.0]]), metric="cosine")
    assert torch.allclose(cos, torch.tensor([[0.4, 0.2], [0.4, 0.2]]), atol=1e-6)
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.pairwise_distances(pts, metric="manhattan")
    with pytest.raises(ValueError, match="empty"):
        metrics.pairwise_distances(pts[:0], pts)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pairwise_chunks_do_not_change_the_result(metric):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 16, generator=gen), torch.randn(23, 16, generator=gen)
    full = metrics.pairwise_distances(a, b, metric=metric)
    assert torch.allclose(full, metrics.pairwise_distances(a, b, metric=metric, chunk_size=5), atol=1e-6)
    a64, b64 = a.double(), b.double()
    if metric == "euclidean":
        ref = torch.cdist(a64, b64)
    else:
        ref = 1 - torch.nn.functional.cosine_similarity(a64[:, None], b64[None], dim=2)
    assert torch.allclose(full.double(), ref, atol=1e-5)


def test_pairwise_euclidean_is_accurate_far_from_the_origin():
    """Centring keeps the Gram trick accurate when all points share a large offset."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(20, 64, generator=gen) + 1e3
    exact = torch.cdist(a.double(), a.double(), compute_mode="donot_use_mm_for_euclid_dist")
    got = metrics.pairwise_distances(a).double()
    assert (got - exact).abs().max() < 1e-4
    assert torch.equal(torch.diagonal(got), torch.zeros(20, dtype=torch.float64)), "exact self-distances"
    assert (metrics.pairwise_distances(a, a.clone()).double() - exact).abs().max() < 1e-2


def test_distance_ratio_known_answer():
    s, g, a = torch.tensor([[0.0, 0.0]]), torch.tensor([[4.0, 0.0]]), torch.tensor([[3.0, 0.0]])
    assert metrics.distance_ratio(a, s, g).item() == pytest.approx(0.25)
    assert metrics.distance_ratio(s, s, g).item() == pytest.approx(1.0), "no progress = 1"
    with pytest.raises(ValueError, match="same number of rows"):
        metrics.distance_ratio(torch.zeros(2, 2), torch.zeros(3, 2), torch.zeros(1, 2))


def _equilateral(side: float) -> torch.Tensor:
    h = side * math.sqrt(3) / 2
    return torch.tensor([[0.0, 0.0], [side, 0.0], [side / 2, h]])


def test_mean_intra_class_distance_equilateral_configuration():
    feats = torch.cat([_equilateral(2.0), torch.tensor([[10.0, 10.0], [13.0, 14.0]])])
    labels = torch.tensor([0, 0, 0, 2, 2])
    out = metrics.mean_intra_class_distance(feats, labels, num_classes=4)
    assert out.shape == (4,)
    assert out[0].item() == pytest.approx(2.0, rel=1e-5)
    assert out[2].item() == pytest.approx(5.0, rel=1e-5)
    assert torch.isnan(out[1]) and torch.isnan(out[3]), "absent classes are nan"
    chunked = metrics.mean_intra_class_distance(feats, labels, num_classes=4, chunk_size=1)
    assert torch.allclose(out, chunked, equal_nan=True)
    # a regular simplex: every pair at the same distance, whatever the dimension
    simplex = torch.eye(6) * 3.0
    assert metrics.mean_intra_class_distance(simplex, torch.zeros(6, dtype=torch.long))[0].item() == \
        pytest.approx(3.0 * math.sqrt(2), rel=1e-5)


def test_mean_nn_distance_on_a_line():
    feats = torch.tensor([[0.0], [1.0], [3.0], [100.0], [100.5]])
    labels = torch.tensor([1, 1, 1, 0, 0])
    out = metrics.mean_nn_distance(feats, labels)
    assert out[1].item() == pytest.approx(4.0 / 3.0, rel=1e-5)   # NN distances 1, 1, 2
    assert out[0].item() == pytest.approx(0.5, rel=1e-4)
    assert torch.allclose(out, metrics.mean_nn_distance(feats, labels, chunk_size=2))
    # duplicates are distinct points: their NN distance is 0
    assert metrics.mean_nn_distance(torch.ones(3, 4), torch.zeros(3, dtype=torch.long))[0].item() == \
        pytest.approx(0.0, abs=1e-6)


def test_per_class_statistics_reject_bad_input():
    feats = torch.randn(4, 3)
    with pytest.raises(ValueError, match="at least 2 points"):
        metrics.mean_intra_class_distance(feats, torch.tensor([0, 0, 0, 1]))
    with pytest.raises(ValueError, match=r"one class per image \(4\)"):
        metrics.mean_nn_distance(feats, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="integer"):
        metrics.mean_nn_distance(feats, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="num_classes"):
        metrics.mean_nn_distance(feats, torch.tensor([0, 0, 3, 3]), num_classes=2)


@SETTINGS
@given(n=st.integers(1, 12), m=st.integers(1, 12), d=st.integers(1, 8),
       metric=st.sampled_from(["euclidean", "cosine"]), seed=st.integers(0, 2**16),
       scale=st.floats(1e-2, 1e2))
def test_pairwise_properties(n, m, d, metric, seed, scale):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen, dtype=torch.float64) * scale
    b = torch.randn(m, d, generator=gen, dtype=torch.float64) * scale
    dab = metrics.pairwise_distances(a, b, metric=metric)
    assert dab.shape == (n, m) and dab.dtype == torch.float64
    assert (dab >= 0).all()
    assert torch.allclose(dab, metrics.pairwise_distances(b, a, metric=metric).T, atol=1e-9 * scale)
    daa = metrics.pairwise_distances(a, metric=metric)
    assert torch.allclose(torch.diagonal(daa), torch.zeros(n, dtype=torch.float64), atol=1e-6 * max(scale, 1))
    rowwise = metrics.euclidean if metric == "euclidean" else metrics.cosine_distance
    k = min(n, m)
    assert torch.allclose(torch.diagonal(dab)[:k], rowwise(a[:k], b[:k]), atol=1e-7 * max(scale, 1))
