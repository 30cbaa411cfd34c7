"""The batched box-constrained solver: known answers, per-pair convergence, bounds, dtypes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from featadv_core.attacks import minimize_box


pytestmark = pytest.mark.usefixtures("one_thread")


def _quadratic(B: int, n: int, seed: int, dtype=torch.float64):
    """``f_b(x) = ½ xᵀA_b x − b_bᵀx`` with SPD ``A_b`` (condition ≈ 10²), box [−½, ½]."""
    gen = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(B, n, n, generator=gen, dtype=torch.float64))[0]
    spectrum = torch.logspace(-1, 1, n, dtype=torch.float64)
    A = Q @ torch.diag_embed(spectrum.expand(B, n)) @ Q.transpose(1, 2)
    b = torch.randn(B, n, generator=gen, dtype=torch.float64) * 2
    lo = torch.full((B, n), -0.5, dtype=torch.float64)
    hi = torch.full((B, n), 0.5, dtype=torch.float64)
    return A.to(dtype), b.to(dtype), lo.to(dtype), hi.to(dtype)


def _reference(A, b, lo, hi):
    """scipy's L-BFGS-B to high accuracy, pair by pair."""
    out = []
    for Ai, bi, li, hi_ in zip(A.double().numpy(), b.double().numpy(), lo.double().numpy(), hi.double().numpy()):
        res = minimize(lambda z: (0.5 * z @ Ai @ z - bi @ z, Ai @ z - bi), np.zeros_like(bi), jac=True,
                       method="L-BFGS-B", bounds=list(zip(li, hi_)),
                       options={"ftol": 0, "gtol": 1e-12, "maxiter": 10_000})
        out.append(res.x)
    return torch.tensor(np.array(out))


def _quad_vg(A, b, lo, hi, log=None):
    def vg(x, idx):
        assert bool((x >= lo[idx]).all()) and bool((x <= hi[idx]).all()), "iterate left the box"
        if log is not None:
            log.append(idx.tolist())
        Ax = torch.bmm(A[idx], x.unsqueeze(2)).squeeze(2)
        return 0.5 * (x * Ax).sum(1) - (b[idx] * x).sum(1), Ax - b[idx]
    return vg


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.float32, 1e-2)])
def test_solves_box_constrained_quadratic(dtype, tol):
    A, b, lo, hi = _quadratic(4, 20, seed=1, dtype=dtype)
    x, info = minimize_box(_quad_vg(A, b, lo, hi), torch.zeros_like(b), lo, hi, max_iter=500,
                           gtol=1e-9 if dtype == torch.float64 else 1e-5, ftol=0)
    ref = _reference(A, b, lo, hi)
    assert x.dtype == dtype and x.shape == b.shape
    assert (x.double() - ref).abs().max().item() < tol
    active = ((ref <= -0.5 + 1e-9) | (ref >= 0.5 - 1e-9)).sum().item()
    assert active > 0, "the test problem should have active bounds"
    f_ref = (0.5 * torch.einsum("bi,bij,bj->b", ref, A.double(), ref) - (b.double() * ref).sum(1))
    assert torch.allclose(info["loss"].double(), f_ref, rtol=tol * 1e-2, atol=tol * 1e-2)
    if dtype == torch.float64:
        assert bool(info["converged"].all())


def test_separable_quadratic_analytic_solution():
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(3, 50, generator=gen, dtype=torch.float64) * 10 + 0.1
    c = torch.randn(3, 50, generator=gen, dtype=torch.float64)
    lo, hi = torch.full_like(c, -0.3), torch.full_like(c, 0.7)

    def vg(x, idx):
        r = x - c[idx]
        return 0.5 * (a[idx] * r * r).sum(1), a[idx] * r

    x, _ = minimize_box(vg, torch.zeros_like(c), lo, hi, max_iter=200, gtol=1e-12, ftol=0)
    assert torch.allclose(x, c.clamp(-0.3, 0.7), atol=1e-8)


