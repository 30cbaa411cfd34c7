"""The style encoder f, the AdaIN combination and the mirror decoder g of the feature-space attack.

Towards Feature Space Adversarial Attack (ICLR 2020 submission; Xu et al., AAAI 2021), §3.1:
an image's embedding ``B = f(x)`` (the first layers of a classifier, cut at ``relu2_1`` for
CIFAR-10) is split into per-channel *style* — the spatial mean ``μ_c(B)`` and standard deviation
``σ_c(B)`` — and the normalised *content* ``(B_c − μ_c)/σ_c``. The AdaIN combination (Eq. 5–6)
puts one image's content under another's style; a decoder trained to invert it (§3.1 Eq. 7–8,
:mod:`.decoder_training`) turns perturbed styles back into images.

* :func:`channel_stats` — ``μ_c``, ``σ_c = sqrt(Var_hw + 1e-5)`` (population variance; the 1e-5
  is the authors' code's, Eq. 5 has none);
* :func:`adain` — Eq. 5–6; :func:`normalise` — the channel-normalised embedding ``h`` of
  Appendix A.1's feature distances;
* :class:`StyleEncoder` — any named-layer classifier cut at a layer (its Normalize included),
  with the convolutions' padding swapped to reflection as in the authors' code, and a per-channel
  **feature-scale calibration** (mean activation 1 on training images, the convention of the
  normalised VGG-19 the authors used, so that their loss weights and learning rates carry over);
* :class:`Decoder` — the encoder's mirror: 3×3 reflection-padded convolutions in reverse order,
  nearest-neighbour ×2 upsampling where the encoder max-pools, ReLU after every conv but the
  last, whose output is mapped back through the encoder's normalisation and clamped to [0, 1];
* :class:`StyleAutoencoder` — the pair; called on images it returns their reconstruction
  ``g(f(x))`` (the paper's "Decoder" row), and it refuses a decoder trained for another encoder.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
import hashlib

import torch
from torch import nn

from .architectures.allconv import allconv_cifar
from .architectures.named import NamedLayerNet, Normalize
from .architectures.torchvision_names import torchvision_layer_map

__all__ = ["STAT_EPS", "channel_stats", "adain", "normalise", "StyleEncoder", "Decoder", "StyleAutoencoder",
           "allconv_style_autoencoder", "vgg19_style_autoencoder", "VGG19_ENCODER_LAYERS"]

VGG19_ENCODER_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1")  # post-ReLU: the AdaIN code's relu1_1…relu4_1

STAT_EPS = 1e-5  # inside σ's square root, as in the authors' code


def channel_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel spatial mean and std of N×C×H×W features, each N×C×1×1 (Eq. 5's μ and σ)."""
    if features.dim() != 4:
        raise ValueError(f"features must be N×C×H×W, got shape {tuple(features.shape)}")
    mean = features.mean(dim=(2, 3), keepdim=True)
    var = features.var(dim=(2, 3), keepdim=True, unbiased=False)
    return mean, (var + STAT_EPS).sqrt()


def normalise(features: torch.Tensor) -> torch.Tensor:
    """``(B − μ(B)) / σ(B)`` per channel: the content part of an embedding (the paper's ``h``)."""
    mean, std = channel_stats(features)
    return (features - mean) / std


