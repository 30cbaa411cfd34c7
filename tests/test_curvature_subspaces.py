"""Algorithm 1 (finite-difference mean Hessians), subspaces and resampling (Jetley et al. 2018)."""
from __future__ import annotations

import math

import numpy as np

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from featadv_core import analysis, defenses
from featadv_core.analysis import BoundaryPoints

D, C = 10, 3


class Quadratic(nn.Module):
    """Logits ``F_k(x) = ½ xᵀ A_k x + b_kᵀ x`` of the flattened image: known Hessians ``A_k``."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.a, self.b = nn.Parameter(a), nn.Parameter(b)

    def forward(self, x):
        z = x.flatten(1)
        return 0.5 * torch.einsum("ni,kij,nj->nk", z, self.a, z) + z @ self.b.T


def quadratic(seed: int = 0) -> Quadratic:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(C, D, D, generator=g, dtype=torch.float64)
    return Quadratic((m + m.transpose(1, 2)) / 2, torch.randn(C, D, generator=g, dtype=torch.float64)).eval()


def points(n: int = 6, seed: int = 1, target: int = 0, sources=None) -> BoundaryPoints:
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, 1, 1, D, generator=g, dtype=torch.float64)
    s = torch.tensor(sources if sources is not None else [1, 2] * (n // 2))
    return BoundaryPoints(points=z, sources=s, index=torch.arange(n), target=target, attempted=n)


def expected_mean_hessian(model: Quadratic, bp: BoundaryPoints) -> torch.Tensor:
    return (model.a[bp.target] - model.a[bp.sources].mean(0)).detach()


@pytest.mark.parametrize("h", [1e-3, 0.7, 5.0])
def test_finite_difference_operator_recovers_a_quadratics_mean_hessian_at_any_step(h):
    model, bp = quadratic(), points()
    v = torch.randn(4, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    hv = analysis.mean_hessian_product(model, bp, v, h=h)
    torch.testing.assert_close(hv, v @ expected_mean_hessian(model, bp).T, rtol=1e-9, atol=1e-9)


def test_full_build_and_topk_recover_the_eigenpairs_and_the_sign_convention():
    model, bp = quadratic(3), points()
    h_true = expected_mean_hessian(model, bp)
    lam = torch.linalg.eigvalsh(h_true).flip(0)
    full = analysis.curvature_spectrum(model, bp, h=0.5, method="full", progress=False)
    torch.testing.assert_close(full.values, lam, rtol=1e-8, atol=1e-8)
    assert full.complete and full.asymmetry < 1e-10
    # positive curvature = F_c − F_s is convex along ±v: moving either way pushes into the target
    v = full.vectors[:, 0]
    z = bp.points[0].flatten()
    mean_f = lambda t: model((z + t * v).view(1, 1, 1, D))[0]  # noqa: E731
    g = lambda t: (mean_f(t)[0] - mean_f(t)[bp.sources].mean()).item()  # noqa: E731  mean of F_c − F_s
    assert g(1.0) + g(-1.0) - 2 * g(0.0) > 0 and full.values[0] > 0


def test_topk_finds_both_ends_of_a_planted_spectrum():
    """A mean Hessian with eigenvalues 10 and −8 above a ±0.1 bulk: block Krylov gets both ends."""
    g = torch.Generator().manual_seed(6)
    q = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64)).Q
    lam = torch.cat([torch.tensor([10.0, -8.0]), torch.linspace(-0.1, 0.1, D - 2)]).double()
    a = torch.zeros(C, D, D, dtype=torch.float64)
    a[0] = q @ torch.diag(lam) @ q.T
    model, bp = Quadratic(a, torch.zeros(C, D, dtype=torch.float64)).eval(), points()
    top = analysis.curvature_spectrum(model, bp, h=0.5, method="topk", k=1, oversample=2, depth=1, progress=False)
    assert top.vectors.shape == (D, 2) and not top.complete
    torch.testing.assert_close(top.values, torch.tensor([10.0, -8.0], dtype=torch.float64), rtol=1e-3, atol=1e-3)
    assert analysis.subspace_overlap(top.vectors, q[:, :2]) > 0.999


def test_piecewise_linear_net_has_zero_exact_hessian_but_a_nonzero_odd_finite_difference():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, C)).double().eval()
    bp = points()
    v = torch.randn(3, D, dtype=torch.float64)
    x = bp.points[:1].clone().requires_grad_(True)
    cot = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)
    (g,) = torch.autograd.grad(net(x), x, grad_outputs=cot, create_graph=True)
    (hvp,) = torch.autograd.grad(g.flatten() @ v[0], x, allow_unused=True, materialize_grads=True)
    assert hvp.abs().max() == 0  # autograd says "no curvature", without any error
    fd = analysis.mean_hessian_product(net, bp, v, h=1.0)
    assert fd.abs().max() > 1e-3
    torch.testing.assert_close(analysis.mean_hessian_product(net, bp, -v, h=1.0), -fd)


def test_fd_step_is_the_authors_formula():
    x = torch.zeros(4, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0
    mean = x.mean(0)
    rng = (x - mean).max() - (x - mean).min()
    assert analysis.fd_step(x) == pytest.approx(math.sqrt(4) * rng.item() / 512 * 10)
    with pytest.raises(ValueError, match="cdiff"):
        analysis.fd_step(x, cdiff=0)


def test_boundary_points_step_back_to_the_source_side():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, C)).double().eval()
    x = torch.rand(30, 1, 1, D, dtype=torch.float64)
    bp = analysis.boundary_points(net, x, 2, max_iter=50)
    pred = net(x).argmax(1)
    assert bp.attempted == int((pred != 2).sum()) and len(bp.index) > 0
    assert torch.equal(bp.sources, pred[bp.index])
    assert bool((net(bp.points).argmax(1) != 2).all())  # 0.8 r̂ stops short of the target class
    with pytest.raises(ValueError, match="target"):
        analysis.boundary_points(net, x, 5)


def test_principal_curvatures_runs_algorithm_1_end_to_end():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, C)).double().eval()
    x = torch.rand(40, 1, 1, D, dtype=torch.float64)
    target = int((net(x).argmax(1).mode().values + 1) % C)  # a class most samples are not
    curv = analysis.principal_curvatures(net, x, target, h=0.3, n_samples=20, df_max_iter=50, progress=False)
    assert curv.complete and curv.values.shape == (D,) and bool((curv.values[:-1] >= curv.values[1:]).all())
    torch.testing.assert_close(curv.vectors.T @ curv.vectors, torch.eye(D, dtype=torch.float64))
    assert 0 < curv.n_points <= curv.attempted <= 20
    with pytest.raises(ValueError, match="method"):
        analysis.principal_curvatures(net, x, 1, h=0.3, method="lanczos")


# --- subspaces ---------------------------------------------------------------------------------------


def spectrum(dim: int = 12, complete: bool = True, target: int = 0) -> analysis.Curvatures:
    q = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(target))).Q
    lam = torch.linspace(3, -2, dim, dtype=torch.float64)
    if not complete:
        keep = torch.tensor([0, 1, dim - 2, dim - 1])
        q, lam = q[:, keep], lam[keep]
    return analysis.Curvatures(target=target, values=lam, vectors=q, method="full" if complete else "topk", h=1.0,
                               n_points=5, attempted=5, asymmetry=0.0)


def test_select_directions_follows_the_authors_strategies():
    curv = spectrum()
    v = curv.vectors
    assert torch.equal(analysis.select_directions(curv, 2, "first"), v[:, :2])
    assert torch.equal(analysis.select_directions(curv, 2, "last"), v[:, [11, 10]])
    assert analysis.select_directions(curv, 2, "first_and_last").shape == (12, 4)
    least = analysis.select_directions(curv, 1, "least")
    assert torch.equal(least, v[:, curv.values.abs().argsort()[:1]])
    assert torch.equal(analysis.select_directions(curv, 1, "most"), v[:, :1])
    with pytest.raises(ValueError, match="strategy"):
        analysis.select_directions(curv, 1, "middle")
    with pytest.raises(ValueError, match="input dimension"):
        analysis.select_directions(curv, 13, "first")


def test_flat_directions_of_a_topk_spectrum_are_orthogonal_to_the_computed_ones():
    curv = spectrum(complete=False)
    flat = analysis.select_directions(curv, 5, "least")
    assert (curv.vectors.T @ flat).abs().max() < 1e-12
    torch.testing.assert_close(flat.T @ flat, torch.eye(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="method='full'"):
        analysis.select_directions(curv, 3, "first")


@settings(max_examples=20, deadline=None)
@given(d=st.integers(1, 6), classes=st.integers(1, 4))
def test_property_union_basis_is_orthonormal_of_dimension_min_cd_d_and_projection_idempotent(d, classes):
    dim = 12
    parts = [analysis.select_directions(spectrum(dim, target=c), d, "first") for c in range(classes)]
    q = analysis.union_basis(parts)
    assert q.shape == (dim, min(classes * d, dim))
    torch.testing.assert_close(q.T @ q, torch.eye(q.shape[1], dtype=torch.float64))
    x = torch.rand(5, 1, 3, 4, dtype=torch.float64)
    mean = x.mean(0)
    once = analysis.project_images(x, mean, q)
    torch.testing.assert_close(analysis.project_images(once, mean, q), once)


def test_norm_fractions_and_the_random_baseline():
    q = torch.eye(12, dtype=torch.float64)[:, :3]
    inside = torch.zeros(2, 12, dtype=torch.float64)
    inside[:, 1] = 5.0
    outside = torch.zeros(1, 12, dtype=torch.float64)
    outside[0, 7] = 1.0
    torch.testing.assert_close(analysis.norm_fractions(inside, q), torch.ones(2, dtype=torch.float64))
    assert analysis.norm_fractions(outside, q).item() == 0
    rand = torch.randn(4000, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mean_sq = (analysis.norm_fractions(rand, q) ** 2).mean().item()
    assert mean_sq == pytest.approx(analysis.random_fraction(3, 12) ** 2, rel=0.05)


def test_projection_of_centred_training_data_needs_no_mean_add_back():
    x = torch.rand(50, 1, 3, 4, dtype=torch.float64)
    mean = x.mean(0)
    q = torch.linalg.qr(torch.randn(12, 4, dtype=torch.float64)).Q
    perp_mean = (x - mean).flatten(1).mean(0) @ (torch.eye(12, dtype=torch.float64) - q @ q.T)
    assert perp_mean.abs().max() < 1e-12  # footnote 5's term is exactly zero for train-centred data


def test_svd_directions_recover_a_planted_subspace_and_do_not_centre():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(20, 3, dtype=torch.float64, generator=g)).Q
    coef = torch.randn(500, 3, dtype=torch.float64, generator=g)
    p = coef @ basis.T + 1e-3 * torch.randn(500, 20, dtype=torch.float64, generator=g)
    vectors, sv = analysis.svd_directions([p[:200], p[200:]])
    assert analysis.subspace_overlap(vectors[:, :3], basis) > 0.99
    assert bool((sv[:-1] >= sv[1:]).all())
    shifted = torch.ones(100, 20, dtype=torch.float64) + 1e-2 * torch.randn(100, 20, dtype=torch.float64, generator=g)
    top, _ = analysis.svd_directions(shifted)
    ones = torch.ones(20, 1, dtype=torch.float64) / math.sqrt(20)
    assert analysis.subspace_overlap(top[:, :1], ones) > 0.99  # the common mean direction is kept


# --- resampling ----------------------------------------------------------------------------------------


def test_resampling_is_linear_identity_at_full_size_and_antialiased():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    mean = torch.rand(3, 32, 32, generator=g)
    assert torch.equal(defenses.resample(x, 32, mean=mean), x)
    r = lambda t: defenses.resample(t, 17, mean=mean) - mean  # noqa: E731
    torch.testing.assert_close(r(mean + 2 * (x - mean) + 3 * (y - mean)),
                               2 * r(x) + 3 * r(y), rtol=1e-5, atol=1e-5)
    plain = torch.nn.functional.interpolate(x - mean, size=(17, 17), mode="bicubic", align_corners=False)
    plain = torch.nn.functional.interpolate(plain, size=(32, 32), mode="bicubic", align_corners=False)
    assert (r(x) - plain).abs().max() > 1e-3  # the anti-aliased path, not plain bicubic
    with pytest.raises(ValueError, match="only down-samples"):
        defenses.resample(x, 40)


def test_resampled_network_is_net_after_r():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    mean = torch.rand(3, 16, 16)
    wrapped = defenses.Resampled(net, 9, mean)
    x = torch.rand(5, 3, 16, 16)
    torch.testing.assert_close(wrapped(x), net(defenses.resample(x, 9, mean=mean)))


# --- traces ----------------------------------------------------------------------------------------------


def test_trace_summaries_on_known_curves():
    s = np.linspace(-3, 3, 61)
    parabola = (s - 0.5) ** 2
    rho_pos, rho_neg = analysis.half_line_trend(s, s ** 2)
    assert rho_pos == pytest.approx(1.0) and rho_neg == pytest.approx(1.0)
    corr, s0 = analysis.symmetry(s, parabola)
    assert corr == pytest.approx(1.0) and s0 == pytest.approx(0.5)
    assert analysis.symmetry(s, s)[0] < 0  # a line is anti-symmetric about every point
    shifted = np.stack([s ** 2 + c for c in (0.0, 1.0, -2.0)])
    assert analysis.shape_spread(shifted, zero_index=30) == pytest.approx(0.0, abs=1e-12)
    assert analysis.shape_spread(np.stack([s ** 2, -(s ** 2)]), zero_index=30) > 0.5


def test_scores_along_moves_images_along_a_unit_direction():
    net = nn.Sequential(nn.Flatten(), nn.Linear(D, C)).double()
    x = torch.rand(4, 1, 1, D, dtype=torch.float64)
    d = torch.randn(D, dtype=torch.float64)
    out = analysis.scores_along(net, x.float(), d.float() * 7, [0.0, 1.0])
    step = net[1].weight.float() @ (d / d.norm()).float()
    torch.testing.assert_close(out[:, 1] - out[:, 0], step.expand(4, C), rtol=1e-4, atol=1e-4)
