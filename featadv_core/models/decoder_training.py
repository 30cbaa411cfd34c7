"""Training the style decoder g on same-class AdaIN pairs (§3.1, Eq. 7–8, Fig. 2a).

For a content image ``x_p`` and a style image ``x_q`` *of the same class*, the target is
``t = AdaIN(f(x_p), f(x_q))`` and the reconstruction ``x_r = g(t)``. The decoder minimises

    L_c = Σ_c mean_hw (f(x_r)_c − t_c)²                                    (Eq. 7, the code's form)
    L_s = Σ_{l ∈ style layers} Σ_c (μ_c(φ_l(x_q)) − μ_c(φ_l(x_r)))² + (σ_c(φ_l(x_q)) − σ_c(φ_l(x_r)))²   (Eq. 8)

per pair, ``L_c + w·L_s`` with the authors' ``w = 1``, summed over the batch — the code's ReLU
layers and standard deviations (the paper writes conv layers and "variance").

An optional pixel term ``λ·‖g(f(x_p)) − x_p‖²`` (``DecoderConfig.pixel_weight``; 0, the paper,
by default) also asks the decoder to invert the content image's own embedding. It is a
deviation for CPU budgets: the feature losses leave pixel directions that the encoder barely
sees unconstrained, and at ~1 % of the paper's training they plateau near 21–23 dB PSNR, while
the same decoder trained on pixels alone passes 25 dB within ~1,300 steps (measured; see the
chapter's decoder page). The paper's decoder gets its fidelity from 300k steps instead. The encoder is
fixed and the classifier plays no part; ``g(f(x))`` (the "Decoder" row) is never trained
directly. Pairs are drawn afresh every step, uniformly within a random class — the code's
disjoint per-class buckets have the same distribution. Adam with inverse-time decay
``lr_t = lr / (1 + decay·t)``, as the code (1e-4, 2e-5, 300k steps × 64 pairs at paper scale).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .adain import StyleAutoencoder, adain, channel_stats
from .train import _autocast

__all__ = ["DecoderConfig", "decoder_losses", "same_class_pairs", "train_decoder", "fit_decoder"]


@dataclass(frozen=True)
class DecoderConfig:
    """A decoder training run: steps × pairs per step, Adam's lr and its inverse-time decay."""

    steps: int
    pairs: int = 32
    lr: float = 1e-3           # paper scale 1e-4 (300k steps); the CPU budget is ~1% of that
    decay: float = 1e-3        # lr_t = lr / (1 + decay·t); paper scale 2e-5
    warmup: int = 250          # linear warm-up steps (not in the code: see train_decoder)
    style_weight: float = 1.0
    pixel_weight: float = 0.0  # λ of the identity-reconstruction pixel term (a deviation; the paper: 0)
    calibration_images: int = 1000
    bf16: bool = False
    seed: int = 0


def decoder_losses(ae: StyleAutoencoder, content: torch.Tensor, style: torch.Tensor, *,
                   pixel: bool = False) -> tuple[torch.Tensor, ...]:
    """Per-pair content and style losses (Eq. 7 and 8) of reconstructing AdaIN(content, style).

    With ``pixel``, also the per-image squared pixel error of ``g(f(content))`` (the optional
    identity term of :class:`DecoderConfig`), as a third tensor."""
    with torch.no_grad():
        embedding = ae.encoder(content)
        target = adain(embedding, ae.encoder(style))
        style_stats = [channel_stats(f) for f in ae.encoder.styles(style)]
    feats = ae.encoder.styles(ae.decoder(target))
    l_content = (feats[-1] - target).pow(2).mean(dim=(2, 3)).sum(1)
    l_style = sum(((m - channel_stats(f)[0]).pow(2) + (s - channel_stats(f)[1]).pow(2)).flatten(1).sum(1)
                  for f, (m, s) in zip(feats, style_stats))
    if not pixel:
        return l_content, l_style
    return l_content, l_style, (ae.decoder(embedding) - content).pow(2).flatten(1).sum(1)