def adain(content: torch.Tensor, style: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """AdaIN (Eq. 5–6): ``σ(B^q) · (B^p − μ(B^p)) / σ(B^p) + μ(B^q)`` per channel.

    ``style`` is the style embedding ``B^q`` (same N and C as ``content``, any spatial size) or
    its statistics ``(μ, σ)`` as N×C×1×1 tensors.
    """
    mean, std = channel_stats(style) if isinstance(style, torch.Tensor) else style
    if mean.shape[:2] != content.shape[:2]:
        raise ValueError(f"content and style must have the same batch and channels, got "
                         f"{tuple(content.shape[:2])} and {tuple(mean.shape[:2])}")
    return std * normalise(content) + mean


def _reflect(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.padding != (0, 0):
            m.padding_mode = "reflect"


def _prefix(module: nn.Module, path: list[str], full: str) -> nn.Module:
    """The part of ``module`` that computes the sub-module at dotted ``path``, ending there."""
    if not path:
        return module
    head, rest = path[0], path[1:]
    if isinstance(module, nn.Sequential):
        names = [name for name, _ in module.named_children()]
        if head not in names:
            raise ValueError(f"cannot cut at {full!r}: {head!r} is not a child of the sequential block")
        kept = [(name, child) for name, child in module.named_children()][:names.index(head) + 1]
        kept[-1] = (head, _prefix(kept[-1][1], rest, full))
        return nn.Sequential(OrderedDict(kept))
    if head == "features" and hasattr(module, "features"):  # torchvision VGG / AlexNet run features first
        return _prefix(module.features, rest, full)
    raise ValueError(f"cannot cut {type(module).__name__} at {full!r}: only sequential blocks (and the "
                     "features of torchvision's VGG/AlexNet) can be truncated")


class StyleEncoder(nn.Module):
    """``f``: a classifier's first layers up to ``layer``, returning calibrated features.

    ``style_layers`` (in forward order, ending with ``layer``) are where the decoder's style loss
    (Eq. 8) compares statistics — the paper's relu1_1 and relu2_1 for CIFAR-10. The encoder is a
    copy: the classifier is not changed. ``padding_mode="reflect"`` swaps its convolutions'
    zero padding for reflection, as the authors' code does on VGG-19 (against border seams);
    ``"zeros"`` keeps the classifier's own function.

    Each style layer's output is divided per channel by ``scale`` (buffers, 1 until
    :meth:`calibrate` sets them to the mean activation on training images; channels that are
    dead there keep 1). AdaIN and the attack are equivariant to this scaling; it fixes the
    magnitude their loss weights assume.
    """

    def __init__(self, model: NamedLayerNet, layer: str, style_layers: tuple[str, ...] | None = None, *,
                 padding_mode: str = "reflect"):
        super().__init__()
        layer_map = getattr(model, "layer_map", None)
        if layer_map is None or not hasattr(model, "normalize"):
            raise ValueError("StyleEncoder needs a named-layer model (a zoo model: Normalize first, layer_map)")
        names = list(layer_map)
        style_layers = tuple(style_layers or (layer,))
        unknown = [n for n in (layer, *style_layers) if n not in layer_map]
        if unknown:
            raise ValueError(f"unknown encoder layer(s) {', '.join(map(repr, unknown))}; valid layers: {', '.join(names)}")
        order = [names.index(n) for n in style_layers]
        if style_layers[-1] != layer or order != sorted(set(order)):
            raise ValueError(f"style_layers must be distinct, in forward order and end with the encoder layer "
                             f"{layer!r}; got {style_layers}")
        if padding_mode not in ("reflect", "zeros"):
            raise ValueError(f"padding_mode must be 'reflect' or 'zeros', got {padding_mode!r}")
        self.layer, self.style_layers = layer, style_layers
        self.normalize = copy.deepcopy(model.normalize)
        stages, done = [], []
        for name in style_layers:
            path = layer_map[name].split(".")
            if path[0] != "net":
                raise ValueError(f"layer {name!r} maps to {layer_map[name]!r}, outside the model's network")
            full = list(_prefix(model.net, path[1:], layer_map[name]).children())
            before = list(done)
            if before and full[len(before) - 1] is not before[-1]:
                raise ValueError(f"style layer {name!r} is inside the block that ends the previous style layer; "
                                 "choose style layers at the network's top-level blocks")
            stages.append(copy.deepcopy(nn.Sequential(*full[len(before):])))
            done = full
        self.stages = nn.ModuleList(stages)
        if padding_mode == "reflect":
            _reflect(self.stages)
        self.padding_mode = padding_mode
        for p in self.parameters():
            p.requires_grad_(False)
        # probe and scales on the model's device and in its dtype (a CUDA or half-precision classifier)
        ref = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
        dev = ref.device if ref is not None else torch.device("cpu")
        dt = ref.dtype if ref is not None else torch.get_default_dtype()
        with torch.no_grad():
            shapes = [t.shape[1] for t in self._raw(torch.zeros(1, *model.input_shape, device=dev, dtype=dt))]
        for i, c in enumerate(shapes):
            self.register_buffer(f"scale{i}", torch.ones(1, c, 1, 1, device=dev, dtype=dt))
        self.input_shape = tuple(model.input_shape)
        self.channels = shapes[-1]

    def train(self, mode: bool = True) -> "StyleEncoder":
        """A fixed encoder: always in eval mode (its batch norms are fixed affine maps)."""
        return super().train(False)

    def _raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], self.normalize(x)
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    def styles(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The calibrated features at every style layer (the last one is the embedding ``f(x)``)."""
        return [h / getattr(self, f"scale{i}") for i, h in enumerate(self._raw(x))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalize(x)
        for stage in self.stages:
            h = stage(h)
        return h / getattr(self, f"scale{len(self.stages) - 1}")

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, *, batch_size: int = 250) -> "StyleEncoder":
        """Set each style layer's per-channel scale to its mean activation on images ``x``.

        The scales are rounded to float16 precision, as every checkpoint of the zoo, so the
        encoder's fingerprint is the same before and after saving. Returns ``self``.
        """
        sums = None
        for i in range(0, len(x), batch_size):
            feats = self._raw(x[i:i + batch_size].to(self.scale0.device))
            means = [f.mean(dim=(0, 2, 3)) * len(f) for f in feats]
            sums = means if sums is None else [s + m for s, m in zip(sums, means)]
        for i, s in enumerate(sums):
            a = (s / len(x)).clamp_min(0)
            a = torch.where(a > 1e-4 * a.max().clamp_min(1e-30), a, torch.ones_like(a))
            getattr(self, f"scale{i}").copy_(a.view(1, -1, 1, 1).half().float())
        return self

    def fingerprint(self) -> bytes:
        """SHA-256 (32 bytes) of the encoder's weights and scales, as float32 values on any device:
        what a decoder is trained for. The zoo's float16-rounded weights hash the same in float16,
        float32 and float64, not in bfloat16 (which rounds them)."""
        digest = hashlib.sha256()
        for name, t in self.state_dict().items():
            digest.update(name.encode())
            digest.update(t.detach().cpu().float().contiguous().numpy().tobytes())
        return digest.digest()


class Decoder(nn.Module):
    """``g``, the mirror of a :class:`StyleEncoder` (§2.3 of the chapter's spec).

    Convolutions in the encoder's reverse order with in/out channels swapped, 3×3, reflection
    padding, ReLU after all but the last; each encoder max-pool becomes a nearest ×2
    upsampling (no transposed convolutions: no checkerboards). The last conv's output is in the
    encoder's normalised input space; ``mean + std ·`` it, clamped to [0, 1], is the image (a
    hard clamp, as the code clips to [0, 255]). ``encoder_fingerprint`` records which encoder
    it was trained for (zeros: untrained). ``width`` multiplies the hidden convolutions'
    channels (1: the exact mirror; the paper's CIFAR-10 decoder has VGG's 64 there, twice
    our half-width encoder's 32).
    """

    def __init__(self, encoder: StyleEncoder, width: int = 1):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        convs: list[tuple[str, int, int]] = []
        for stage in encoder.stages:
            for m in stage.modules():
                if isinstance(m, nn.Conv2d):
                    convs.append(("conv", m.in_channels, m.out_channels))
                elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                    convs.append(("pool", 0, 0))
        layers: list[nn.Module] = []
        mirrored = list(reversed(convs))
        last = max(i for i, (kind, _, _) in enumerate(mirrored) if kind == "conv")
        first = min(i for i, (kind, _, _) in enumerate(mirrored) if kind == "conv")
        for i, (kind, cin, cout) in enumerate(mirrored):
            if kind == "pool":
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                continue
            c_in = cout if i == first else cout * width
            c_out = cin if i == last else cin * width
            conv = nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="reflect")
            nn.init.xavier_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
            layers.append(conv)
            if i < last:
                layers.append(nn.ReLU())
        dev = encoder.normalize.mean.device
        self.net = nn.Sequential(*layers).to(device=dev)  # drawn on the CPU (the seeded stream), then moved
        self.channels = convs[-1][2] if convs[-1][0] == "conv" else None
        self.register_buffer("mean", encoder.normalize.mean.clone())
        self.register_buffer("std", encoder.normalize.std.clone())
        self.register_buffer("encoder_fingerprint", torch.zeros(32, dtype=torch.uint8, device=dev))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return (self.mean + self.std * self.net(embedding)).clamp(0, 1)


class StyleAutoencoder(nn.Module):
    """An encoder and its decoder. ``ae(x)`` is ``g(f(x))``; ``ae.decode(t)`` is ``g(t)``.

    :meth:`check` raises ``ValueError`` when the decoder was trained for another encoder (its
    recorded fingerprint differs from the encoder's); the attacks call it.
    """

    def __init__(self, encoder: StyleEncoder, decoder: Decoder):
        super().__init__()
        if decoder.channels is not None and decoder.net[0].in_channels != encoder.channels:
            raise ValueError(f"the decoder takes {decoder.net[0].in_channels}-channel embeddings but the encoder "
                             f"gives {encoder.channels}")
        self.encoder, self.decoder = encoder, decoder
        self.input_shape = encoder.input_shape

    def check(self) -> "StyleAutoencoder":
        recorded = bytes(self.decoder.encoder_fingerprint.tolist())
        if recorded == bytes(32):
            raise ValueError("this decoder is untrained (no encoder fingerprint); train it with "
                             "featadv_core.models.decoder_training.train_decoder or use a zoo decoder")
        if recorded != self.encoder.fingerprint():
            if any(t.dtype == torch.bfloat16 for t in self.encoder.state_dict().values()):
                raise ValueError("the encoder's fingerprint differs from the one this decoder recorded: the encoder "
                                 "was cast to bfloat16, which rounds its weights; keep it in float32/float16 and "
                                 "use torch.autocast for bfloat16 instead")
            raise ValueError("this decoder was trained for another encoder (its recorded encoder fingerprint "
                             "differs from this encoder's weights/calibration); use the decoder trained with it")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def decode(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.decoder(embedding)


def allconv_style_autoencoder(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)) -> StyleAutoencoder:
    """The CPU default: ``allconv-cifar10`` cut at ``conv2_1`` (VGG-19's relu2_1 at half width).

    Style layers ``conv1_1`` and ``conv2_1`` (rectified, the code's relu1_1/relu2_1); embedding
    64×16×16 for a 32×32 image. The decoder's hidden convolutions have 64 channels, as the paper's
    CIFAR-10 decoder (twice the exact mirror's 32; measured +0.7 dB PSNR at 1,000 training steps).
    Weights here are untrained: the zoo loads the checkpoint.
    """
    encoder = StyleEncoder(allconv_cifar(mean=mean, std=std).eval(), "conv2_1", ("conv1_1", "conv2_1"))
    return StyleAutoencoder(encoder, Decoder(encoder, width=2))


def vgg19_style_autoencoder(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layer: str = "conv2_1") -> StyleAutoencoder:
    """The paper's encoder: torchvision VGG-19 cut at relu2_1 (CIFAR-10; ``conv4_1`` for ImageNet), the mirror decoder.

    Style layers: every ``convN_1`` up to ``layer`` (the code's relu1_1 … relu4_1). The architecture only:
    the zoo's trainer copies the pretrained ``vgg19``'s weights (and its ImageNet normalisation) in.
    """
    import torchvision

    names = list(VGG19_ENCODER_LAYERS)
    if layer not in names:
        raise ValueError(f"unknown VGG-19 encoder layer {layer!r}; valid: {', '.join(names)}")
    net = torchvision.models.vgg19(weights=None)
    layer_map = {name: path for name, path in torchvision_layer_map("vgg19", net).items() if name in names}
    vgg = NamedLayerNet(Normalize(mean, std), net, layer_map, (3, 32, 32)).eval()
    encoder = StyleEncoder(vgg, layer, tuple(names[:names.index(layer) + 1]))
    return StyleAutoencoder(encoder, Decoder(encoder))
