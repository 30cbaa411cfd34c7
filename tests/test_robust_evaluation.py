"""The independent robustness evaluation (APGD-CE then APGD-T from torchattacks): known answers on a
linear model, the peer library's reseeding of torch's global stream kept away from the caller, errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from featadv_core.models import robust_evaluation as rev

torchattacks = pytest.importorskip("torchattacks")


def _linear(n_classes: int = 10, dim: int = 12, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, n_classes)).eval()


def _linear_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact L∞ robustness of a linear classifier away from the box: for every wrong class j,
    (w_y − w_j)·x + b_y − b_j − ε‖w_y − w_j‖₁ > 0."""
    lin = model[1]
    w, b = lin.weight.detach(), lin.bias.detach()
    flat = x.flatten(1)
    dw = w[y][:, None, :] - w[None, :, :]                       # N × C × D
    margin = (dw * flat[:, None, :]).sum(2) + b[y][:, None] - b[None, :] - eps * dw.abs().sum(2)
    margin[torch.arange(len(y)), y] = float("inf")
    return margin.amin(1) > 0


def test_apgd_finds_the_exact_robust_accuracy_of_a_linear_model():
    model = _linear()
    gen = torch.Generator().manual_seed(3)
    x = 0.3 + 0.4 * torch.rand(300, 3, 2, 2, generator=gen)     # the ε-ball never meets [0, 1]'s edges
    y = model(x).argmax(1)
    y[::7] = (y[::7] + 1) % 10                                  # some wrong from the start
    eps = 0.03
    out = rev.apgd_accuracy(model, x, y, eps=eps, steps=50, progress=False)
    exact = _linear_robust(model, x, y, eps).float().mean().item()
    assert out["clean"] == pytest.approx((model(x).argmax(1) == y).float().mean().item())
    assert 0.1 < exact < out["clean"]                           # the test means something
    assert out["apgd_ce_t"] == pytest.approx(exact, abs=1 / 300)  # the targeted pass reaches every class's corner
    assert out["clean"] >= out["apgd_ce"] >= out["apgd_ce_t"]
    assert out["n"] == 300 and out["steps"] == 50 and out["target_classes"] == 9


def test_the_callers_random_stream_is_untouched_unlike_a_bare_torchattacks_call():
    model = _linear()
    x, y = torch.rand(8, 3, 2, 2), torch.arange(8)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    rev.apgd_accuracy(model, x, y, steps=3, target_classes=2, progress=False)
    assert torch.equal(torch.rand(3), before)
    torch.manual_seed(123)
    torchattacks.APGD(model, eps=8 / 255, steps=3, seed=0)(x, y)   # the peer library reseeds the global stream
    assert not torch.equal(torch.rand(3), before)


def test_bad_inputs_are_refused():
    model = _linear()
    x, y = torch.rand(4, 3, 2, 2), torch.arange(4)
    with pytest.raises(ValueError, match="eval mode"):
        rev.apgd_accuracy(model.train(), x, y, progress=False)
    model.eval()
    with pytest.raises(ValueError, match="≤ 9"):
        rev.apgd_accuracy(model, x, y, target_classes=10, progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        rev.apgd_accuracy(model, x[:0], y[:0], progress=False)


def test_masking_flag():
    assert rev.masking(0.45, 0.40) and not rev.masking(0.42, 0.40) and not rev.masking(0.30, 0.40)