def test_per_pair_convergence_drops_finished_pairs():
    A, b, lo, hi = _quadratic(4, 15, seed=2)
    ref = _reference(A, b, lo, hi)
    x0 = torch.zeros_like(b)
    x0[1] = ref[1]                          # pair 1 starts at its solution
    b = b.clone()
    b[2] = b[2] * 1e-3                      # pair 2: an easy, almost unconstrained problem
    log: list[list[int]] = []
    x, info = minimize_box(_quad_vg(A, b, lo, hi, log), x0, lo, hi, max_iter=300, gtol=1e-6)
    assert log[0] == [0, 1, 2, 3]
    # every pair is evaluated exactly n_evals times, and never again once it has stopped
    counts = [sum(i in call for call in log) for i in range(4)]
    assert counts == info["n_evals"].tolist()
    for i in range(4):
        last = max(k for k, call in enumerate(log) if i in call)
        assert all(i not in call for call in log[last + 1:])
    assert info["n_iter"][1].item() <= 1 and info["n_evals"][1].item() <= 2
    assert len(set(info["n_iter"].tolist())) > 1
    assert any(len(call) < 4 for call in log), "finished pairs must be dropped from evaluations"


def test_max_iter_is_respected_and_zero_returns_start():
    A, b, lo, hi = _quadratic(2, 10, seed=4)
    x0 = torch.full_like(b, 2.0)  # outside the box: projected
    x, info = minimize_box(_quad_vg(A, b, lo, hi), x0, lo, hi, max_iter=0)
    assert torch.equal(x, torch.full_like(b, 0.5)) and info["n_iter"].tolist() == [0, 0]
    x, info = minimize_box(_quad_vg(A, b, lo, hi), torch.zeros_like(b), lo, hi, max_iter=3, gtol=0, ftol=0)
    assert info["n_iter"].max().item() <= 3


def test_rosenbrock_in_a_box():
    """Non-convex: the box-constrained minimum of Rosenbrock with x ≤ 0.5 is (0.5, 0.25)."""
    lo = torch.tensor([[-2.0, -2.0]], dtype=torch.float64).expand(3, 2)
    hi = torch.tensor([[0.5, 2.0]], dtype=torch.float64).expand(3, 2)

    def vg(z, idx):
        x, y = z[:, 0], z[:, 1]
        f = (1 - x) ** 2 + 100 * (y - x * x) ** 2
        g = torch.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)], 1)
        return f, g

    x0 = torch.tensor([[-1.2, 1.0], [0.0, 0.0], [-2.0, 2.0]], dtype=torch.float64)
    x, info = minimize_box(vg, x0, lo, hi, max_iter=500, gtol=1e-10, ftol=0)
    assert torch.allclose(x, torch.tensor([[0.5, 0.25]], dtype=torch.float64).expand(3, 2), atol=1e-5)


def test_wrong_gradient_terminates():
    """A gradient that points uphill makes every line search fail: the solver must stop."""
    lo, hi = -torch.ones(2, 5), torch.ones(2, 5)
    x, info = minimize_box(lambda x, idx: (((x - 0.3) ** 2).sum(1), -2 * (x - 0.3)),
                           torch.zeros(2, 5), lo, hi, max_iter=50, max_ls=5)
    assert torch.equal(x, torch.zeros(2, 5))
    assert info["n_evals"].max().item() <= 1 + 5 and not bool(info["converged"].any())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    c = torch.linspace(-1, 1, 24).view(2, 3, 2, 2)
    lo, hi = torch.full_like(c, -0.5).to(dtype), torch.full_like(c, 0.5).to(dtype)
    seen = []

    def vg(x, idx):
        seen.append(x.dtype)
        assert bool((x >= lo[idx]).all() and (x <= hi[idx]).all())
        r = x.float() - c[idx]
        return (r * r).flatten(1).sum(1), 2 * r

    x, info = minimize_box(vg, torch.zeros_like(c, dtype=dtype), lo, hi, max_iter=50)
    assert x.dtype == dtype and x.shape == c.shape and set(seen) == {dtype}
    assert torch.allclose(x.float(), c.clamp(-0.5, 0.5), atol=1e-2)


