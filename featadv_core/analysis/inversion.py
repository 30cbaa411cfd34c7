"""Representation inversion (Mahendran & Vedaldi 2015), as used for Fig. 2 of Sabour et al. 2016.

"One way to probe the internal representations, following Mahendran & Vedaldi, is to invert
the mapping, thereby reconstructing images from internal representations at specific layers."
:func:`invert` finds images ``x ∈ [0, 1]`` that minimise

    ‖φ(x) − φ₀‖² / ‖φ₀‖²  +  λ_TV · TV_β(x)  +  λ_α · mean|x − ½|^α

(the normalised representation loss, the total-variation prior ``TV_β`` of M&V and an
optional ``α``-norm prior), by Adam with projection onto the box after every step and optional
random jitter (the image is rolled by up to ``jitter`` pixels before each forward pass), for a
whole batch of targets at once — on the attacks' one projected loop
(:func:`featadv_core.attacks.projected.projected_descent`, the last iterate kept).
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..attacks.projected import Iterate, projected_descent
from ..features import forward_to

__all__ = ["total_variation", "invert"]


def total_variation(x: torch.Tensor, beta: float = 2.0, *, reduction: str = "mean") -> torch.Tensor:
    """``TV_β(x) = Σ_{c,i,j} ((x_{i,j+1} − x_{i,j})² + (x_{i+1,j} − x_{i,j})²)^{β/2}`` per image → ``(N,)``.

    Mahendran & Vedaldi 2015 (their ``R_{V^β}`` regulariser), on the ``(H−1)×(W−1)`` grid where both differences
    exist. ``reduction="mean"`` (default) divides by the number of terms so the value does not
    grow with the image size; ``"sum"`` gives the plain sum. For ``β < 2`` a tiny constant
    (1e-8) is added under the power so the gradient stays finite on flat regions.
    A constant image has TV 0.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be an N×C×H×W batch, got shape {tuple(x.shape)}")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"images must be at least 2×2 for total variation, got {tuple(x.shape[-2:])}")
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    base = x[..., :-1, :-1]
    dx = x[..., :-1, 1:] - base
    dy = x[..., 1:, :-1] - base
    sq = dx * dx + dy * dy
    terms = sq if beta == 2 else (sq + 1e-8) ** (beta / 2)
    terms = terms.flatten(1)
    return terms.mean(1) if reduction == "mean" else terms.sum(1)


