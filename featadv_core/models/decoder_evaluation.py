"""The decoder's quality gate (chapter 3): PSNR, pixel distances and the accuracy on reconstructions.

Kept apart from :mod:`.decoder_training`: measuring a decoder is not training it. The zoo's card
entry (:func:`featadv_core.models.zoo.evaluate_decoder`, which looks up a classifier in the zoo)
lives in the zoo, so that this module does not import it.
"""
from __future__ import annotations

import torch

from ..features import model_dtype
from ..labels import predict_labels
from .adain import StyleAutoencoder

__all__ = ["psnr", "decoder_quality"]


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
    device, dtype = ae.decoder.mean.device, model_dtype(ae, x.dtype)
    rec = torch.cat([ae(x[i:i + batch_size].to(device=device, dtype=dtype)).to(x.dtype).cpu()
                     for i in range(0, len(x), batch_size)])
    pred = lambda z: predict_labels(classifier, z, batch_size=batch_size, device=device).cpu()
    diff = (rec - x).flatten(1)
    return {"psnr_db": psnr(rec, x).mean().item(), "pixel_linf": diff.abs().amax(1).mean().item(),
            "pixel_l2": diff.norm(dim=1).mean().item(), "clean_accuracy": (pred(x) == y).float().mean().item(),
            "decoder_accuracy": (pred(rec) == y).float().mean().item(), "quality_images": len(x)}
