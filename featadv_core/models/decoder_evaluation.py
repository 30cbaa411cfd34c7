"""The decoder's quality gate (chapter 3): PSNR, pixel distances and the accuracy on reconstructions.

Kept apart from :mod:`.decoder_training` on purpose: a zoo recipe's key fingerprints its
trainer's module, and measuring a decoder (which may look up a classifier in the zoo) must not
change what trained it.
"""
from __future__ import annotations

import torch

from .adain import StyleAutoencoder

__all__ = ["psnr", "decoder_quality", "evaluate_decoder"]


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB (peak 1)."""
    mse = (x - ref).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10 * torch.log10(mse)



@torch.no_grad()
def decoder_quality(ae: StyleAutoencoder, x: torch.Tensor, y: torch.Tensor, classifier: torch.nn.Module, *,
                    batch_size: int = 250) -> dict:
    """Quality gate of a decoder on images ``x``: PSNR of ``g(f(x))``, pixel ℓ∞/ℓ2, accuracies.

    ``decoder_accuracy`` is ``classifier``'s accuracy on the reconstructions, ``clean_accuracy``
    on the images themselves (the paper's "Decoder" and "None" rows of Table 2).
    """
    device = ae.decoder.mean.device
    rec = torch.cat([ae(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
    pred = lambda z: torch.cat([classifier(z[i:i + batch_size].to(device)).argmax(1).cpu()
                                for i in range(0, len(z), batch_size)])
    diff = (rec - x).flatten(1)
    return {"psnr_db": psnr(rec, x).mean().item(), "pixel_linf": diff.abs().amax(1).mean().item(),
            "pixel_l2": diff.norm(dim=1).mean().item(), "clean_accuracy": (pred(x) == y).float().mean().item(),
            "decoder_accuracy": (pred(rec) == y).float().mean().item(), "quality_images": len(x)}


def evaluate_decoder(ae: StyleAutoencoder, recipe, base: torch.nn.Module) -> dict:
    """The zoo card's entries: :func:`decoder_quality` on 2,000 test images.

    The classifier is ``base`` when it classifies the decoder's dataset (the encoder's own
    network), else the zoo's ``allconv-<dataset>`` (an ImageNet VGG-19 encoder on CIFAR-10)."""
    from .. import data
    from . import zoo

    classifier = base if base.card.get("dataset") == recipe.dataset else zoo.get(f"allconv-{recipe.dataset}",
                                                                                 device=ae.decoder.mean.device)
    x, y = data.load(recipe.dataset, "test", n=2000, seed=0)
    return dict(decoder_quality(ae, x, y, classifier), quality_classifier=classifier.model_id)