def test_progress_bar_runs(capsys):
    A, b, lo, hi = _quadratic(2, 6, seed=5)
    x, info = minimize_box(_quad_vg(A, b, lo, hi), torch.zeros_like(b), lo, hi, max_iter=20, progress=True,
                           desc="quadratic")
    assert info["n_iter"].min().item() >= 1


def test_invalid_options():
    lo, hi = torch.zeros(1, 2), torch.ones(1, 2)
    vg = lambda x, idx: ((x * x).sum(1), 2 * x)  # noqa: E731
    with pytest.raises(ValueError, match="history"):
        minimize_box(vg, torch.zeros(1, 2), lo, hi, max_iter=5, history=0)
    with pytest.raises(ValueError, match="bounds"):
        minimize_box(vg, torch.zeros(1, 2), hi, lo - 1, max_iter=5)


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 4), n=st.integers(1, 25), seed=st.integers(0, 10_000),
       dtype=st.sampled_from([torch.float32, torch.float64]))
@example(B=2, n=4, seed=167, dtype=torch.float32)  # once stopped early on a non-descent refined step
def test_property_within_bounds_and_near_optimal(B, n, seed, dtype):
    A, b, lo, hi = _quadratic(B, n, seed, dtype)
    gen = torch.Generator().manual_seed(seed)
    x0 = (torch.rand(B, n, generator=gen, dtype=torch.float64) - 0.5).to(dtype)
    vg = _quad_vg(A, b, lo, hi)
    x, info = minimize_box(vg, x0, lo, hi, max_iter=300)
    assert x.dtype == dtype and x.shape == x0.shape
    assert bool((x >= lo).all()) and bool((x <= hi).all())
    f0, _ = vg(x0, torch.arange(B))
    f, _ = vg(x, torch.arange(B))
    assert bool((f <= f0 + 1e-6).all())
    ref = _reference(A, b, lo, hi).to(dtype)
    f_ref, _ = vg(ref.clamp(-0.5, 0.5), torch.arange(B))
    assert bool((f - f_ref <= 1e-4 * (1 + f_ref.abs())).all())


# --------------------------------------------------------------------------- L-BFGS-B internals

