"""Chapter 3's core: AdaIN, the style encoder/decoder, the projected loop, PGD, FA/FI, distances."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from featadv_core.attacks import (feature_augmentation, feature_interpolation, margin_loss, pgd,
                                  project_simplex, projected_descent)
from featadv_core.attacks.projected import Iterate
from featadv_core.metrics import feature_distances, pixel_distances
from featadv_core.models import adain
from featadv_core.models.architectures import allconv_cifar
from featadv_core.models.decoder_evaluation import psnr
from featadv_core.models.decoder_training import DecoderConfig, decoder_losses, same_class_pairs, train_decoder


def _autoencoder(seed: int = 0, steps: int = 3) -> adain.StyleAutoencoder:
    torch.manual_seed(seed)
    ae = adain.allconv_style_autoencoder()
    x = torch.rand(40, 3, 32, 32)
    y = torch.arange(40) % 4
    train_decoder(ae, x, y, DecoderConfig(steps=steps, pairs=4, calibration_images=20))
    return ae


@pytest.fixture(scope="module")
def ae():
    return _autoencoder()


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    return allconv_cifar().eval()


# --- AdaIN and the encoder -------------------------------------------------------------------

def test_channel_stats_known_answer():
    f = torch.tensor([[1.0, 3.0], [5.0, 7.0]]).view(1, 1, 2, 2)
    mean, std = adain.channel_stats(f)
    assert mean.item() == pytest.approx(4.0)
    assert std.item() == pytest.approx(math.sqrt(5.0 + adain.STAT_EPS))  # population variance + 1e-5


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(0, 10_000))
def test_adain_with_own_statistics_is_identity(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, c, 6, 5, generator=g) * 3 + 1
    assert torch.allclose(adain.adain(f, f), f, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_adain_takes_the_style_moments(seed):
    g = torch.Generator().manual_seed(seed)
    content = torch.randn(2, 4, 8, 8, generator=g)
    style = torch.randn(2, 4, 5, 5, generator=g) * 2 + 3
    out = adain.adain(content, style)
    for a, b in zip(adain.channel_stats(out), adain.channel_stats(style)):
        assert torch.allclose(a, b, atol=1e-4)


def test_encoder_is_the_classifier_prefix_and_calibration_sets_mean_one(net):
    from featadv_core.features import forward_to

    enc = adain.StyleEncoder(net, "conv2_1", ("conv1_1", "conv2_1"), padding_mode="zeros")
    x = torch.rand(8, 3, 32, 32)
    assert torch.equal(enc(x), forward_to(net, x, "conv2_1"))
    assert [t.shape[1:] for t in enc.styles(x)] == [(32, 32, 32), (64, 16, 16)]
    enc.calibrate(x)
    means = enc(x).mean(dim=(0, 2, 3))
    alive = enc.scale1.flatten() != 1  # nearly dead channels (mean < 1e-4 of the largest) keep scale 1
    assert alive.float().mean() > 0.9
    assert torch.allclose(means[alive], torch.ones_like(means[alive]), rtol=2e-3)  # float16-rounded scales


def test_encoder_bad_inputs(net):
    with pytest.raises(ValueError, match="unknown encoder layer"):
        adain.StyleEncoder(net, "conv9_9")
    with pytest.raises(ValueError, match="end with the encoder layer"):
        adain.StyleEncoder(net, "conv2_1", ("conv2_1", "conv1_1"))
    with pytest.raises(ValueError, match="named-layer model"):
        adain.StyleEncoder(nn.Sequential(nn.Conv2d(3, 3, 3)), "0")


def test_encoder_stays_in_eval_mode(ae):
    ae.train()
    assert not ae.encoder.training and not any(m.training for m in ae.encoder.modules())
    ae.eval()


def test_decoder_mirrors_the_encoder(ae):
    kinds = [type(m).__name__ for m in ae.decoder.net]
    assert kinds == ["Conv2d", "ReLU", "Upsample", "Conv2d", "ReLU", "Conv2d"]
    assert [m.padding_mode for m in ae.decoder.net if isinstance(m, nn.Conv2d)] == ["reflect"] * 3
    assert (ae.decoder.net[0].in_channels, ae.decoder.net[-1].out_channels) == (64, 3)


@settings(max_examples=10, deadline=None)
@given(st.floats(-50, 50), st.integers(0, 1000))
def test_decoder_output_in_unit_box(scale, seed):
    ae = _autoencoder(steps=0)
    t = torch.randn(2, 64, 16, 16, generator=torch.Generator().manual_seed(seed)) * scale
    out = ae.decode(t)
    assert out.shape == (2, 3, 32, 32) and out.min() >= 0 and out.max() <= 1


def test_decoder_for_another_encoder_is_refused(ae):
    other = _autoencoder(seed=5)
    mixed = adain.StyleAutoencoder(other.encoder, ae.decoder)
    other.encoder.scale1.mul_(2)  # a recalibrated encoder is another encoder
    with pytest.raises(ValueError, match="another encoder"):
        adain.StyleAutoencoder(other.encoder, ae.decoder).check()
    with pytest.raises(ValueError, match="untrained"):
        fresh = adain.allconv_style_autoencoder()
        fresh.check()
    with pytest.raises(ValueError, match="64-channel"):
        small = adain.StyleEncoder(allconv_cifar().eval(), "conv1_1")
        adain.StyleAutoencoder(small, ae.decoder)
    del mixed


# --- decoder training ------------------------------------------------------------------------

def test_same_class_pairs_share_labels():
    y = torch.tensor([0, 1, 1, 2, 2, 2, 0, 1])
    i, j = same_class_pairs(y, 500, torch.Generator().manual_seed(0))
    assert torch.equal(y[i], y[j])
    assert len(set(j.tolist())) == len(y)  # every image can be a style image


def test_decoder_training_lowers_its_losses():
    torch.manual_seed(0)
    ae = adain.allconv_style_autoencoder()
    x, y = torch.rand(64, 3, 32, 32), torch.arange(64) % 2
    ae.encoder.calibrate(x)
    before = sum(t.sum() for t in decoder_losses(ae, x[:16], x[16:32])).item()
    log = train_decoder(ae, x, y, DecoderConfig(steps=60, pairs=8, lr=3e-3, calibration_images=64))
    after = sum(t.sum() for t in decoder_losses(ae, x[:16], x[16:32])).item()
    assert after < 0.7 * before and log[-1]["step"] == 60
    ae.check()  # the fingerprint matches the calibrated encoder


def test_decoder_pixel_term_is_the_reconstruction_error_and_is_logged(ae):
    """The optional pixel term (a deviation, DecoderConfig.pixel_weight) is ‖g(f(x)) − x‖² per image;
    the paper's two losses are unchanged by asking for it, and training with it logs it."""
    torch.manual_seed(3)
    x, s = torch.rand(5, 3, 32, 32), torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        l_c, l_s = decoder_losses(ae, x, s)
        l_c2, l_s2, l_p = decoder_losses(ae, x, s, pixel=True)
        expected = (ae(x) - x).pow(2).flatten(1).sum(1)
    assert torch.allclose(l_c, l_c2) and torch.allclose(l_s, l_s2)
    assert torch.allclose(l_p, expected, rtol=1e-5)
    fresh = adain.allconv_style_autoencoder()
    log = train_decoder(fresh, torch.rand(16, 3, 32, 32), torch.arange(16) % 2,
                        DecoderConfig(steps=2, pairs=4, calibration_images=8, warmup=1, pixel_weight=1.0))
    assert set(log[-1]) == {"step", "content", "style", "pixel"}


