"""DeepFool and universal perturbations (Jetley et al. 2018's attacks): known answers and properties."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from featadv_core import attacks, metrics


def affine(dim: int = 12, classes: int = 4, seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(dim, classes)).to(dtype)
    return net.eval()


def images(n: int, dim: int = 12, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(n, 1, 1, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def hyperplane_distances(net: nn.Module, x: torch.Tensor):
    """For an affine net: every |f_k| / ‖w_k‖ to the clean label's boundaries, and the w_k."""
    lin = net[1]
    logits = net(x)
    l = logits.argmax(1)
    w = lin.weight[None] - lin.weight[l][:, None]          # N×C×D
    f = logits - logits.gather(1, l[:, None])              # N×C
    d = f.abs() / w.norm(dim=2)
    d[torch.arange(len(x)), l] = math.inf
    return d, w, f


def test_deepfool_on_an_affine_classifier_is_the_exact_minimal_perturbation_in_one_step():
    net, x = affine(), images(16)
    adv, res = attacks.deepfool(net, x, overshoot=0.02, box=None, details=True)
    d, w, f = hyperplane_distances(net, x)
    best = d.argmin(1)
    rows = torch.arange(len(x))
    expected = 1.02 * (f[rows, best].abs() / w[rows, best].norm(dim=1) ** 2)[:, None] * w[rows, best]
    assert torch.equal(res.iterations, torch.ones(16, dtype=torch.long))
    torch.testing.assert_close(res.perturbation.flatten(1), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.norm, 1.02 * d.min(1).values, rtol=1e-10, atol=0)
    assert bool(res.success.all()) and torch.equal(res.label, best)
    torch.testing.assert_close(adv, x + res.perturbation)


def test_batched_deepfool_equals_per_image_runs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 5)).double().eval()
    x = images(9)
    _, batched = attacks.deepfool(net, x, box=None, details=True)
    for i in range(len(x)):
        _, one = attacks.deepfool(net, x[i:i + 1], box=None, details=True)
        torch.testing.assert_close(one.perturbation, batched.perturbation[i:i + 1], rtol=1e-9, atol=1e-12)
        assert one.iterations.item() == batched.iterations[i].item()


def test_confined_deepfool_stays_in_the_span_of_the_basis():
    net, x = affine(classes=2), images(8)
    q = torch.linalg.qr(torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))).Q
    _, res = attacks.deepfool(net, x, basis=q, box=None, details=True)
    r = res.perturbation.flatten(1)
    assert (r - (r @ q) @ q.T).norm(dim=1).max() <= 1e-12 * r.norm(dim=1).max()
    # two classes: one step to the confined hyperplane, (1+η)|f|/‖Pw‖² Pw
    _, w, f = hyperplane_distances(net, x)
    other = 1 - net(x).argmax(1)
    rows = torch.arange(len(x))
    pw = w[rows, other] @ q @ q.T
    expected = 1.02 * (f[rows, other].abs() / pw.norm(dim=1) ** 2)[:, None] * pw
    torch.testing.assert_close(r, expected, rtol=1e-10, atol=1e-12)
    assert bool(res.success.all())


def test_a_basis_orthogonal_to_every_gradient_leaves_the_image_and_fails():
    net, x = affine(classes=2), images(3)
    w = (net[1].weight[1] - net[1].weight[0])[:, None]
    g = torch.randn(12, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    q = torch.linalg.qr(g - w @ (w.T @ g) / (w.T @ w)).Q
    adv, res = attacks.deepfool(net, x, basis=q, box=None, details=True)
    assert not bool(res.success.any()) and torch.equal(res.iterations, torch.ones(3, dtype=torch.long))
    torch.testing.assert_close(adv, x)


def test_targeted_deepfool_reaches_the_target():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 5)).double().eval()
    x = images(20)
    target = (net(x).argmax(1) + 2) % 5
    adv, res = attacks.deepfool(net, x, target=target, overshoot=0.05, max_iter=50, box=None, details=True)
    assert bool(res.success.all())
    assert torch.equal(net(adv).argmax(1), target)


def test_targeted_deepfool_leaves_images_already_of_the_target():
    net, x = affine(), images(5)
    pred = net(x).argmax(1)
    adv, res = attacks.deepfool(net, x, target=pred, details=True)
    torch.testing.assert_close(adv, x)
    assert bool(res.success.all()) and int(res.iterations.sum()) == 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), classes=st.integers(2, 6), box=st.booleans())
def test_property_deepfool_changes_the_label_and_respects_the_box(seed, classes, box):
    net, x = affine(classes=classes, seed=seed), images(6, seed=seed + 1)
    adv, res = attacks.deepfool(net, x, box=(0.0, 1.0) if box else None, max_iter=50, details=True)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    if box:
        assert bool(((adv >= 0) & (adv <= 1)).all())
        assert torch.equal(res.success, net(adv).argmax(1) != net(x).argmax(1))
    else:  # unconstrained: the exact x + r̂, never clipped, always across
        torch.testing.assert_close(adv, x + res.perturbation, rtol=0, atol=0)
        assert bool(res.success.all())


