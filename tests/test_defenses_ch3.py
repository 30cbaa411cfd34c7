"""Chapter 3's defences: ResNet-20 and denoising blocks, adversarial-training losses, ATDA, TRADES, O2."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from featadv_core.defenses import NOISE_SOURCES, fit_odds, gaussian_cutoff, noise_share, noise_statistics, threshold_for_fpr
from featadv_core.models import adversarial_training as at
from featadv_core.models import atda, trades
from featadv_core.models.architectures import DenoisingBlock, resnet20, resnet20_denoise
from featadv_core.models.train import TrainConfig

CONFIG = TrainConfig(epochs=1)


def test_resnet20_shapes_and_names():
    from featadv_core.features import feature_shapes

    torch.manual_seed(0)
    net = resnet20().eval()
    shapes = feature_shapes(net, (3, 32, 32))
    assert shapes == {"conv1": (16, 32, 32), "res1": (16, 32, 32), "res2": (32, 16, 16), "res3": (64, 8, 8),
                      "pool": (64,), "fc": (10,)}
    assert 0.26e6 < sum(p.numel() for p in net.parameters()) < 0.28e6


def test_denoising_block_is_identity_at_init_and_nlm_known_answer():
    block = DenoisingBlock(4).eval()
    x = torch.randn(2, 4, 3, 5)
    assert torch.equal(block(x), x)
    flat = x.reshape(2, 4, 15)
    slow = torch.stack([torch.stack([sum((flat[n, :, i] @ flat[n, :, j]) * flat[n, :, j] for j in range(15)) / 15
                                     for i in range(15)], 1) for n in range(2)]).reshape(2, 4, 3, 5)
    assert torch.allclose(DenoisingBlock.non_local_means(x), slow, atol=1e-5)
    torch.manual_seed(0)
    net = resnet20_denoise().eval()
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_random_wrong_labels_are_wrong():
    y = torch.arange(1000) % 10
    t = at.random_wrong_labels(y, 10, torch.Generator().manual_seed(0))
    assert torch.all(t != y) and len(set(t.tolist())) == 10


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("loss", [at.fgsm_rs_loss, at.nfgsm_loss, at.pgd3_loss, at.pgd7_loss, at.targeted_pgd3_loss,
                                  trades.trades_k2_loss, trades.trades_k3_loss, atda.atda_loss])
def test_training_losses_are_finite_and_differentiable(loss):
    model = _tiny().train()
    x, y = torch.rand(16, 3, 2, 2), torch.arange(16) % 3
    value = loss(model, x, y, CONFIG)
    value.backward()
    assert torch.isfinite(value) and all(p.grad is not None for p in model.parameters())
    assert model.training  # left in train mode (TRADES crafts in eval mode and switches back)


def test_nfgsm_is_one_signed_step_from_wider_noise(monkeypatch):
    """N-FGSM (de Jorge et al. 2022): x' = clip(x + η + ε·sign ∇ℓ(x + η)), η ~ U(−2ε, 2ε), not projected
    onto the ε-ball: the adversary it trains on reaches 3ε, and is exactly that step."""
    model = _tiny().train()
    x, y = torch.rand(64, 3, 2, 2) * 0.5 + 0.25, torch.arange(64) % 3  # away from [0, 1]'s edges
    seen = []
    monkeypatch.setattr(at.F, "cross_entropy", lambda logits, labels, **kw: seen.append(logits) or
                        F.nll_loss(F.log_softmax(logits, 1), labels))
    torch.manual_seed(1)
    at.nfgsm_loss(model, x, y, CONFIG, eps=0.05)
    trained_on = seen[-1]  # the logits of the loss's last cross-entropy: the adversary's
    torch.manual_seed(1)
    eta = (torch.rand_like(x) * 2 - 1) * 0.1
    noisy = (x + eta).requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(noisy), y), noisy)
    expected = (noisy + 0.05 * grad.sign()).detach()
    assert torch.allclose(trained_on, model(expected), atol=1e-6)
    assert 0.1 < (expected - x).abs().max() <= 0.15 + 1e-6


def test_trades_with_beta_zero_is_cross_entropy():
    model = _tiny().train()
    x, y = torch.rand(8, 3, 2, 2), torch.arange(8) % 3
    value = trades.trades_loss(model, x, y, beta=0.0, eps=0.031, steps=2, step_size=0.0155)
    assert value.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)


def test_trades_inner_attack_raises_the_kl():
    model = _tiny().eval()
    x = torch.rand(32, 3, 2, 2)
    p = F.softmax(model(x), 1)
    from featadv_core.attacks import pgd

    adv = pgd(model, x, eps=0.1, steps=5, step_size=0.05, random_start="normal", objective=trades.kl_to(p), keep="last")
    kl = trades.kl_to(p)(model(adv), None)
    assert (adv - x).abs().max() <= 0.1 + 1e-7 and kl.mean() > 1e-4


def test_atda_terms_known_answers():
    a = torch.randn(20, 4)
    assert atda.coral(a, a).item() == 0 and atda.mmd(a, a).item() == 0
    assert atda.mmd(a, a + 1).item() == pytest.approx(1.0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    z, y = torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    assert atda.margin(z, y, centres).item() == pytest.approx(F.softplus(torch.tensor(-20.0)).item())
    c = torch.zeros(2, 2)
    atda._update_centres(c, torch.tensor([[2.0, 0.0], [4.0, 0.0]]), torch.tensor([0, 0]), 0.1)
    assert torch.allclose(c[0], torch.tensor([0.1 * 6 / 3, 0.0])) and torch.equal(c[1], torch.zeros(2))


# --- O2 --------------------------------------------------------------------------------------

def test_gaussian_cutoff():
    assert gaussian_cutoff(0.999) == pytest.approx(3.0902323, abs=1e-6)
    assert gaussian_cutoff(0.5) == pytest.approx(0.0, abs=1e-12)


def test_noise_statistics_shape_and_zero_at_own_class():
    model = _tiny().eval()
    x = torch.rand(5, 3, 2, 2)
    y, g = noise_statistics(model, x, feature_layer="2", head=model[3], sources=[("normal", 0.01), ("sign", 0.01)],
                            draws=8)
    assert g.shape == (5, 2, 3) and torch.equal(y, model(x).argmax(1))
    assert torch.all(g.gather(2, y[:, None, None].expand(5, 2, 1)) == 0)


def test_noise_statistics_golden(tiny_lenet):
    """The values recorded before O2's noise followed its generator's device: the CPU stream is unchanged."""
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y, g = noise_statistics(tiny_lenet, x, feature_layer="ip1", head=tiny_lenet.net.ip2, draws=4,
                            sources=NOISE_SOURCES[::4], seed=0, batch_size=8)  # normal, sign, uniform; 2 chunks
    golden = torch.tensor([[0.00114614423, 0.00144883443, 0.00134728057],
                           [0.00202611694, 0.00276228692, 0.00239210878],
                           [0.00134345086, 0.00153733918, 0.00423114328]])
    assert y.tolist() == [8, 8, 8] and g.dtype == torch.float32
    # g is a difference of logits (≈ 0.3) that is ≈ 1e-3 itself, so the CPU's SIMD kernels move its last
    # float32 bits by ≈ 2e-7 between machines (measured: 1.7e-7, i.e. 9e-5 relative) — an absolute tolerance,
    # not a relative one; another noise stream (seed=1) moves it by 2.6e-3, four orders of magnitude more.
    torch.testing.assert_close(g.norm(dim=2), golden, rtol=0, atol=1e-6)


def test_antithetic_draws_cancel_the_linear_term_and_keep_the_expectation():
    """φ linear in x (interior images, no clipping): every antithetic pair averages to φ(x), so ḡ = 0 exactly,
    where independent draws leave noise; on the tiny ReLU net both estimators agree on the expectation."""
    from torch import nn

    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Identity(), nn.Linear(6, 3)).eval()
    x = 0.25 + 0.5 * torch.rand(4, 3, 2, 2)
    kw = dict(feature_layer="2", head=linear[3], sources=[("normal", 0.01), ("sign", 0.01), ("uniform", 0.01)], draws=8)
    _, anti = noise_statistics(linear, x, antithetic=True, **kw)
    _, iid = noise_statistics(linear, x, **kw)
    assert anti.abs().max() < 1e-6 < iid.abs().max()
    model = _tiny().eval()
    x = torch.rand(3, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    kw = dict(feature_layer="2", head=model[3], sources=[("uniform", 0.2)], draws=4000)
    _, a = noise_statistics(model, x, antithetic=True, seed=1, **kw)
    _, b = noise_statistics(model, x, seed=2, **kw)
    _, c = noise_statistics(model, x, seed=3, **kw)
    spread = (b - c).abs().max().item()        # two independent estimates: √2 standard errors apart, typically
    assert 0 < (a - b).abs().max().item() < 4 * spread
    with pytest.raises(ValueError, match="even"):
        noise_statistics(model, x, antithetic=True, **dict(kw, draws=3))
    x = 0.25 + 0.5 * torch.rand(40, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    kw = dict(feature_layer="2", head=model[3], sources=[("normal", 0.01)], draws=8)
    iid, anti = noise_share(model, x, **kw), noise_share(model, x, antithetic=True, **kw)
    assert 0 <= float(anti[0]) < float(iid[0]) <= 1.5  # antithetic pairs leave less of the spread to chance
    det = fit_odds(model, torch.rand(30, 3, 2, 2), model(torch.rand(30, 3, 2, 2)).argmax(1), feature_layer="2",
                   head=model[3], sources=[("normal", 0.05)], draws=4, antithetic=True, min_images=1)
    assert det.antithetic


@pytest.fixture(scope="module")
def odds_setup():
    model = _tiny().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1500, 3, 2, 2, generator=gen)
    y = model(x).argmax(1)
    detector = fit_odds(model, x[:600], y[:600], feature_layer="2", head=model[3],
                        sources=[("normal", 0.05), ("uniform", 0.05)], draws=16)
    return model, x, y, detector


def test_odds_z_scores_of_calibration_data_are_standardised(odds_setup):
    model, x, y, det = odds_setup
    pred, g = noise_statistics(model, x[:600], feature_layer="2", head=model[3], sources=det.sources, draws=16)
    z = (g - det.mean[pred]) / det.std[pred]
    other = torch.ones_like(z, dtype=torch.bool).scatter(2, pred[:, None, None].expand(-1, z.shape[1], 1), False)
    assert abs(z[other].mean().item()) < 1e-5 and z[other].std().item() == pytest.approx(1.0, abs=0.02)


@settings(max_examples=4, deadline=None)
@given(st.sampled_from([0.05, 0.1, 0.2]))
def test_odds_false_positive_rate_matches_its_nominal_level(odds_setup, fpr):
    """Calibrated on held-out clean images, the FPR on fresh clean images is the nominal one within sampling error."""
    model, x, y, det = odds_setup
    det.calibrate_threshold(x[600:1050], fpr)
    flagged = det.detect(x[1050:]).float().mean().item()
    n = 450
    assert abs(flagged - fpr) <= 3.5 * math.sqrt(fpr * (1 - fpr) * (1 / n + 1 / n))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=200, unique=True),
       st.integers(0, 5), st.floats(0.01, 0.99))
def test_threshold_for_fpr_flags_at_most_the_nominal_share(finite, n_inf, fpr):
    """Over distinct finite scores, the count above the threshold is fpr·n within one image; −∞ entries are ignored."""
    s = torch.tensor(finite + [float("-inf")] * n_inf, dtype=torch.float64)
    t = threshold_for_fpr(s, fpr)
    above = (torch.tensor(finite, dtype=torch.float64) > t).sum().item()
    assert abs(above - fpr * len(finite)) < 1


def test_threshold_for_fpr_bad_inputs():
    with pytest.raises(ValueError, match="fpr"):
        threshold_for_fpr(torch.zeros(5), 0.0)
    with pytest.raises(ValueError, match="no finite"):
        threshold_for_fpr(torch.full((4,), float("-inf")), 0.1)


def test_odds_bad_inputs(odds_setup):
    model, x, y, det = odds_setup
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        det.detect(x * 3)
    with pytest.raises(ValueError, match="fpr"):
        det.calibrate_threshold(x[:10], 1.5)
    with pytest.raises(ValueError, match="same length"):
        fit_odds(model, x[:10], y[:5], feature_layer="2", head=model[3])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=12), st.lists(st.integers(-5, 5), min_size=1, max_size=12))
def test_roc_auc_is_the_share_of_correctly_ordered_pairs(neg, pos):
    """Known answer by brute force over all pairs (ties count ½); swapping the sides gives 1 − AUC."""
    from featadv_core.metrics import roc_auc

    neg_t, pos_t = torch.tensor(neg, dtype=torch.float64), torch.tensor(pos, dtype=torch.float64)
    brute = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert roc_auc(neg_t, pos_t) == pytest.approx(brute)
    assert roc_auc(pos_t, neg_t) == pytest.approx(1 - brute)
    assert roc_auc(neg_t.exp(), pos_t.exp()) == pytest.approx(brute)  # invariant to monotone maps


def test_roc_auc_bad_inputs():
    from featadv_core.metrics import roc_auc

    with pytest.raises(ValueError, match="at least one"):
        roc_auc(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(torch.tensor([float("nan")]), torch.tensor([1.0]))