def _memory(n=7, m=3, seed=0):
    """Two pairs' L-BFGS memories in float64: pair 0 full with slots out of time order, pair 1
    with one empty slot; ``y = A s`` with ``A`` SPD so every ``sᵀy > 0``. Also returns the
    dense L-BFGS Hessians built by the BFGS recursion from ``θI`` in time order."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(seed)
    stamps = torch.tensor([[5, 3, 4], [2, -1, 1]])
    W = torch.zeros(2, 2 * m, n, dtype=torch.float64)
    dense = []
    for b in range(2):
        Q = torch.randn(n, n, generator=g, dtype=torch.float64)
        A = Q @ Q.T + n * torch.eye(n, dtype=torch.float64)
        for j in range(m):
            if stamps[b, j] >= 0:
                s = torch.randn(n, generator=g, dtype=torch.float64)
                W[b, j], W[b, m + j] = s, A @ s
        order = [j for j in sorted(range(m), key=lambda j: int(stamps[b, j])) if stamps[b, j] >= 0]
        s_new, y_new = W[b, order[-1]], W[b, m + order[-1]]
        B = (y_new @ y_new) / (s_new @ y_new) * torch.eye(n, dtype=torch.float64)
        for j in order:
            s, y = W[b, j], W[b, m + j]
            Bs = B @ s
            B = B - torch.outer(Bs, Bs) / (s @ Bs) + torch.outer(y, y) / (y @ s)
        dense.append(B)
    S, Y = W[:, :m], W[:, m:]
    st = SimpleNamespace(W=W, stamp=stamps, SS=S @ S.transpose(1, 2), SY=S @ Y.transpose(1, 2),
                         YY=Y @ Y.transpose(1, 2))
    return st, torch.stack(dense)


def test_compact_hessian_equals_bfgs_recursion():
    from featadv_core.attacks.lbfgsb import _compact

    st, dense = _memory()
    B = _compact(st, 3)
    compact = B.theta[:, None, None] * torch.eye(7, dtype=torch.float64) \
        - B.W.transpose(1, 2) @ B.M @ B.W
    assert torch.allclose(compact, dense, atol=1e-8 * dense.abs().max())


def _cauchy_reference(x, g, lo, hi, B):
    """Algorithm CP walked breakpoint by breakpoint with the dense Hessian ``B`` (one pair)."""
    t = torch.where(g < 0, (x - hi) / g, torch.where(g > 0, (x - lo) / g, torch.full_like(x, float("inf"))))
    d = torch.where(t > 0, -g, torch.zeros_like(g))
    z, t_old = x.clone(), 0.0
    for tb in sorted(set(t[(t > 0) & torch.isfinite(t)].tolist())) + [float("inf")]:
        if not bool(d.any()):                               # every variable at a bound
            return z
        slope = (g + B @ (z - x)) @ d
        curv = d @ B @ d
        step = -slope / curv if curv > 0 else float("inf")
        if step < tb - t_old:
            return z + max(step, 0.0) * d
        z = z + (tb - t_old) * d
        hit = t == tb
        z[hit] = torch.where(g[hit] < 0, hi[hit], lo[hit])
        d[hit] = 0.0
        t_old = tb
    return z


@pytest.mark.parametrize("prefix", [64, 2])
@pytest.mark.parametrize("scale", [0.5, 4.0, 40.0])  # stops before / among / after the breakpoints
def test_cauchy_point_matches_sequential_walk(prefix, scale):
    """The vectorised walk (and its prefix shortcut, forced by ``prefix=2``) is Algorithm CP."""
    from featadv_core.attacks.lbfgsb import _cauchy_point, _compact

    st, dense = _memory()
    B = _compact(st, 3)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 7, generator=g, dtype=torch.float64)
    lo, hi = x - 0.3 * torch.rand(2, 7, generator=g, dtype=torch.float64), x + 0.05
    lo[0, 0] = x[0, 0]                                      # a variable at its lower bound
    grad = scale * torch.randn(2, 7, generator=g, dtype=torch.float64)
    grad[0, 0] = abs(grad[0, 0])                            # ... pushed outwards: fixed at t = 0
    xc, c, free = _cauchy_point(x, grad, lo, hi, B, prefix=prefix)
    for b in range(2):
        ref = _cauchy_reference(x[b], grad[b], lo[b], hi[b], dense[b])
        assert torch.allclose(xc[b], ref, atol=1e-9), (b, xc[b], ref)
    assert torch.allclose(c, (B.W @ (xc - x).unsqueeze(2)).squeeze(2), atol=1e-9)
    assert torch.equal(free, (xc > lo) & (xc < hi)) and not free[0, 0]


def test_subspace_step_minimises_the_model_on_the_free_variables():
    from featadv_core.attacks.lbfgsb import _compact, _subspace_step

    st, dense = _memory()
    B = _compact(st, 3)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 7, generator=g, dtype=torch.float64)
    grad = torch.randn(2, 7, generator=g, dtype=torch.float64)
    free = torch.tensor([[True, False, True, True, False, True, True]] * 2)
    lo, hi = x - 100.0, x + 100.0                           # wide: the projection never binds
    xc = x + 0.01 * torch.randn(2, 7, generator=g, dtype=torch.float64)
    c = (B.W @ (xc - x).unsqueeze(2)).squeeze(2)
    xbar = _subspace_step(x, grad, lo, hi, xc, c, free, B)
    for b in range(2):
        F = free[b]
        r = (grad[b] + dense[b] @ (xc[b] - x[b]))[F]
        expected = xc[b].clone()
        expected[F] += -torch.linalg.solve(dense[b][F][:, F], r)
        assert torch.allclose(xbar[b], expected, atol=1e-8)
