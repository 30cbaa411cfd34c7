"""label_opt: Szegedy et al.'s box-constrained L-BFGS label adversaries, on tiny random models."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featadv_core.attacks import label_opt, linf_box
from featadv_core.models import architectures


pytestmark = pytest.mark.usefixtures("one_thread")


def _lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return architectures.lenet().eval()


def _images(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=gen, dtype=torch.float64).to(dtype)


def _targets(model, x):
    """A label other than the current prediction, per image."""
    with torch.no_grad():
        pred = model(x.float()).argmax(1)
    return (pred + 3) % 10


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 4), dtype=st.sampled_from([torch.float32, torch.float64]),
       eps=st.sampled_from([None, 0.3]), solver=st.sampled_from(["lbfgsb", "pgd"]), seed=st.integers(0, 1000))
def test_label_opt_properties(n, dtype, eps, solver, seed):
    model = _lenet()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x_src = _images(n, seed, dtype)
    target = _targets(model, x_src)
    x_adv = label_opt(model, x_src, target, steps=30, search_steps=3, solver=solver, eps=eps, progress=False)
    assert x_adv.shape == x_src.shape and x_adv.dtype == dtype and x_adv.device == x_src.device
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    if eps is not None:
        lo, hi = linf_box(x_src, eps)
        assert bool((x_adv >= lo).all() and (x_adv <= hi).all())
    with torch.no_grad():
        assert bool((model(x_adv.float()).argmax(1) == target).all()), "easy toy problem: target reached"
    assert not model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    again = label_opt(model, x_src, target, steps=30, search_steps=3, solver=solver, eps=eps, progress=False)
    assert torch.equal(x_adv, again)


def test_search_shrinks_the_perturbation():
    """More search steps on c find successful adversaries that are no larger (smallest-norm kept)."""
    model = _lenet()
    x_src = _images(3, 1)
    target = _targets(model, x_src)
    one = label_opt(model, x_src, target, steps=40, search_steps=1, c_init=0.01, progress=False)
    more = label_opt(model, x_src, target, steps=40, search_steps=4, c_init=0.01, progress=False)
    with torch.no_grad():
        assert bool((model(one).argmax(1) == target).all()) and bool((model(more).argmax(1) == target).all())
    n1 = (one - x_src).flatten(1).norm(dim=1)
    n4 = (more - x_src).flatten(1).norm(dim=1)
    assert bool((n4 <= n1 + 1e-6).all()) and bool((n4 < n1).any())


def test_unreachable_target_returns_last_attempt_in_box():
    model = _lenet()
    x_src = _images(2, 2)
    target = _targets(model, x_src)
    x_adv = label_opt(model, x_src, target, steps=5, search_steps=2, eps=1e-4, progress=False)
    lo, hi = linf_box(x_src, 1e-4)
    assert bool((x_adv >= lo).all() and (x_adv <= hi).all())
    assert not torch.equal(x_adv, x_src)  # the last attempt, not the untouched source


def test_int_target_and_errors():
    model = _lenet()
    x_src = _images(2, 3)
    x_adv = label_opt(model, x_src, 4, steps=10, search_steps=1, progress=False)
    assert x_adv.shape == x_src.shape
    with pytest.raises(ValueError, match="target must be classes in"):
        label_opt(model, x_src, 10, steps=2, progress=False)
    with pytest.raises(ValueError, match=r"one class per image \(2\)"):
        label_opt(model, x_src, torch.tensor([1, 2, 3]), steps=2, progress=False)
    with pytest.raises(ValueError, match="c_init"):
        label_opt(model, x_src, 1, c_init=0.0, steps=2, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        label_opt(model, x_src + 1, 1, steps=2, progress=False)
    with pytest.raises(ValueError, match="eps"):
        label_opt(model, x_src, 1, eps=-0.1, steps=2, progress=False)
    with pytest.raises(ValueError, match="valid solvers"):
        label_opt(model, x_src, 1, solver="sgd", steps=2, progress=False)
