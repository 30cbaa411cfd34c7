"""feature_opt (Sabour et al. 2016, Eq. 1–2) and the solvers behind it, on tiny random models."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featadv_core import features
from featadv_core.attacks import feature_opt, linf_box, solve
from featadv_core.models import architectures


pytestmark = pytest.mark.usefixtures("one_thread")


def _lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return architectures.lenet().eval()


def _images(n: int, seed: int, dtype=torch.float32, shape=(1, 28, 28)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=gen, dtype=torch.float64).to(dtype)


def _distance(model, x, x_guide, layer) -> torch.Tensor:
    with torch.no_grad():
        fa = features.forward_to(model, x.float(), layer).flatten(1).double()
        fg = features.forward_to(model, x_guide.float(), layer).flatten(1).double()
    return (fa - fg).square().sum(1)


def _model_snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(m.training) for m in model.modules()],
            [(p.requires_grad, p.grad) for p in model.parameters()])


def _assert_untouched(model, snap):
    state, modes, grads = snap
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert [m.training for m in model.modules()] == modes
    assert [(p.requires_grad, p.grad) for p in model.parameters()] == grads


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 4), dtype=st.sampled_from([torch.float32, torch.float64]),
       eps=st.sampled_from([2 / 255, 10 / 255, 0.1]), solver=st.sampled_from(["lbfgsb", "pgd", "scipy"]),
       layer=st.sampled_from(["ip1", "pool2"]), seed=st.integers(0, 1000))
def test_feature_opt_properties(n, dtype, eps, solver, layer, seed):
    model = _lenet()
    snap = _model_snapshot(model)
    x_src, x_guide = _images(n, seed, dtype), _images(n, seed + 1, dtype)
    x_adv = feature_opt(model, x_src, x_guide, layer=layer, eps=eps, steps=8, solver=solver, progress=False)
    assert x_adv.shape == x_src.shape and x_adv.dtype == dtype and x_adv.device == x_src.device
    lo, hi = linf_box(x_src, eps)  # exact box (tests/test_attacks_box.py)
    assert bool((x_adv >= lo).all()) and bool((x_adv <= hi).all())
    assert bool((x_adv >= 0).all()) and bool((x_adv <= 1).all())
    assert bool(((x_adv - x_src).abs() <= eps).all())
    assert bool((_distance(model, x_adv, x_guide, layer) < _distance(model, x_src, x_guide, layer)).all())
    _assert_untouched(model, snap)
    again = feature_opt(model, x_src, x_guide, layer=layer, eps=eps, steps=8, solver=solver, progress=False)
    assert torch.equal(x_adv, again)


def test_float64_model_and_per_pair_eps():
    model = _lenet().double()
    x_src, x_guide = _images(3, 0, torch.float64), _images(3, 1, torch.float64)
    eps = torch.tensor([1 / 255, 5 / 255, 20 / 255])
    x_adv = feature_opt(model, x_src, x_guide, layer="ip1", eps=eps, steps=10, progress=False)
    assert x_adv.dtype == torch.float64
    assert bool(((x_adv - x_src).abs().flatten(1).amax(1) <= eps.double()).all())
    assert bool((_distance(model.float(), x_adv, x_guide, "ip1") <
                 _distance(model.float(), x_src, x_guide, "ip1")).all())


def test_quantize_returns_8bit_images_in_the_box():
    model = _lenet()
    x_src = torch.round(_images(2, 3) * 255) / 255
    x_guide = _images(2, 4)
    eps = 8 / 255
    x_adv = feature_opt(model, x_src, x_guide, layer="ip1", eps=eps, steps=10, quantize=True, progress=False)
    lo, hi = linf_box(x_src, eps)
    assert bool((x_adv >= lo).all() and (x_adv <= hi).all())
    grid = (torch.arange(256, dtype=torch.float64) / 255).float()
    assert bool(torch.isin(x_adv, grid).all())
    assert bool((_distance(model, x_adv, x_guide, "ip1") < _distance(model, x_src, x_guide, "ip1")).all())


def test_mode_and_parameters_untouched_in_train_mode():
    model = _lenet().train()
    for p in list(model.parameters())[:2]:
        p.requires_grad_(False)
    snap = _model_snapshot(model)
    feature_opt(model, _images(2, 5), _images(2, 6), layer="ip1", eps=0.05, steps=3, progress=False)
    _assert_untouched(model, snap)
    assert model.training


def test_progress_bar(capsys):
    model = _lenet()
    feature_opt(model, _images(1, 7), _images(1, 8), layer="ip1", eps=0.05, steps=3, progress=True)


@pytest.mark.parametrize("kwargs, match", [
    ({"x_guide": _images(3, 1)}, "same shape"),
    ({"eps": 0.0}, "eps"),
    ({"eps": -1 / 255}, "eps"),
    ({"layer": "fc7"}, "unknown layer.*valid layers: conv1"),
    ({"x_src": _images(2, 0) * 2}, r"x_src must have values in \[0, 1\]"),
    ({"x_guide": _images(2, 1) - 1}, r"x_guide must have values in \[0, 1\]"),
    ({"x_src": _images(2, 0)[0]}, "4-D"),
    ({"solver": "adam"}, "unknown solver 'adam'; valid solvers: scipy, lbfgsb, pgd"),
])
def test_feature_opt_errors(kwargs, match):
    args = {"x_src": _images(2, 0), "x_guide": _images(2, 1), "layer": "ip1", "eps": 0.1, "solver": "lbfgsb"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        feature_opt(_lenet(), args.pop("x_src"), args.pop("x_guide"), steps=2, progress=False, **args)


def test_lbfgsb_matches_scipy_objective():
    """Same problem, same iteration budget: the batched solver is within 2 % of the paper's (median)."""
    model = _lenet()
    x_src, x_guide = _images(6, 10), _images(6, 11)
    d = {}
    for solver in ("scipy", "lbfgsb"):
        x_adv = feature_opt(model, x_src, x_guide, layer="ip1", eps=0.1, steps=20, solver=solver, progress=False)
        d[solver] = _distance(model, x_adv, x_guide, "ip1")
    assert (d["lbfgsb"] / d["scipy"]).median().item() <= 1.02
    assert bool((d["scipy"] < _distance(model, x_src, x_guide, "ip1")).all())


