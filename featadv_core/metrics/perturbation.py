"""Perturbation sizes of chapter 3's tables (Appendix A.1, Tables 3, 5, 6): pixels and embeddings.

* pixel: per image, ``‖x' − x‖∞`` and ``‖x' − x‖₂`` over all C·H·W values on the [0, 1] scale
  (the paper's units: a 16/255 PGD on 224² ImageNet images has ℓ2 ≈ 19, as in its Table 6);
* feature: the distance between the **channel-normalised** embeddings
  ``h(x)_c = (f(x)_c − μ_c)/σ_c`` of the attack's encoder, ℓ∞ and ℓ2 over all C·h·w entries
  (the authors' ``normalize``). ``h`` removes exactly the per-channel mean and std that the
  style attack changes, so on it FSA looks no larger than PGD almost by construction;
  ``norm="none"`` gives the complement, ``‖f(x') − f(x)‖ / ‖f(x)‖`` on the raw embedding.
"""
from __future__ import annotations

import torch

from ..models.adain import StyleEncoder, normalise

__all__ = ["pixel_distances", "feature_distances"]


def _pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"the two batches must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def pixel_distances(x_adv: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"linf", "l2"}``: per-image pixel distances (length-N tensors) on the [0, 1] scale."""
    _pair(x_adv, x)
    d = (x_adv - x).flatten(1)
    return {"linf": d.abs().amax(1), "l2": d.norm(dim=1)}


@torch.no_grad()
def feature_distances(encoder: StyleEncoder, x_adv: torch.Tensor, x: torch.Tensor, *, norm: str = "channel",
                      batch_size: int = 250) -> dict[str, torch.Tensor]:
    """``{"linf", "l2"}``: per-image distances between the embeddings of ``x_adv`` and ``x``.

    ``norm="channel"``: between ``h(x')`` and ``h(x)`` (the paper's feature distance);
    ``norm="none"``: ``‖f(x') − f(x)‖ / ‖f(x)‖`` for both norms (relative, scale-free).
    """
    _pair(x_adv, x)
    if norm not in ("channel", "none"):
        raise ValueError(f"norm must be 'channel' or 'none', got {norm!r}")
    device = next(encoder.buffers()).device
    out = {"linf": [], "l2": []}
    for i in range(0, len(x), batch_size):
        fa, fx = encoder(x_adv[i:i + batch_size].to(device)), encoder(x[i:i + batch_size].to(device))
        if norm == "channel":
            d = (normalise(fa) - normalise(fx)).flatten(1)
            out["linf"].append(d.abs().amax(1).cpu())
            out["l2"].append(d.norm(dim=1).cpu())
        else:
            d, ref = (fa - fx).flatten(1), fx.flatten(1)
            out["linf"].append((d.abs().amax(1) / ref.abs().amax(1).clamp_min(1e-12)).cpu())
            out["l2"].append((d.norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).cpu())
    return {k: torch.cat(v) for k, v in out.items()}