def test_psnr_known_answer():
    x = torch.zeros(1, 3, 4, 4)
    assert psnr(x + 0.1, x).item() == pytest.approx(20.0, abs=1e-4)


# --- the projected loop and PGD --------------------------------------------------------------

def test_projected_descent_keeps_best_and_projects():
    target = torch.tensor([[0.3], [2.0]])

    def evaluate(v):
        loss = (v[0] - target).pow(2).sum(1)
        return Iterate(loss=loss, success=loss.detach() < 0.01, rank=loss.detach(), output=v[0])

    def clamp(v):
        v[0].clamp_(-1, 1)

    res = projected_descent(evaluate, [torch.zeros(2, 1)], project=clamp, steps=300, lr=0.05)
    assert res.output[0].item() == pytest.approx(0.3, abs=0.05) and res.success[0]
    assert res.output[1].item() == pytest.approx(1.0, abs=1e-6) and not res.success[1]  # the box binds
    assert res.curve[0] == 0 and res.curve[-1] == 0.5 and torch.all(res.curve[1:] >= res.curve[:-1])


@settings(max_examples=10, deadline=None)
@given(st.sampled_from([1 / 255, 4 / 255, 8 / 255]), st.integers(1, 4), st.integers(0, 1000))
def test_pgd_stays_in_its_ball(eps, steps, seed):
    torch.manual_seed(3)
    model = allconv_cifar().eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    adv = pgd(model, x, eps=eps, steps=steps, generator=torch.Generator().manual_seed(seed))
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert (adv - x).abs().max() <= eps and adv.min() >= 0 and adv.max() <= 1