def same_class_pairs(y: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random (content, style) index pairs with equal labels ``y`` (uniform over images).

    Drawn on ``generator``'s device; the indices are on ``y``'s."""
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y)
    starts = torch.cumsum(counts, 0) - counts
    g = generator.device
    first = torch.randint(0, len(y), (n,), generator=generator, device=g).to(y.device)
    label = y[first]
    u = torch.rand(n, generator=generator, device=g).to(y.device)
    second = starts[label] + (u * counts[label]).long().clamp_max(counts[label] - 1)
    return first, order[second]


def train_decoder(ae: StyleAutoencoder, x: torch.Tensor, y: torch.Tensor, config: DecoderConfig, *,
                  desc: str = "training decoder") -> list[dict]:
    """Calibrate ``ae.encoder`` on ``x`` and train ``ae.decoder`` in place; returns the loss log.

    The first ``config.calibration_images`` images (a seeded random choice) set the feature
    scales; then ``config.steps`` Adam steps on fresh same-class pairs. The learning rate warms up
    linearly over ``config.warmup`` steps (a deviation from the code, which starts at full rate
    with 10× smaller lr): at our CPU learning rate, a full first step can push the output past the
    [0, 1] clamp everywhere, where its gradient is zero, and the decoder never recovers (seen:
    the losses stuck from step 1). Records the encoder's
    fingerprint in the decoder (:meth:`StyleAutoencoder.check`). The log has the mean content and
    style losses (and the pixel term's, when it is on) every 50 steps.
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need at least two labelled images, got {len(x)} images and {len(y)} labels")
    device = ae.decoder.mean.device
    generator = torch.Generator().manual_seed(config.seed)  # on the CPU on every device: the same pairs
    torch.manual_seed(config.seed)
    calib = torch.randperm(len(x), generator=generator, device="cpu")[:config.calibration_images]
    ae.encoder.calibrate(x[calib])
    ae.decoder.encoder_fingerprint.copy_(torch.tensor(list(ae.encoder.fingerprint()), dtype=torch.uint8))
    opt = torch.optim.Adam(ae.decoder.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / max(config.warmup, 1)) / (1.0 + config.decay * t))
    pixel = config.pixel_weight > 0
    names = ("content", "style", "pixel")[:3 if pixel else 2]
    log, running = [], torch.zeros(len(names), device=device)  # on the device: one host sync per 50 steps
    autocast = _autocast(device, config.bf16)
    ae.decoder.train()
    bar = tqdm(range(config.steps), desc=desc, unit="step", leave=False)
    for step in bar:
        i, j = same_class_pairs(y, config.pairs, generator)
        with autocast:
            losses = decoder_losses(ae, x[i].to(device), x[j].to(device), pixel=pixel)
            loss = (losses[0] + config.style_weight * losses[1]).sum()
            if pixel:
                loss = loss + config.pixel_weight * losses[2].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += torch.stack([part.detach().float().mean() for part in losses])
        if (step + 1) % 50 == 0 or step + 1 == config.steps:
            means = (running / ((step % 50) + 1)).tolist()
            log.append({"step": step + 1, **dict(zip(names, means))})
            bar.set_postfix({n: f"{v:.3f}" for n, v in zip(names, means)})
            running.zero_()
    ae.eval()
    return log


def fit_decoder(ae: StyleAutoencoder, recipe, base: torch.nn.Module) -> dict:
    """The zoo's trainer: the encoder takes ``base``'s weights, then :func:`train_decoder` on its data.

    Returns the card's ``training_log`` (mean losses every 50 steps)."""
    from .. import data
    from .adain import StyleEncoder

    enc = ae.encoder
    fresh = StyleEncoder(base, enc.layer, enc.style_layers, padding_mode=enc.padding_mode)
    enc.load_state_dict(fresh.state_dict())
    with torch.no_grad():  # the weights the zoo's float16 checkpoint will hold: train (and fingerprint) on those
        for t in enc.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    ae.decoder.mean.copy_(enc.normalize.mean)  # the decoder undoes the encoder's own normalisation
    ae.decoder.std.copy_(enc.normalize.std)
    x, y = data.load(recipe.dataset, "train")
    return {"training_log": train_decoder(ae, x, y, recipe.config, desc=f"training decoder on {recipe.dataset}"),
            "train_size": len(x)}