def test_deepfool_candidates_restrict_the_classes():
    net, x = affine(classes=6), images(10)
    _, res = attacks.deepfool(net, x, candidates=2, box=None, details=True)
    second = net(x).topk(2, dim=1).indices[:, 1]
    assert torch.equal(res.label, second)


def test_deepfool_matches_a_per_image_transcription_of_the_reference_loop():
    """A literal per-image transcription of LTS4's MATLAB loop agrees with the batched attack."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 4)).double().eval()
    x = images(6)
    _, res = attacks.deepfool(net, x, box=None, details=True)
    for i in range(len(x)):
        xi = x[i:i + 1]
        l = net(xi).argmax(1).item()
        r = torch.zeros_like(xi)
        it = 0
        while net(xi + 1.02 * r).argmax(1).item() == l and it < 100:
            xu = (xi + r).requires_grad_(True)
            out = net(xu)[0]
            best = None
            for k in range(4):
                if k == l:
                    continue
                (wk,) = torch.autograd.grad(out[k] - out[l], xu, retain_graph=True)
                fk = (out[k] - out[l]).item()
                dist = abs(fk) / wk.norm().item()
                if best is None or dist < best[0]:
                    best = (dist, fk, wk)
            r = r + abs(best[1]) / best[2].norm() ** 2 * best[2]
            it += 1
        torch.testing.assert_close(res.perturbation[i:i + 1], 1.02 * r, rtol=1e-9, atol=1e-12)


def test_deepfool_bad_inputs_raise_clear_errors():
    net, x = affine(), images(3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.deepfool(net, x + 2)
    with pytest.raises(ValueError, match="target must be classes in"):
        attacks.deepfool(net, x, target=7)
    with pytest.raises(ValueError, match="candidates"):
        attacks.deepfool(net, x, candidates=1)
    with pytest.raises(ValueError, match="orthonormal"):
        attacks.deepfool(net, x, basis=torch.ones(12, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="one row per input dimension"):
        attacks.deepfool(net, x, basis=torch.eye(5, dtype=torch.float64))


# --- universal perturbations ------------------------------------------------------------------------


@pytest.mark.parametrize("p,xi", [(math.inf, 0.05), (2, 0.3)])
def test_universal_perturbation_stays_in_its_ball_and_is_deterministic(p, xi):
    net, x = affine(classes=3), images(30)
    a = attacks.universal_perturbation(net, x, xi=xi, p=p, max_passes=3, seed=4, progress=False)
    b = attacks.universal_perturbation(net, x, xi=xi, p=p, max_passes=3, seed=4, progress=False)
    v = a.perturbation
    norm = v.abs().max().item() if p == math.inf else v.flatten().norm().item()
    assert norm <= xi * (1 + 1e-12) and a.updates > 0
    torch.testing.assert_close(a.perturbation, b.perturbation, rtol=0, atol=0)
    clean, fooled = net(x).argmax(1), net(x + v).argmax(1)
    assert a.fooling_history[-1] == pytest.approx(metrics.fooling_rate(clean, fooled))


def test_universal_perturbation_fools_a_linear_model_with_a_large_enough_ball():
    """Every image on one side of one hyperplane: a single v across it fools them all."""
    net, x = affine(classes=2), images(40)
    with torch.no_grad():
        u = torch.nn.functional.normalize(torch.randn(12, dtype=torch.float64), dim=0)
        net[1].weight.copy_(torch.stack([torch.zeros(12, dtype=torch.float64), u]))
        net[1].bias.copy_(torch.tensor([0.0, -(x.flatten(1) @ u).max().item() - 0.1], dtype=torch.float64))
    assert bool((net(x).argmax(1) == 0).all())
    res = attacks.universal_perturbation(net, x, xi=2.0, p=2, delta=0.2, max_passes=10, progress=False)
    assert res.fooling_history[-1] >= 0.8
    assert len(res.fooling_history) < 10  # stopped at 1 − δ


def test_project_ball_is_the_projection():
    v = torch.tensor([3.0, 4.0])
    torch.testing.assert_close(attacks.project_ball(v, 1.0, 2), torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(attacks.project_ball(v * 0.1, 1.0, 2), v * 0.1)  # inside: unchanged (no rescale)
    torch.testing.assert_close(attacks.project_ball(v, 1.0, math.inf), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="p must be"):
        attacks.project_ball(v, 1.0, 1)
    with pytest.raises(ValueError, match="xi"):
        attacks.project_ball(v, 0.0, 2)


def test_fooling_rate_counts_changed_predictions_including_misclassified_images():
    clean = torch.tensor([0, 1, 2, 3])
    assert metrics.fooling_rate(clean, torch.tensor([0, 2, 2, 0])) == 0.5
    with pytest.raises(ValueError, match="one clean and one perturbed"):
        metrics.fooling_rate(clean, clean[:2])