def _quad(B=3, n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    M = torch.randn(B, n, n, generator=gen, dtype=torch.float64)
    A = M @ M.transpose(1, 2) / n + 0.5 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(B, n, generator=gen, dtype=torch.float64) * 3

    def vg(x, idx):
        Ax = torch.bmm(A[idx], x.unsqueeze(2)).squeeze(2)
        return 0.5 * (x * Ax).sum(1) - (b[idx] * x).sum(1), Ax - b[idx]
    return vg, torch.zeros(B, n, dtype=torch.float64), torch.full((B, n), -0.4, dtype=torch.float64), \
        torch.full((B, n), 0.4, dtype=torch.float64)


@pytest.mark.parametrize("solver", ["scipy", "lbfgsb", "pgd"])
def test_solve_dispatch(solver):
    vg, x0, lo, hi = _quad()
    x, info = solve(solver, vg, x0, lo, hi, steps=200)
    assert x.shape == x0.shape and x.dtype == x0.dtype
    assert bool((x >= lo).all() and (x <= hi).all())
    assert set(info) >= {"loss", "n_iter", "n_evals"}
    f, _ = vg(x, torch.arange(3))
    f0, _ = vg(x0, torch.arange(3))
    assert bool((f < f0).all())
    if solver != "pgd":
        ref, _ = solve("scipy", vg, x0, lo, hi, steps=1000, gtol=1e-12, ftol=0)
        assert torch.allclose(x, ref, atol=1e-4)


def test_solve_unknown_solver():
    vg, x0, lo, hi = _quad()
    with pytest.raises(ValueError, match="valid solvers: scipy, lbfgsb, pgd"):
        solve("lbfgs", vg, x0, lo, hi, steps=3)
