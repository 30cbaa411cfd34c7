"""Devices and dtypes: what the CPU can check of the GPU/half-precision paths (the audit's findings).

* a lint: every seeded random draw in ``featadv_core`` names its device, so a CUDA generator is
  never refused (``torch.rand(shape, generator=g)`` without ``device=`` draws on the CPU);
* ``meta`` smoke tests: the style encoder and decoder are built where the classifier lives;
* half-precision models (bf16/fp16, not float64: ``Normalize`` would promote float32 input to
  float64 silently) through every entry point that used to crash on a dtype mismatch;
* the training precision policy (:func:`featadv_core.models.train._autocast`);
* CUDA-only checks of the generator paths, skipped without a GPU.
"""
from __future__ import annotations

import ast
import math
import pathlib

import pytest
import torch

import featadv_core
from featadv_core import attacks, features, labels, runs
from featadv_core.analysis import curvature
from featadv_core.attacks.style import class_prototypes
from featadv_core.defenses import odds
from featadv_core.models import adain, adversarial_data, adversarial_training, decoder_training, train, zoo
from featadv_core.models.architectures import allconv_cifar, lenet
from featadv_core.models.decoder_evaluation import decoder_quality

pytestmark = pytest.mark.usefixtures("one_thread")

HALF = [torch.bfloat16, torch.float16]
RNG = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "normal", "bernoulli", "multinomial"}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_every_seeded_draw_names_its_device():
    bad, root = [], pathlib.Path(featadv_core.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in RNG:
                names = {k.arg for k in node.keywords}
                if "generator" in names and "device" not in names:
                    bad.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not bad, f"seeded draws without device= (they refuse CUDA generators): {bad}"


def test_attacks_predict_labels_is_the_one_label_predictor():
    assert attacks.predict_labels is labels.predict_labels


# --- the style encoder and decoder follow the classifier ------------------------------------

def test_style_encoder_and_decoder_build_on_the_classifiers_device():
    enc = adain.StyleEncoder(allconv_cifar().eval().to("meta"), "conv2_1", ("conv1_1", "conv2_1"))
    assert enc.scale0.device.type == "meta" and enc.scale1.device.type == "meta"
    dec = adain.Decoder(enc, width=2)
    assert {t.device.type for t in (*dec.parameters(), *dec.buffers())} == {"meta"}


@pytest.mark.parametrize("dtype", HALF)
def test_style_encoder_of_a_half_precision_classifier_computes_in_its_dtype(dtype):
    enc = adain.StyleEncoder(allconv_cifar().eval().to(dtype), "conv2_1", ("conv1_1", "conv2_1"))
    assert enc.scale0.dtype == dtype
    x = torch.rand(2, 3, 32, 32).to(dtype)
    assert enc(x).dtype == dtype and all(h.dtype == dtype for h in enc.styles(x))


def test_check_names_bfloat16_when_the_cast_changed_the_fingerprint():
    zoo.get("decoder-allconv-cifar10", device="cpu").to(torch.float16).check()  # float16 holds the weights
    with pytest.raises(ValueError, match="cast to bfloat16"):
        zoo.get("decoder-allconv-cifar10", device="cpu").to(torch.bfloat16).check()


# --- half-precision models through the attacks, the detector and the runners -----------------

def _stamped(dtype: torch.dtype) -> adain.StyleAutoencoder:
    """An untrained autoencoder in ``dtype``, stamped as trained for its own encoder."""
    torch.manual_seed(0)
    ae = adain.allconv_style_autoencoder().to(dtype)
    ae.decoder.encoder_fingerprint.copy_(torch.tensor(list(ae.encoder.fingerprint()), dtype=torch.uint8))
    return ae


STYLE_DTYPES = [(torch.bfloat16, torch.float32), (torch.float32, torch.float16), (torch.bfloat16, torch.bfloat16)]


@pytest.mark.parametrize("model_dtype, ae_dtype", STYLE_DTYPES)
@pytest.mark.parametrize("param", ["log", "linear"])
def test_feature_augmentation_runs_each_network_in_its_dtype(model_dtype, ae_dtype, param):
    torch.manual_seed(1)
    model, ae = allconv_cifar().eval().to(model_dtype), _stamped(ae_dtype)
    x = torch.rand(2, 3, 32, 32)
    res = attacks.feature_augmentation(model, x, decoder=ae, steps=2, param=param, details=True, progress=False)
    assert res.images.dtype == x.dtype and res.images.shape == x.shape
    assert all(v.dtype == torch.float32 for v in res.variables)
    if param == "log":
        assert all(float(v.abs().max()) <= math.log(1.5) for v in res.variables)


@pytest.mark.parametrize("model_dtype, ae_dtype", STYLE_DTYPES)
def test_feature_interpolation_runs_each_network_in_its_dtype(model_dtype, ae_dtype):
    torch.manual_seed(1)
    model, ae = allconv_cifar().eval().to(model_dtype), _stamped(ae_dtype)
    x, protos = torch.rand(2, 3, 32, 32), torch.rand(2, 2, 3, 32, 32)
    res = attacks.feature_interpolation(model, x, protos, decoder=ae, steps=2, details=True, progress=False)
    assert res.images.dtype == x.dtype and res.images.shape == x.shape
    for w in res.variables:
        assert w.dtype == torch.float32 and torch.allclose(w.sum(1), torch.ones(2)) and bool((w >= 0).all())


def _lenet(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return lenet().eval().to(dtype)


def _digits(n: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(1)).float() / 255


@pytest.mark.parametrize("dtype", HALF)
def test_pgd_on_a_half_precision_model_stays_in_the_callers_dtype_and_box(dtype):
    x = _digits()
    adv, success, curve = attacks.pgd(_lenet(dtype), x, eps=0.1, steps=2, details=True,
                                      generator=torch.Generator().manual_seed(0))
    assert adv.dtype == torch.float32 and float((adv - x).abs().max()) <= 0.1 + 1e-7
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1 and success.shape == (4,) and len(curve) == 3


@pytest.mark.parametrize("dtype", HALF)
def test_noise_statistics_of_a_half_precision_model(dtype):
    net = _lenet(dtype)
    y, g = odds.noise_statistics(net, _digits(), feature_layer="ip1", head=net.net.ip2, draws=4,
                                 sources=odds.NOISE_SOURCES[::4])
    assert y.shape == (4,) and g.shape == (4, 3, 10) and bool(g.isfinite().all())


@pytest.mark.parametrize("dtype", HALF)
def test_lots_iterative_with_feature_tolerance_on_a_half_precision_model(dtype):
    net, x = _lenet(dtype), _digits()
    target = features.forward_to(net, x.flip(0).to(dtype), "ip1").detach()
    res = attacks.lots_iterative(net, x, target, layer="ip1", y_orig=runs.predict(net, x), max_steps=3,
                                 feature_tolerance=1e-3)
    assert res.images.dtype == x.dtype and res.images.shape == x.shape


@pytest.mark.parametrize("dtype", HALF)
def test_label_predictors_on_a_half_precision_model(dtype):
    net, x = _lenet(dtype), _digits(5)
    with torch.no_grad():
        expected = torch.cat([net(x[i:i + 2].to(dtype)).argmax(1) for i in range(0, 5, 2)])
    assert torch.equal(labels.predict_labels(net, x, batch_size=2), expected)
    assert torch.equal(labels.predict_labels(net, x, batch_size=2, device="cpu"), expected)
    pred = runs.predict(net, x, batch_size=2)
    assert pred.device.type == "cpu" and torch.equal(pred, expected)
    assert train.accuracy(net, x, expected, batch_size=2) == 1.0


@pytest.mark.parametrize("dtype", HALF)
def test_feature_helpers_and_robust_accuracy_on_a_half_precision_model(dtype):
    net, x = _lenet(dtype), _digits()
    assert runs.batched_features(net, x, "ip1", batch_size=2)["ip1"].dtype == dtype
    assert features.feature_shapes(net, (1, 28, 28))["ip1"] == (500,)
    assert 0 <= adversarial_training.robust_accuracy(net, x, runs.predict(net, x), steps=1, batch_size=2) <= 1


@pytest.mark.parametrize("dtype", HALF)
def test_boundary_points_of_a_half_precision_model(dtype):
    bp = curvature.boundary_points(_lenet(dtype), _digits(), 3, max_iter=2)
    assert bp.attempted <= 4 and len(bp.points) == len(bp.sources)


def test_decoder_quality_with_half_precision_networks():
    torch.manual_seed(1)
    classifier, x = allconv_cifar().eval().to(torch.bfloat16), torch.rand(3, 3, 32, 32)
    q = decoder_quality(_stamped(torch.float16), x, torch.zeros(3, dtype=torch.long), classifier, batch_size=2)
    assert math.isfinite(q["psnr_db"]) and 0 <= q["decoder_accuracy"] <= 1


# --- O2's noise keeps the CPU stream --------------------------------------------------------

def test_o2_noise_on_a_cpu_generator_is_the_old_stream():
    shape = (2, 3, 1, 4, 4)
    old = {"normal": lambda g: 0.01 * torch.randn(shape, generator=g),
           "sign": lambda g: 0.01 * (torch.randint(0, 2, shape, generator=g) * 2 - 1).float(),
           "uniform": lambda g: 0.01 * (torch.rand(shape, generator=g) * 2 - 1)}
    for kind, draw in old.items():
        new = odds._noise(kind, 0.01, shape, torch.Generator(device="cpu").manual_seed(3))
        assert new.dtype == torch.float32 and torch.equal(new, draw(torch.Generator().manual_seed(3)))


# --- the training precision policy ----------------------------------------------------------

def test_autocast_policy():
    assert isinstance(train._autocast(torch.device("cpu"), True), torch.autocast)
    for device in ("cpu", "meta"):
        with train._autocast(torch.device(device), False) as ctx:  # nothing built, nothing refused
            assert ctx is None
    with pytest.warns(UserWarning, match="not native on meta"):
        ctx = train._autocast(torch.device("meta"), True)
    assert not isinstance(ctx, torch.autocast)


def test_autocast_policy_falls_back_to_float32_before_ampere(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.warns(UserWarning, match="training in float32"):
        ctx = train._autocast(torch.device("cuda"), True)
    assert not isinstance(ctx, torch.autocast)


def test_both_trainers_use_the_one_policy(monkeypatch):
    seen, policy = [], train._autocast

    def spy(device, bf16):
        seen.append((device.type, bf16))
        return policy(device, bf16)

    monkeypatch.setattr(train, "_autocast", spy)
    monkeypatch.setattr(decoder_training, "_autocast", spy)
    torch.manual_seed(0)
    train.train_classifier(lenet(), _digits(4), torch.arange(4), train.TrainConfig(epochs=1, batch_size=4, bf16=True))
    ae = adain.allconv_style_autoencoder()
    decoder_training.train_decoder(ae, torch.rand(4, 3, 32, 32), torch.arange(4) % 2,
                                   decoder_training.DecoderConfig(steps=1, pairs=2, calibration_images=4))
    assert seen == [("cpu", True), ("cpu", False)]


def test_training_progress_shows_the_running_mean_of_the_batch_losses(monkeypatch):
    losses, shown = [], []

    def recorded(model, x, y, config):
        loss = train.cross_entropy_loss(model, x, y, config)
        losses.append(loss.item())
        return loss

    class Bar(train.tqdm):
        def set_postfix(self, *args, **kwargs):
            shown.append(kwargs["loss"])
            return super().set_postfix(*args, **kwargs)

    monkeypatch.setattr(train, "tqdm", Bar)
    torch.manual_seed(0)
    train.train_classifier(lenet(), _digits(44), torch.arange(44) % 10, train.TrainConfig(epochs=1, batch_size=2),
                           loss_fn=recorded)
    expected = []
    for i in (0, 20, 21):  # the batches where the bar is refreshed
        total = 0.0
        for value in losses[:i + 1]:
            total += value
        expected.append(f"{total / (i + 1):.3f}")
    assert shown == expected


# --- CUDA generators and data (skipped without a GPU) ---------------------------------------

@cuda
def test_cuda_generators_are_accepted():
    dev = torch.device("cuda")
    g = lambda: torch.Generator(device=dev).manual_seed(0)  # noqa: E731
    x = _digits().to(dev)
    net = _lenet(torch.float32).to(dev)
    assert attacks.pgd(net, x, eps=0.1, steps=1, generator=g()).device.type == "cuda"
    assert train.augment(x, crop_pad=2, flip=True, generator=g()).device.type == "cuda"
    y = torch.arange(4, device=dev) % 2
    i, j = decoder_training.same_class_pairs(y, 6, g())
    assert torch.equal(y[i], y[j]) and i.device.type == "cuda"
    assert bool((adversarial_training.random_wrong_labels(y, 10, g()) != y).all())
    assert adversarial_data.deform(x, g()).device.type == "cuda"
    assert class_prototypes(x, y, y[:2], 1, generator=g()).device.type == "cuda"


@cuda
def test_o2_draws_its_noise_on_the_heads_cuda_device(monkeypatch):
    net = _lenet(torch.float32).cuda()
    devices = []
    real = odds._noise

    def spy(kind, eps, shape, generator):
        devices.append(generator.device.type)
        return real(kind, eps, shape, generator)

    monkeypatch.setattr(odds, "_noise", spy)
    odds.noise_statistics(net, _digits(), feature_layer="ip1", head=net.net.ip2, draws=4,
                          sources=odds.NOISE_SOURCES[:1])
    assert devices and set(devices) == {"cuda"}


@cuda
def test_style_encoder_of_a_cuda_classifier_is_on_cuda():
    enc = adain.StyleEncoder(allconv_cifar().eval().cuda(), "conv2_1", ("conv1_1", "conv2_1"))
    dec = adain.Decoder(enc)
    assert enc.scale0.device.type == "cuda" and {t.device.type for t in dec.state_dict().values()} == {"cuda"}
    assert adain.StyleAutoencoder(enc, dec)(torch.rand(2, 3, 32, 32, device="cuda")).shape == (2, 3, 32, 32)