def invert(model: torch.nn.Module, target_feats: torch.Tensor, *, layer: str,
           shape: tuple[int, ...] | None = None, steps: int = 200, lr: float = 0.1,
           tv_weight: float = 1.0, beta: float = 2.0, norm_weight: float = 0.0, alpha: float = 6.0,
           jitter: int = 0, init: str = "noise", seed: int = 0, batch_size: int | None = None,
           progress: bool = True) -> torch.Tensor:
    """Images in [0, 1] whose ``layer`` representation matches ``target_feats`` → ``N×C×H×W``.

    Mahendran & Vedaldi 2015 ("Understanding deep image representations by inverting them"):
    minimise ``‖φ(x) − φ₀‖²/‖φ₀‖² + tv_weight·TV_β(x) + norm_weight·mean|x − ½|^α`` over
    ``x ∈ [0, 1]`` with Adam (``lr``, ``steps``), clipping to the box after each step.

    * ``target_feats``: the targets ``φ₀``, as :func:`featadv_core.features.forward_to` returns
      them for ``layer`` (``N×C×H×W`` or flattened ``N×D``); they are detached.
    * ``shape``: the image shape ``C×H×W``; default ``model.input_shape`` (zoo models).
    * ``tv_weight``/``beta``: the total-variation prior (:func:`total_variation`, mean
      reduction, pixel units); ``norm_weight``/``alpha``: the optional α-norm prior (off).
    * ``jitter``: each step the batch is rolled by a random shift of up to ``jitter`` pixels
      (M&V's jitter against high-frequency artefacts). Off by default: on 32×32 images a
      1-pixel roll is a quarter of a ``conv3`` cell and made reconstructions worse (higher
      feature and pixel error); worth trying on ImageNet-size inputs.
    * ``init``: ``"noise"`` (grey + uniform noise of ±0.05, from ``seed``) or ``"grey"`` (0.5).
    * ``batch_size``: targets per optimisation batch (default: all at once).

    Defaults (200 steps, Adam lr 0.1, TV weight 1 with β = 2, no jitter) were chosen on
    ``caffenet-cifar10``: from ``conv3`` they give recognisable reconstructions of 32×32
    CIFAR-10 images (relative feature loss ≈ 0.005, pixel MSE ≈ 0.008; ~15 s for 8 images on 2
    CPU cores); TV weights 0.01–0.3 left visible noise, 3 over-smoothed. From ``pool5`` and
    ``fc7`` they recover colour layout and little else, as expected of deeper layers (Fig. 2).
    The model is used as is (pass it in eval mode); its parameters and mode are not changed,
    and no gradient is accumulated into them.
    """
    target = target_feats.detach()
    if target.ndim < 2 or target.shape[0] == 0:
        raise ValueError(f"target_feats must be a non-empty batch N×..., got shape {tuple(target.shape)}")
    if shape is None:
        shape = getattr(model, "input_shape", None)
        if shape is None:
            raise ValueError("pass shape=(C, H, W): the model has no input_shape attribute")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape}")
    if steps < 0 or lr <= 0 or tv_weight < 0 or norm_weight < 0 or jitter < 0:
        raise ValueError("steps, tv_weight, norm_weight and jitter must be non-negative and lr positive")
    if init not in ("noise", "grey"):
        raise ValueError(f"init must be 'noise' or 'grey', got {init!r}")
    n = target.shape[0]
    batch_size = n if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device, dtype = target.device, (target.dtype if target.is_floating_point() else torch.get_default_dtype())
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():     # probe once: the layer exists and its size matches the targets
        probe = forward_to(model, torch.full((1, *shape), 0.5, device=device, dtype=dtype), layer)
    if probe[0].numel() != target[0].numel():
        raise ValueError(f"target_feats have {target[0].numel()} values per image but layer {layer!r} "
                         f"gives {probe[0].numel()} for images of shape {shape}")
    target = target.reshape(n, -1).to(dtype)

    x0 = torch.full((n, *shape), 0.5, dtype=dtype)
    if init == "noise":
        x0 = x0 + (torch.rand(x0.shape, generator=gen, dtype=dtype, device="cpu") - 0.5) * 0.1
    shifts = torch.randint(-jitter, jitter + 1, (max(steps, 1), 2), generator=gen, device="cpu").tolist()
    x0 = x0.to(device)

    out = []
    chunks = range(0, n, batch_size)
    for start in tqdm(chunks, desc=f"inverting {layer}", disable=not progress or len(chunks) == 1, leave=False):
        tgt = target[start:start + batch_size]
        tgt_sq = (tgt * tgt).sum(1).clamp_min(torch.finfo(dtype).tiny)
        step = iter(shifts)

        def evaluate(v, tgt=tgt, tgt_sq=tgt_sq, step=step):
            x = v[0]
            dy, dx = next(step)
            xs = torch.roll(x, shifts=(dy, dx), dims=(2, 3)) if (dy or dx) else x
            feat = forward_to(model, xs, layer).reshape(x.shape[0], -1)
            loss = ((feat - tgt) ** 2).sum(1) / tgt_sq
            if tv_weight:
                loss = loss + tv_weight * total_variation(x, beta)
            if norm_weight:
                loss = loss + norm_weight * ((x - 0.5).abs() ** alpha).flatten(1).mean(1)
            none = torch.zeros(len(x), dtype=torch.bool, device=x.device)
            return Iterate(loss=loss, success=none, rank=loss.detach(), output=x)

        res = projected_descent(evaluate, [x0[start:start + batch_size]], project=lambda v: v[0].clamp_(0.0, 1.0),
                                steps=steps, lr=lr, method="adam", keep="last", progress=progress and len(chunks) == 1,
                                desc=f"inverting {layer}")
        out.append(res.variables[0])
    return torch.cat(out).clamp_(0.0, 1.0)
