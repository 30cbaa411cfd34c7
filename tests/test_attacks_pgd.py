"""PGD's top-k criterion and named objectives (chapter 3's Table 2 scores its (u,5) column by top-5)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from featadv_core import runs
from featadv_core.attacks import margin_loss, pgd
from featadv_core.attacks.pgd import cross_entropy_objective, margin_objective


def _linear(seed: int, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, classes)).eval()


def _in_top_k(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Reference: the label's rank (the number of classes with a strictly larger logit) is below k."""
    own = logits.gather(1, labels[:, None])
    return (logits > own).sum(1) < k


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), topk=st.integers(1, 6), objective=st.sampled_from(["ce", "margin"]),
       eps=st.sampled_from([0.05, 0.2, 0.5]), steps=st.integers(1, 6))
def test_top_k_success_means_the_label_is_not_among_the_k_best(seed, topk, objective, eps, steps):
    model = _linear(seed)
    x = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(seed + 1))
    adv, ok, curve = pgd(model, x, y, eps=eps, steps=steps, topk=topk, objective=objective,
                         generator=torch.Generator().manual_seed(seed), details=True)
    assert adv.shape == x.shape and (adv - x).abs().max() <= eps and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        logits = model(adv)
    assert torch.equal(ok, ~_in_top_k(logits, y, topk))  # (no ties among random float logits)
    assert curve[-1].item() == pytest.approx(ok.float().mean().item())


def test_the_margin_objective_pushes_the_label_out_of_the_top_k():
    """Known answers on a 10-class linear model: with room enough (ε = 0.5) top-5 PGD on the top-5 margin
    succeeds on every image; at ε = 0.1 it succeeds far more often than the top-1 cross-entropy attack
    scored by top-5 (Table 2's (u,5) PGD before the fix)."""
    def attack(seed, eps, **kw):
        model = _linear(seed)
        with torch.no_grad():
            model[1].weight.mul_(20)
        x = torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        y = model(x).argmax(1)
        adv = pgd(model, x, y, eps=eps, steps=20, step_size=eps / 8, **kw)
        return (~_in_top_k(model(adv), y, 5)).float().mean().item()

    assert attack(0, 0.5, topk=5, objective="margin") == 1.0
    assert attack(1, 0.1, topk=5, objective="margin") >= 0.25
    assert attack(1, 0.1) <= 0.1  # the top-1 attack leaves the label among the five best on most images


def test_margin_objective_known_answers():
    logits = torch.tensor([[5.0, 4.0, 3.0, 0.0], [0.0, 4.0, 3.0, 5.0]])
    y = torch.tensor([0, 0])
    up = margin_objective(kappa=1.0, topk=2)(logits, y)  # ascended: −Σ hinge over the 2 best others
    assert torch.equal(up, -margin_loss(logits, y, kappa=1.0, topk=2))
    assert up.tolist() == [-(2 + 3), 0.0]  # image 1: the label is last, out of the top 2 by more than κ
    down = margin_objective(kappa=1.0, targeted=True)(logits, torch.tensor([1, 3]))
    assert down.tolist() == [2.0, 0.0]  # max other − target + κ, clamped at 0


@pytest.mark.parametrize("kw", [dict(), dict(target=True), dict(random_start="normal", keep="last"),
                                dict(random_start=None, steps=1, step_size=0.1)])
def test_the_defaults_are_the_top_1_cross_entropy_attack(kw):
    """``topk=1`` and ``objective="ce"`` are the defaults: the same images, success and curve, bit for bit."""
    model = _linear(3)
    x = torch.rand(16, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    kw = dict(kw)
    if kw.pop("target", False):
        kw["target"] = (y + 1) % 10
    opts = dict(dict(eps=0.1, steps=5), **kw)
    runs_ = [pgd(model, x, y, generator=torch.Generator().manual_seed(7), details=True, **opts, **extra)
             for extra in (dict(), dict(topk=1, objective="ce"), dict(objective=cross_entropy_objective))]
    for other in runs_[1:]:
        for a, b in zip(runs_[0], other):
            assert torch.equal(a, b)


def test_pgd_top_k_bad_options():
    model, x = _linear(0), torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="topk must be an integer >= 1"):
        pgd(model, x, eps=0.1, topk=0)
    with pytest.raises(ValueError, match="targeted attack succeeds on the target's top-1"):
        pgd(model, x, eps=0.1, topk=5, target=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="objective must be a callable or one of"):
        pgd(model, x, eps=0.1, objective="hinge")


def test_run_pgd_threads_top_k_and_the_objective_into_its_cache_key():
    model = _linear(1)
    x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    opts = dict(eps=0.2, steps=5, step_size=0.05, batch_size=4, progress=False)
    top1 = runs.run_pgd(model, x, y, **opts)
    top5 = runs.run_pgd(model, x, y, topk=5, objective="margin", **opts)
    again = runs.run_pgd(model, x, y, topk=5, objective="margin", cache=False, **opts)
    assert torch.equal(top5["images"], again["images"]) and torch.equal(top5["success"], again["success"])
    assert not torch.equal(top1["images"], top5["images"])  # a separate cache entry, a different attack
    assert torch.equal(top5["success"], ~_in_top_k(model(top5["images"]), y, 5))
    with pytest.raises(ValueError, match=r"objective must be one of \('ce', 'margin'\)"):
        runs.run_pgd(model, x, y, objective=cross_entropy_objective, **opts)