def test_pgd_fools_a_linear_model_and_is_seeded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x = torch.rand(64, 3, 2, 2)
    y = model(x).argmax(1)
    a1, ok, curve = pgd(model, x, eps=0.3, steps=10, generator=torch.Generator().manual_seed(1), details=True)
    a2 = pgd(model, x, eps=0.3, steps=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a1, a2)
    assert torch.equal(ok, model(a1).argmax(1) != y) and ok.float().mean() > 0.5
    tgt = (y + 1) % 3
    at, okt, _ = pgd(model, x, eps=0.3, steps=10, target=tgt, details=True)
    assert torch.equal(okt, model(at).argmax(1) == tgt)


def test_pgd_bad_inputs(net):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(net, torch.full((1, 3, 32, 32), 2.0), eps=0.1)
    with pytest.raises(ValueError, match="eps must be > 0"):
        pgd(net, torch.rand(1, 3, 32, 32), eps=0.0)


# --- FA / FI ---------------------------------------------------------------------------------

def test_margin_loss_known_answers():
    z = torch.tensor([[3.0, 1.0, 2.5, 0.0]])
    y = torch.tensor([0])
    assert margin_loss(z, y, kappa=1).item() == pytest.approx(1.5)            # 3 − 2.5 + 1
    assert margin_loss(z, y, kappa=1, topk=2).item() == pytest.approx(4.5)    # + (3 − 1 + 1)
    assert margin_loss(z, torch.tensor([3]), kappa=1, targeted=True).item() == pytest.approx(4.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 10_000))
def test_simplex_projection(n, k, seed):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    p = project_simplex(w)
    assert torch.all(p >= 0) and torch.allclose(p.sum(1), torch.ones(n, dtype=torch.float64))
    assert torch.allclose(project_simplex(p), p)  # idempotent
    # optimality (KKT): p is the closest point: no simplex vertex is closer to w along a descent direction
    for i in range(k):
        e = torch.zeros(k, dtype=torch.float64)
        e[i] = 1
        assert ((w - p) * (e - p)).sum(1).max() <= 1e-9


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("param", ["log", "linear"])
def test_feature_augmentation_respects_eps_exactly(ae, net, images, param):
    eps = math.log(1.5)
    res = feature_augmentation(net, images, decoder=ae, eps=eps, steps=8, lr=0.05, param=param, details=True,
                               progress=False)
    assert res.images.min() >= 0 and res.images.max() <= 1 and res.images.shape == images.shape
    n, c = images.shape[0], 64
    mean, std = (s.view(n, c) for s in adain.channel_stats(ae.encoder(images)))
    if param == "log":
        tau = torch.stack(res.variables)
    else:  # reconstruct τ from the returned statistics
        alive = mean.abs() > 0
        tau = torch.stack([torch.where(alive, (res.variables[0] / mean.abs().clamp_min(1e-30)).log(), 0 * mean),
                           (res.variables[1] / std).log()])
    assert tau.abs().max() <= eps + 1e-5
    assert res.curve[0] <= res.curve[-1]


def test_feature_augmentation_at_zero_steps_is_the_decoder_image(ae, net, images):
    out = feature_augmentation(net, images, decoder=ae, steps=1, lr=1e-9, progress=False)
    # with a vanishing step, the kept image is (numerically) the Decoder image g(f(x))
    assert torch.allclose(out, ae(images), atol=1e-4)


def test_style_attacks_are_batch_independent(ae, net, images):
    """An image's result does not depend on its batch (float64: Adam's normalised steps amplify the
    round-off of float32 convolutions, which differs between batch sizes, on near-zero gradients)."""
    import copy

    ae64, net64, x64 = copy.deepcopy(ae).double(), copy.deepcopy(net).double(), images.double()
    full = feature_augmentation(net64, x64, decoder=ae64, steps=6, lr=0.05, progress=False)
    alone = feature_augmentation(net64, x64[1:2], decoder=ae64, steps=6, lr=0.05, progress=False)
    assert torch.allclose(full[1:2], alone, atol=1e-9)


