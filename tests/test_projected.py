"""The attacks' one projected loop (attacks/projected.py) and the loops that now run on it."""
from __future__ import annotations

import math

import pytest
import torch

from featadv_core.attacks import projected, solvers
from featadv_core.attacks.projected import Iterate, projected_descent


def _quadratic(target):
    """Per-image loss ‖v − target‖², with its success flag never set (a pure minimisation)."""
    def evaluate(v, with_grads=False):
        r = v[0] - target
        loss = r.pow(2).flatten(1).sum(1)
        none = torch.zeros(len(loss), dtype=torch.bool)
        return Iterate(loss=loss, success=none, rank=loss.detach(), output=v[0].detach(),
                       grads=[2 * r.detach()] if with_grads else None)
    return evaluate


def test_supplied_gradients_equal_autograd():
    """A caller with its own gradients (a batched value_and_grad) walks the same path as autograd."""
    target = torch.randn(4, 3)
    ev = _quadratic(target)
    kw = dict(project=lambda v: v[0].clamp_(-0.5, 0.5), steps=300, lr=0.05)
    auto = projected_descent(ev, [torch.zeros(4, 3)], **kw)
    given = projected_descent(lambda v: ev(v, with_grads=True), [torch.zeros(4, 3)], **kw)
    torch.testing.assert_close(given.output, auto.output, rtol=0, atol=1e-7)
    torch.testing.assert_close(auto.output, target.clamp(-0.5, 0.5), rtol=0, atol=1e-3)


def test_cosine_schedule_with_one_step_per_image():
    """Sign steps make the schedule visible: after t steps an image moved Σ lr_i·½(1+cos(πs/T))."""
    lr = torch.tensor([0.01, 0.02])
    res = projected_descent(lambda v: Iterate(loss=-v[0].sum(1), success=torch.zeros(2, dtype=torch.bool),
                                              rank=torch.zeros(2), output=v[0].detach()),
                            [torch.zeros(2, 1)], project=lambda v: None, steps=4, lr=lr, method="sign",
                            schedule="cosine", keep="last")
    moved = sum(0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4))
    torch.testing.assert_close(res.variables[0].flatten(), lr * moved)


def test_curve_is_a_cpu_tensor_of_fractions():
    res = projected_descent(_quadratic(torch.ones(3, 2)), [torch.zeros(3, 2)], project=lambda v: None, steps=5,
                            lr=0.1)
    assert res.curve.shape == (6,) and res.curve.device.type == "cpu" and bool((res.curve == 0).all())
    assert projected_descent(_quadratic(torch.ones(3, 2)), [torch.zeros(3, 2)], project=lambda v: None, steps=0,
                             lr=0.1, keep="last").curve.numel() == 0


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="schedule"):
        projected_descent(_quadratic(torch.ones(1, 1)), [torch.zeros(1, 1)], project=lambda v: None, steps=1,
                          lr=0.1, schedule="step")
    with pytest.raises(ValueError, match="lr"):
        projected_descent(_quadratic(torch.ones(2, 1)), [torch.zeros(2, 1)], project=lambda v: None, steps=1,
                          lr=torch.tensor([0.1, 0.0]))


def test_the_pgd_solver_and_the_inversion_run_on_the_one_loop(monkeypatch):
    """No second copy of the projected-Adam loop: both call projected_descent."""
    from featadv_core.analysis import inversion

    calls = []
    real = projected.projected_descent

    def spy(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        return real(*args, **kwargs)

    monkeypatch.setattr(solvers, "projected_descent", spy)
    monkeypatch.setattr(inversion, "projected_descent", spy)
    target = torch.rand(3, 1, 2, 2)

    def value_and_grad(x, idx):
        r = x - target[idx]
        return r.pow(2).flatten(1).sum(1), 2 * r

    lo, hi = torch.zeros_like(target), torch.full_like(target, 0.5)
    x, info = solvers.solve("pgd", value_and_grad, torch.zeros_like(target), lo, hi, steps=200)
    torch.testing.assert_close(x, target.clamp(max=0.5), rtol=0, atol=2e-3)
    assert bool((x >= lo).all() and (x <= hi).all()) and info["loss"].shape == (3,)

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    inversion.invert(net, net(target).detach(), layer="1", shape=(1, 2, 2), steps=3, progress=False)
    assert calls == ["projected Adam", "inverting 1"]
