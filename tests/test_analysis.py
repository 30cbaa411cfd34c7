"""featadv_core.analysis: kNN and rank statistics, manifold measures, sparsity, random networks,
inversion — on synthetic data with known answers."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from featadv_core import analysis
from featadv_core.features import forward_to
from featadv_core.models import architectures

SETTINGS = settings(max_examples=20, deadline=None)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- knn

def test_knn_matches_brute_force_and_excludes_self():
    x = torch.randn(40, 5, generator=_gen())
    d, i = analysis.knn(x, x, 4, exclude="self", chunk_size=7)
    full = torch.cdist(x.double(), x.double())
    full.fill_diagonal_(float("inf"))
    ref_d, ref_i = full.topk(4, dim=1, largest=False)
    assert torch.equal(i, ref_i)
    assert torch.allclose(d.double(), ref_d, atol=1e-5)
    assert (d[:, 1:] >= d[:, :-1]).all(), "sorted by distance"
    assert not (i == torch.arange(40)[:, None]).any()


def test_knn_exclusion_forms():
    ref = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    q = torch.tensor([[0.1], [2.9]])
    _, i = analysis.knn(q, ref, 2)
    assert i.tolist() == [[0, 1], [3, 2]]
    _, i = analysis.knn(q, ref, 2, exclude=torch.tensor([0, 3]))          # one per query
    assert i.tolist() == [[1, 2], [2, 1]]
    _, i = analysis.knn(q, ref, 2, exclude=torch.tensor([[0, 1], [3, -1]]))  # several, -1 pads
    assert i.tolist() == [[2, 3], [2, 1]]
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 2:4] = True
    _, i = analysis.knn(q, ref, 2, exclude=mask)
    assert i.tolist() == [[0, 1], [1, 0]]
    _, i = analysis.knn(q, ref, 1, metric="cosine", exclude=[[0], [0]])   # all positive: cos-dist 0
    assert i.shape == (2, 1)


def test_knn_rejects_bad_input():
    ref = torch.randn(5, 3)
    with pytest.raises(ValueError, match="larger than the 5 reference points"):
        analysis.knn(ref, ref, 6)
    with pytest.raises(ValueError, match="excluded"):
        analysis.knn(ref, ref, 5, exclude="self")
    with pytest.raises(ValueError, match="query set to be the reference set"):
        analysis.knn(ref[:2], ref, 1, exclude="self")
    with pytest.raises(ValueError, match="out of range"):
        analysis.knn(ref[:2], ref, 1, exclude=[5, 0])
    with pytest.raises(ValueError, match="one index per query"):
        analysis.knn(ref[:2], ref, 1, exclude=[0, 1, 2])
    with pytest.raises(ValueError, match="dimensions"):
        analysis.knn(torch.randn(2, 4), ref, 1)
    with pytest.raises(ValueError, match="positive integer"):
        analysis.knn(ref, ref, 0)


# --------------------------------------------------------------------------- rank statistic

def _class_cloud() -> torch.Tensor:
    """A dense cluster near the origin plus a sparse halo: 30 + 10 points in 2-d."""
    gen = _gen(3)
    dense = 0.05 * torch.randn(30, 2, generator=gen)
    angles = torch.linspace(0, 2 * math.pi, 11)[:-1]
    halo = 5.0 * torch.stack([angles.cos(), angles.sin()], 1)
    return torch.cat([dense, halo])


def test_rank_statistic_dense_point_low_outlier_100():
    feats = _class_cloud()
    far = torch.tensor([[100.0, 100.0]])
    assert analysis.rank_statistic(far, feats).item() == 100.0
    centre = torch.tensor([[0.0, 0.0]])
    assert analysis.rank_statistic(centre, feats).item() < 25.0
    # class members scored as the paper does (themselves excluded): halo points rank high
    idx = torch.arange(feats.shape[0])
    r = analysis.rank_statistic(feats, feats, exclude=idx)
    assert r.min() >= 100.0 / feats.shape[0] and r.max() == 100.0
    assert (r[30:] > r[:30].max()).all()
    # the densest member (smallest 3-NN score) has the lowest possible rank, 1/N
    scores = analysis.knn_score(feats, feats, 3, exclude="self")
    assert r[scores.argmin()].item() == pytest.approx(100.0 / feats.shape[0])


def test_delta_r3_is_zero_for_an_exact_copy_of_the_guide():
    feats = _class_cloud()
    gi = 4
    r_g = analysis.rank_statistic(feats[gi:gi + 1], feats, exclude=[gi])
    r_a = analysis.rank_statistic(feats[gi:gi + 1].clone(), feats, exclude=[gi])
    assert (r_a - r_g).item() == 0.0


def test_rank_statistic_needs_enough_points():
    with pytest.raises(ValueError, match="at least k\\+1"):
        analysis.rank_statistic(torch.randn(1, 2), torch.randn(3, 2), k=3)


# --------------------------------------------------------------------------- knn intersection

def test_knn_intersection():
    a = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 3], [7, 8, 9]])
    b = torch.tensor([[3, 1, 2], [4, 5, 6], [2, 9, 1], [9, 9, 9]])
    assert analysis.knn_intersection(a, b).tolist() == pytest.approx([1.0, 0.0, 2 / 3, 1 / 3])
    assert analysis.knn_intersection(a, a).tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="same shape"):
        analysis.knn_intersection(a, b[:, :2])


def test_knn_intersection_of_a_guide_and_its_copy():
    """α ≈ g with g excluded from α's candidates shares g's 3 NNs (Table 1)."""
    feats = torch.randn(50, 8, generator=_gen(5))
    gi = 7
    alpha = feats[gi:gi + 1] + 1e-4
    _, nn_g = analysis.knn(feats[gi:gi + 1], feats, 3, exclude=[gi])
    _, nn_a = analysis.knn(alpha, feats, 3, exclude=[gi])
    assert analysis.knn_intersection(nn_a, nn_g).item() == 1.0


# --------------------------------------------------------------------------- neighbourhood sets

def _fan(n: int = 60, d: int = 6, seed: int = 0):
    """Pool points on a fan of growing angle from g = 2·e0 (so cosine ranks are known), shuffled.

    Returns ``g``, the pool and the pool indices in order of increasing angle to ``g``.
    """
    angles = torch.linspace(0.01, 1.5, n)
    pts = torch.zeros(n, d)
    pts[:, 0], pts[:, 1] = angles.cos(), angles.sin()
    pts = pts * (1 + 2 * torch.rand(n, 1, generator=_gen(seed + 1)))     # norms do not matter
    perm = torch.randperm(n, generator=_gen(seed))                        # pool[j] has rank perm[j]
    g = torch.zeros(d)
    g[0] = 2.0
    return g, pts[perm], torch.argsort(perm)


def test_neighbourhood_sets_known_ranks():
    g, pool, order = _fan()
    pool = torch.cat([pool, g[None].repeat(10, 1)])    # copies of g in the pool: must be dropped
    sets = analysis.neighbourhood_sets(g, pool, generator=0)
    assert sets.ref.shape == (15,) and sets.close.shape == (5,) and sets.far.shape == (10,)
    n20 = set(order[:20].tolist())
    assert set(sets.ref.tolist()) | set(sets.close.tolist()) == n20
    assert not set(sets.ref.tolist()) & set(sets.close.tolist())
    assert sets.far.tolist() == order[40:50].tolist()
    assert max(torch.cat(sets).tolist()) < 60
    again = analysis.neighbourhood_sets(g, pool, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip(sets, again)), "deterministic under a seed"
    other = analysis.neighbourhood_sets(g, pool, generator=1)
    assert set(other.ref.tolist()) | set(other.close.tolist()) == n20


def test_neighbourhood_sets_batched_and_errors():
    g, pool, order = _fan()
    sets = analysis.neighbourhood_sets(torch.stack([g, -g]), pool, generator=0, exclude=[[order[0]], [-1]])
    assert sets.ref.shape == (2, 15) and sets.far.shape == (2, 10)
    assert order[0].item() not in sets.ref[0].tolist() + sets.close[0].tolist()
    assert set(sets.ref[0].tolist()) | set(sets.close[0].tolist()) == set(order[1:21].tolist())
    with pytest.raises(ValueError, match="fewer than far"):
        analysis.neighbourhood_sets(g, pool[:45])
    with pytest.raises(ValueError, match="n_ref < n_close"):
        analysis.neighbourhood_sets(g, pool, n_ref=20, n_close=20)


# --------------------------------------------------------------------------- PPCA

def test_ppca_recovers_a_low_rank_gaussian():
    d, q, n = 8, 2, 20000
    gen = _gen(11)
    w0 = torch.randn(d, q, generator=gen, dtype=torch.float64) * 2.0
    mu0 = torch.randn(d, generator=gen, dtype=torch.float64)
    cov0 = w0 @ w0.T + 0.1 * torch.eye(d, dtype=torch.float64)
    x = mu0 + torch.randn(n, q, generator=gen, dtype=torch.float64) @ w0.T \
        + math.sqrt(0.1) * torch.randn(n, d, generator=gen, dtype=torch.float64)
    model = analysis.ppca_fit(x, q)
    mean, w, sigma2 = model                            # unpacks as (mean, W, sigma2)
    assert w.shape == (d, q)
    assert torch.allclose(mean, mu0, atol=0.05)
    assert sigma2.item() == pytest.approx(0.1, rel=0.05)
    assert torch.linalg.matrix_norm(model.covariance() - cov0) / torch.linalg.matrix_norm(cov0) < 0.03


def test_ppca_matches_the_tipping_bishop_closed_form():
    x = torch.randn(30, 7, generator=_gen(2), dtype=torch.float64) * torch.arange(1, 8, dtype=torch.float64)
    q = 3
    model = analysis.ppca_fit(x, q)
    s = torch.cov(x.T, correction=0)                   # ML sample covariance, dense
    lam, u = torch.linalg.eigh(s)
    lam, u = lam.flip(0), u.flip(1)
    sigma2 = lam[q:].mean()
    expected = u[:, :q] @ torch.diag(lam[:q] - sigma2) @ u[:, :q].T + sigma2 * torch.eye(7, dtype=torch.float64)
    assert model.sigma2.item() == pytest.approx(sigma2.item(), rel=1e-10)
    assert torch.allclose(model.covariance(), expected, atol=1e-10)


def test_ppca_log_prob_woodbury_equals_dense_gaussian():
    gen = _gen(4)
    ref = torch.randn(15, 10, generator=gen, dtype=torch.float64)
    z = torch.randn(6, 10, generator=gen, dtype=torch.float64) * 2
    g = ref.mean(0) + 0.1
    model = analysis.ppca_fit(ref, 4)
    dense = torch.distributions.MultivariateNormal(model.mean, covariance_matrix=model.covariance())
    assert torch.allclose(model.log_prob(z), dense.log_prob(z), atol=1e-9)
    moved = torch.distributions.MultivariateNormal(g, covariance_matrix=model.covariance())
    delta = analysis.ppca_delta_loglik(z, g, ref, n_components=4)
    assert torch.allclose(delta, moved.log_prob(z) - moved.log_prob(g), atol=1e-9)
    assert torch.allclose(model.log_prob(z, center=g) - model.log_prob(g[None], center=g), delta, atol=1e-9)


def test_delta_loglik_zero_at_g_negative_elsewhere_and_orders_points():
    gen = _gen(6)
    basis = torch.linalg.qr(torch.randn(50, 3, generator=gen))[0]          # a 3-d plane in 50-d
    ref = torch.randn(15, 3, generator=gen) @ basis.T + 0.01 * torch.randn(15, 50, generator=gen)
    g = ref.mean(0)
    on_plane = g + basis @ torch.tensor([0.5, -0.5, 0.2])
    off_plane = g + 0.5 * torch.linalg.qr(torch.randn(50, 50, generator=gen))[0][:, 10]
    out = analysis.ppca_delta_loglik(torch.stack([g, on_plane, off_plane]), g, ref, n_components=3)
    assert out[0].item() == 0.0
    assert (out[1:] < 0).all()
    assert out[2] < out[1], "off the tangent plane is less likely than on it"
    assert analysis.ppca_delta_loglik(g, g, ref).shape == ()


def test_delta_loglik_high_dimension_and_batched_guides():
    gen = _gen(8)
    d = 9216                                               # pool5-sized: no D×D matrix is formed
    ref = torch.randn(2, 15, d, generator=gen)
    g = ref[:, 0] + 0.1
    z = torch.randn(2, 4, d, generator=gen)
    out = analysis.ppca_delta_loglik(z, g, ref)
    assert out.shape == (2, 4) and torch.isfinite(out).all() and (out <= 0).all()
    one = analysis.ppca_delta_loglik(z[1], g[1], ref[1])
    assert torch.allclose(out[1], one, rtol=1e-4)


def test_ppca_rejects_bad_input():
    with pytest.raises(ValueError, match="n_components"):
        analysis.ppca_fit(torch.randn(15, 20), 15)
    with pytest.raises(ValueError, match="at least 2 points"):
        analysis.ppca_fit(torch.randn(1, 20), 0)
    with pytest.raises(ValueError, match="identical"):
        analysis.ppca_fit(torch.ones(5, 20), 2)
    with pytest.raises(ValueError, match="g must have shape"):
        analysis.ppca_delta_loglik(torch.randn(3, 4), torch.randn(5), torch.randn(6, 4))
    with pytest.raises(ValueError, match="z must have shape"):
        analysis.ppca_delta_loglik(torch.randn(3, 5), torch.randn(4), torch.randn(6, 4))


@SETTINGS
@given(seed=st.integers(0, 2**16), k=st.integers(2, 15), d=st.integers(2, 30), q=st.integers(0, 5),
       scale=st.floats(1e-3, 1e3))
def test_delta_loglik_is_never_positive(seed, k, d, q, scale):
    q = min(q, k - 1, d - 1)
    gen = _gen(seed)
    ref = torch.randn(k, d, generator=gen) * scale
    g = torch.randn(d, generator=gen) * scale
    z = torch.cat([g[None], torch.randn(5, d, generator=gen) * scale])
    out = analysis.ppca_delta_loglik(z, g, ref, n_components=q)
    assert torch.isfinite(out).all() and (out <= 0).all() and out[0] == 0


# --------------------------------------------------------------------------- angular consistency

def _omega_loop(z, g, ref):
    return torch.stack([
        torch.stack([torch.dot(x - zz, x - g) / ((x - zz).norm() * (x - g).norm()) for x in ref]).mean()
        for zz in z])


def test_angular_consistency_known_answers():
    gen = _gen(9)
    ref = torch.randn(15, 20, generator=gen, dtype=torch.float64)
    g = ref.mean(0)
    near = g + 0.01 * torch.randn(20, generator=gen, dtype=torch.float64)
    far = g + 100.0 * torch.randn(20, generator=gen, dtype=torch.float64)
    z = torch.stack([g, near, far])
    omega = analysis.angular_consistency(z, g, ref)
    assert omega[0].item() == pytest.approx(1.0, abs=1e-12)
    assert omega[2] < omega[1] <= 1.0
    assert torch.allclose(omega, _omega_loop(z, g, ref), atol=1e-10)
    assert analysis.angular_consistency(g, g, ref).item() == pytest.approx(1.0)
    # a z on top of a reference point: that term counts 0, the rest stay well defined
    assert torch.isfinite(analysis.angular_consistency(ref[:1], g, ref)).all()


def test_angular_consistency_batched_and_errors():
    gen = _gen(10)
    ref = torch.randn(3, 15, 12, generator=gen)
    g = torch.randn(3, 12, generator=gen)
    z = torch.randn(3, 5, 12, generator=gen)
    out = analysis.angular_consistency(z, g, ref)
    assert out.shape == (3, 5) and (out <= 1 + 1e-6).all() and (out >= -1 - 1e-6).all()
    assert torch.allclose(out[2], _omega_loop(z[2], g[2], ref[2]), atol=1e-5)
    with pytest.raises(ValueError, match="equals g"):
        analysis.angular_consistency(z[0], ref[0, 3], ref[0])


# --------------------------------------------------------------------------- sparsity

def test_sparsity_on_hand_made_masks():
    src = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    adv = torch.tensor([[3.0, 1.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0]])
    assert analysis.active_fraction(src).tolist() == [50.0, 0.0]
    assert analysis.sparsity_change(adv, src).tolist() == [0.0, 25.0]
    assert analysis.active_iou(adv, src).tolist() == pytest.approx([1 / 3, 0.0])
    assert analysis.active_iou(src[1:], src[1:]).item() == 1.0, "both empty: identical patterns"
    assert analysis.active_fraction(adv, tol=1.5).tolist() == [25.0, 0.0]
    conv = torch.zeros(1, 2, 2, 2)
    conv[0, 1, 0, 0] = 1.0
    assert analysis.active_fraction(conv).item() == 12.5
    with pytest.raises(ValueError, match="same number of rows"):
        analysis.active_iou(adv, torch.zeros(3, 4))


@SETTINGS
@given(seed=st.integers(0, 2**16), n=st.integers(1, 6), d=st.integers(1, 40), p=st.floats(0, 1))
def test_iou_properties(seed, n, d, p):
    gen = _gen(seed)
    a = torch.relu(torch.rand(n, d, generator=gen) - p)
    b = torch.relu(torch.rand(n, d, generator=gen) - p)
    iou = analysis.active_iou(a, b)
    assert ((iou >= 0) & (iou <= 1)).all()
    assert torch.equal(iou, analysis.active_iou(b, a))
    assert (analysis.active_iou(a, a) == 1).all()
    ds = analysis.sparsity_change(a, b)
    assert torch.allclose(ds, -analysis.sparsity_change(b, a)) and (ds.abs() <= 100).all()


# --------------------------------------------------------------------------- random networks

def _check_orthonormal(w: torch.Tensor) -> None:
    m = w.reshape(w.shape[0], -1).double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    assert torch.allclose(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5)


def test_orthonormal_copy_of_caffenet(tiny_caffenet):
    before = {k: v.clone() for k, v in tiny_caffenet.state_dict().items()}
    tiny_caffenet.train()
    rnd = analysis.orthonormal_copy(tiny_caffenet, seed=3)
    assert tiny_caffenet.training, "the original's mode is untouched"
    assert all(torch.equal(before[k], v) for k, v in tiny_caffenet.state_dict().items())
    assert not rnd.training and rnd.layer_map == tiny_caffenet.layer_map
    convs = [m for m in rnd.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(convs) == 8
    for m in convs:
        _check_orthonormal(m.weight)
        assert (m.bias == 0).all()
    x = torch.rand(2, 3, 32, 32)
    assert rnd(x).shape == tiny_caffenet.eval()(x).shape
    assert forward_to(rnd, x, "conv3").shape == forward_to(tiny_caffenet, x, "conv3").shape


def test_orthonormal_copy_is_seeded():
    net = _tiny_net()
    a, b, c = (analysis.orthonormal_copy(net, seed=s) for s in (3, 3, 4))
    assert torch.equal(a[2].weight, b[2].weight)
    assert not torch.equal(a[2].weight, c[2].weight)


def test_orthonormal_copy_tall_weights_and_identity_batchnorm():
    torch.manual_seed(0)
    model = architectures.allconv_cifar()
    model.net.bn_conv1_1.running_mean.fill_(3.0)
    model.net.bn_conv1_1.running_var.fill_(7.0)
    rnd = analysis.orthonormal_copy(model)
    _check_orthonormal(rnd.net.fc.weight)
    bn = rnd.net.bn_conv1_1
    x = torch.randn(2, 32, 4, 4)
    assert torch.allclose(bn(x), x, atol=1e-6)
    assert model.net.bn_conv1_1.running_mean[0].item() == 3.0
    tall = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Conv2d(1, 20, 3))      # 8×3, 20×9: tall
    for m in analysis.orthonormal_copy(tall):
        if hasattr(m, "weight"):
            w = m.weight.reshape(m.weight.shape[0], -1).double()
            assert torch.allclose(w.T @ w, torch.eye(w.shape[1], dtype=torch.float64), atol=1e-5)
    with pytest.raises(ValueError, match="re-initialise"):
        analysis.orthonormal_copy(nn.Sequential(nn.Linear(2, 2), nn.PReLU()))


# --------------------------------------------------------------------------- inversion

def test_total_variation_known_answers():
    assert analysis.total_variation(torch.full((2, 3, 5, 5), 0.3)).tolist() == [0.0, 0.0]
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])      # one term: dx = 1, dy = 0
    assert analysis.total_variation(x).item() == 1.0
    ramp = torch.arange(4.0).repeat(4, 1)[None, None] * 0.5     # dx = 0.5, dy = 0 everywhere
    assert analysis.total_variation(ramp).item() == pytest.approx(0.25)
    assert analysis.total_variation(ramp, reduction="sum").item() == pytest.approx(0.25 * 9)
    assert analysis.total_variation(ramp, beta=1).item() == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(ValueError, match="N×C×H×W"):
        analysis.total_variation(torch.zeros(3, 5, 5))


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()).eval()


def _feature_loss(model, x, target, layer):
    with torch.no_grad():
        f = forward_to(model, x, layer).flatten(1)
    t = target.flatten(1)
    return ((f - t) ** 2).sum(1) / (t ** 2).sum(1)


def test_invert_reduces_the_feature_loss_and_stays_in_the_box():
    model = _tiny_net()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 3, 8, 8, generator=_gen(1))
    with torch.no_grad():
        target = forward_to(model, x, "3")
    out = analysis.invert(model, target, layer="3", shape=(3, 8, 8), steps=40, progress=False)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    start = torch.full_like(x, 0.5)
    assert (_feature_loss(model, out, target, "3") < 0.5 * _feature_loss(model, start, target, "3")).all()
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()), "no gradient accumulated in the model"
    again = analysis.invert(model, target.flatten(1), layer="3", shape=(3, 8, 8), steps=40, progress=False,
                            batch_size=2)
    assert torch.allclose(out, again, atol=1e-5), "deterministic; flat targets and batching agree"


def test_invert_zoo_model_uses_input_shape_and_validates(tiny_lenet):
    x = torch.rand(2, 1, 28, 28, generator=_gen(2))
    with torch.no_grad():
        target = forward_to(tiny_lenet, x, "conv1")
    out = analysis.invert(tiny_lenet, target, layer="conv1", steps=3, jitter=1, progress=False)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="values per image"):
        analysis.invert(tiny_lenet, target, layer="conv2", steps=1, progress=False)
    with pytest.raises(ValueError, match="unknown layer"):
        analysis.invert(tiny_lenet, target, layer="conv9", steps=1, progress=False)
    with pytest.raises(ValueError, match="shape="):
        analysis.invert(_tiny_net(), target, layer="1", steps=1, progress=False)