def test_feature_augmentation_beats_the_decoder_baseline(ae, images):
    torch.manual_seed(0)  # a classifier of colour tone, which style changes can move
    net = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 10)).eval()
    y = net(ae(images)).argmax(1)  # labels the Decoder images keep
    res = feature_augmentation(net, images, y, decoder=ae, eps=math.log(4), steps=40, lr=0.05, details=True,
                               progress=False)
    assert torch.equal(res.success, net(res.images).argmax(1) != y)
    assert res.success.float().mean() > 0  # better than doing nothing (the Decoder image fools none)


def test_feature_interpolation_weights_stay_on_simplex(ae, net, images):
    protos = torch.rand(4, 5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for shared in (False, True):
        res = feature_interpolation(net, images, protos, decoder=ae, steps=6, lr=0.1, shared_weights=shared,
                                    details=True, progress=False)
        assert len(res.variables) == (1 if shared else 2)
        for w in res.variables:
            assert w.shape == (4, 6) and torch.all(w >= 0) and torch.allclose(w.sum(1), torch.ones(4), atol=1e-6)
        assert res.images.min() >= 0 and res.images.max() <= 1


def test_style_attack_bad_inputs(ae, net, images):
    with pytest.raises(ValueError, match="eps must be > 0"):
        feature_augmentation(net, images, decoder=ae, eps=0.0, steps=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        feature_augmentation(net, images * 3, decoder=ae, steps=1)
    with pytest.raises(ValueError, match="StyleAutoencoder"):
        feature_augmentation(net, images, decoder=ae.decoder, steps=1)
    with pytest.raises(ValueError, match="prototypes must be"):
        feature_interpolation(net, images, torch.rand(3, 2, 3, 16, 16), decoder=ae, steps=1)


# --- distances -------------------------------------------------------------------------------

def test_pixel_distances_known_answer():
    x = torch.zeros(2, 3, 2, 2)
    adv = x.clone()
    adv[0, 0, 0, 0] = 0.5
    adv[1] = 0.1
    d = pixel_distances(adv, x)
    assert torch.allclose(d["linf"], torch.tensor([0.5, 0.1]))
    assert torch.allclose(d["l2"], torch.tensor([0.5, 0.1 * math.sqrt(12)]))


def test_feature_distance_is_blind_to_channel_affine_changes(ae, images):
    """h removes per-channel mean and std: an image whose embedding differs by them is at distance ≈ 0."""
    d = feature_distances(ae.encoder, images, images)
    assert d["l2"].abs().max() == 0
    rel = feature_distances(ae.encoder, images.flip(3), images, norm="none")
    assert torch.all(rel["l2"] > 0)


@pytest.mark.parametrize("perturb", ["mean", "std"])
def test_feature_augmentation_can_perturb_one_statistic(ae, net, images, perturb):
    res = feature_augmentation(net, images, decoder=ae, steps=5, lr=0.05, perturb=perturb, details=True, progress=False)
    fixed = res.variables[1] if perturb == "mean" else res.variables[0]
    moved = res.variables[0] if perturb == "mean" else res.variables[1]
    assert torch.all(fixed == 0) and moved.abs().max() > 0


# --- Fig. 3 proxies --------------------------------------------------------------------------

def test_low_frequency_fraction_known_answers():
    from featadv_core.analysis import low_frequency_fraction

    const = torch.ones(1, 3, 16, 16)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1
    assert low_frequency_fraction(const).item() == pytest.approx(1.0)
    assert low_frequency_fraction(checker.expand(1, 3, 16, 16)).item() == pytest.approx(0.0, abs=1e-12)


def test_edge_correlation_is_high_on_edges():
    from featadv_core.analysis import edge_correlation, gradient_magnitude

    x = torch.zeros(1, 3, 16, 16)
    x[..., 8:] = 1.0  # a vertical edge
    on_edge = gradient_magnitude(x)[:, None].expand(1, 3, 16, 16) * 0.1
    flat = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.1
    assert edge_correlation(on_edge, x).item() == pytest.approx(1.0, abs=1e-9)
    assert edge_correlation(flat, x).item() < 0.5


def test_vgg19_decoders_mirror_the_paper_layouts():
    """The decoder layouts of the chapter spec §2.3 (relu2_1: CIFAR-10; relu4_1: ImageNet)."""
    def layout(ae):
        return [f"{m.in_channels}->{m.out_channels}" if isinstance(m, nn.Conv2d) else "up"
                for m in ae.decoder.net if not isinstance(m, nn.ReLU)]

    assert layout(adain.vgg19_style_autoencoder()) == ["128->64", "up", "64->64", "64->3"]
    assert layout(adain.vgg19_style_autoencoder(layer="conv4_1")) == [
        "512->256", "up", "256->256", "256->256", "256->256", "256->128", "up", "128->128", "128->64", "up",
        "64->64", "64->3"]
    with pytest.raises(ValueError, match="unknown VGG-19 encoder layer"):
        adain.vgg19_style_autoencoder(layer="conv9_1")


@pytest.mark.data
def test_zoo_trains_a_decoder_recipe_with_its_card(offline_dir, monkeypatch):
    """A recipe with its own trainer: the zoo trains it, rounds it, evaluates it and records the card."""
    import dataclasses

    from featadv_core.models import zoo

    recipe = dataclasses.replace(zoo.ZOO["decoder-allconv-cifar10"],
                                 config=DecoderConfig(steps=3, pairs=4, calibration_images=16, warmup=1))
    monkeypatch.setitem(zoo.ZOO, "decoder-tiny", recipe)
    ae = zoo.get("decoder-tiny", device="cpu")
    card = ae.card
    assert isinstance(ae, adain.StyleAutoencoder) and not card["shipped"]
    assert {"psnr_db", "decoder_accuracy", "clean_accuracy", "training_log", "recipe_key"} <= card.keys()
    assert card["quality_classifier"] == "allconv-cifar10"
    ae.check()  # the fingerprint survives half-precision rounding and reloading
    assert zoo.recipe_key("decoder-tiny") != zoo.recipe_key("decoder-allconv-cifar10")


# --- cached runs -----------------------------------------------------------------------------

def test_run_style_attack_and_pgd_are_cached_and_chunk_independent(ae, net, images):
    from featadv_core import runs

    y = torch.arange(len(images)) % 10
    opts = dict(steps=3, lr=0.05)
    full = runs.run_style_attack("fa", net, images, y, decoder=ae, batch_size=4, progress=False, **opts)
    again = runs.run_style_attack("fa", net, images, y, decoder=ae, batch_size=4, progress=False, **opts)
    assert torch.equal(full["images"], again["images"]) and set(full) == {"images", "success", "content", "first_success"}
    direct = feature_augmentation(net, images, y, decoder=ae, details=True, progress=False, **opts)
    assert torch.allclose(full["images"], direct.images, atol=1e-6)
    protos = torch.rand(4, 2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    fi = runs.run_style_attack("fi", net, images, y, decoder=ae, prototypes=protos, progress=False, **opts)
    assert fi["images"].shape == images.shape
    with pytest.raises(ValueError, match="prototypes"):
        runs.run_style_attack("fi", net, images, y, decoder=ae, **opts)
    p1 = runs.run_pgd(net, images, y, eps=4 / 255, steps=2, step_size=2 / 255, batch_size=2, progress=False)
    p2 = runs.run_pgd(net, images, y, eps=4 / 255, steps=2, step_size=2 / 255, batch_size=2, progress=False,
                      cache=False)  # recomputed: the random starts are seeded by the chunks' images
    assert (p1["images"] - images).abs().max() <= 4 / 255 and p1["success"].dtype == torch.bool
    assert torch.equal(p1["images"], p2["images"])


@pytest.mark.data
def test_a_decoder_for_a_float32_encoder_survives_the_checkpoint(offline_dir, monkeypatch):
    """The paper's encoder (torchvision VGG-19) is float32: its decoder must still pass its check after the
    zoo rounds the checkpoint to float16 (found by the paper presets' smoke run)."""
    import dataclasses

    from featadv_core.models import zoo

    monkeypatch.setenv("FEATADV_WEIGHTS", "random")
    monkeypatch.setenv("FEATADV_TRAIN_BUDGET", "smoke")
    recipe = dataclasses.replace(zoo.ZOO["decoder-vgg19-cifar10"],
                                 config=DecoderConfig(steps=1, pairs=2, calibration_images=8, warmup=0))
    monkeypatch.setitem(zoo.ZOO, "decoder-vgg-tiny", recipe)
    ae = zoo.get("decoder-vgg-tiny", device="cpu")
    ae.check()
    assert ae.card["description"].startswith("[SMOKE BUDGET")
