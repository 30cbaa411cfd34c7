"""feature_linear (Sabour et al. 2016, §5): matrix-free Jacobian products and the attack."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featadv_core import features
from featadv_core.attacks import feature_linear, linf_box
from featadv_core.attacks.feature_linear import linearized_features
from featadv_core.models import architectures


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n, seed, shape, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=gen, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("builder, shape, layer", [
    ("caffenet_cifar", (3, 32, 32), "fc7"),     # LRN, grouped convs, ceil-mode pooling
    ("lenet", (1, 28, 28), "pool2"),
])
def test_matrix_free_products_match_explicit_jacobian(builder, shape, layer):
    torch.manual_seed(0)
    model = getattr(architectures, builder)().eval()
    x = _images(2, 0, shape)
    phi_s, jvp_fn, vjp_fn = linearized_features(model, x, layer=layer)

    def phi(z):
        return features.forward_to(model, z, layer).flatten(1)

    assert torch.allclose(phi_s, phi(x))
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    r = torch.randn(phi_s.shape, generator=torch.Generator().manual_seed(2))
    for i in range(2):  # each image's own Jacobian J_i (D × C·H·W), materialised
        J = torch.autograd.functional.jacobian(phi, x[i:i + 1], vectorize=True).reshape(phi_s.shape[1], -1)
        assert torch.allclose(jvp_fn(d)[i], J @ d[i].flatten(), atol=1e-4, rtol=1e-3)
        assert torch.allclose(vjp_fn(r)[i].flatten(), J.T @ r[i], atol=1e-4, rtol=1e-3)
        idx = torch.tensor([i])
        assert torch.allclose(jvp_fn(d[idx], idx)[0], J @ d[i].flatten(), atol=1e-4, rtol=1e-3)
        assert torch.allclose(vjp_fn(r[idx], idx)[0].flatten(), J.T @ r[i], atol=1e-4, rtol=1e-3)


def _linear_objective(model, x_src, x_guide, x, layer):
    phi_s, jvp_fn, _ = linearized_features(model, x_src, layer=layer)
    with torch.no_grad():
        target = features.forward_to(model, x_guide.float(), layer).flatten(1)
    return (phi_s + jvp_fn(x - x_src) - target).double().square().sum(1)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 4), dtype=st.sampled_from([torch.float32, torch.float64]),
       eps=st.sampled_from([2 / 255, 10 / 255, 0.1]), solver=st.sampled_from(["lbfgsb", "pgd"]),
       seed=st.integers(0, 1000))
def test_feature_linear_properties(n, dtype, eps, solver, seed):
    torch.manual_seed(0)
    model = architectures.lenet().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x_src, x_guide = _images(n, seed, (1, 28, 28), dtype), _images(n, seed + 1, (1, 28, 28), dtype)
    x_adv = feature_linear(model, x_src, x_guide, layer="ip1", eps=eps, steps=8, solver=solver, progress=False)
    assert x_adv.shape == x_src.shape and x_adv.dtype == dtype and x_adv.device == x_src.device
    lo, hi = linf_box(x_src, eps)
    assert bool((x_adv >= lo).all() and (x_adv <= hi).all())
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    before = _linear_objective(model, x_src.float(), x_guide, x_src.float(), "ip1")
    after = _linear_objective(model, x_src.float(), x_guide, x_adv.float(), "ip1")
    assert bool((after < before).all())
    assert not model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())
    again = feature_linear(model, x_src, x_guide, layer="ip1", eps=eps, steps=8, solver=solver, progress=False)
    assert torch.equal(x_adv, again)


def test_linear_problem_on_a_linear_layer_equals_feature_opt():
    """Up to the first layer the network *is* linear: both attacks solve the same problem.

    They reach the same objective; the iterates agree to a fraction of a grey level (float32
    rounding differs between jvp/vjp and autograd, and a few pixels lie along directions in
    which this convex problem is nearly flat, so they drift by ~1e-4 without changing it).
    """
    from featadv_core.attacks import feature_opt

    torch.manual_seed(0)
    model = architectures.lenet().eval()
    x_src, x_guide = _images(2, 5, (1, 28, 28)), _images(2, 6, (1, 28, 28))
    kw = dict(layer="conv1", eps=0.05, steps=15, progress=False)
    a = feature_linear(model, x_src, x_guide, **kw)
    b = feature_opt(model, x_src, x_guide, **kw)
    fa, fb = (_linear_objective(model, x_src, x_guide, z, "conv1") for z in (a, b))
    assert torch.allclose(fa, fb, rtol=1e-5)
    assert (a - b).abs().max() < 1e-3 and (a - b).abs().mean() < 1e-5


@pytest.mark.parametrize("kwargs, match", [
    ({"x_guide": _images(3, 1, (1, 28, 28))}, "same shape"),
    ({"eps": 0.0}, "eps"),
    ({"layer": "fc7"}, "unknown layer"),
    ({"x_src": _images(2, 0, (1, 28, 28)) + 1}, r"\[0, 1\]"),
    ({"solver": "newton"}, "valid solvers"),
])
def test_feature_linear_errors(kwargs, match):
    torch.manual_seed(0)
    model = architectures.lenet().eval()
    args = {"x_src": _images(2, 0, (1, 28, 28)), "x_guide": _images(2, 1, (1, 28, 28)), "layer": "ip1",
            "eps": 0.1, "solver": "lbfgsb"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        feature_linear(model, args.pop("x_src"), args.pop("x_guide"), steps=2, progress=False, **args)
