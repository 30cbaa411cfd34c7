"""The feature-space attack by style perturbation (FSA): feature augmentation and interpolation.

Towards Feature Space Adversarial Attack (ICLR 2020 submission; Xu et al., AAAI 2021), §3.2.
The image's embedding ``B = f(x)`` keeps its normalised content while its per-channel style
(mean ``μ_c``, std ``σ_c``) is perturbed, and the decoder turns it back into an image:

* **feature augmentation** (FA, Eq. 9): ``a(B)_c = e^{τ^σ_c}(B_c − μ_c) + e^{τ^μ_c} μ_c`` with
  ``‖τ^μ‖∞, ‖τ^σ‖∞ ≤ ε`` — each channel's std and mean scaled by at most ``e^ε``
  (ε = ln 1.5 untargeted, ln 2 targeted);
* **feature interpolation** (FI, Eq. 10): ``a(B) = σ*(B − μ)/σ + μ*`` with ``σ*``, ``μ*`` in the
  convex hulls of k prototype images' stds and means (weights on the probability simplex).

Per image the loss is ``L_content + λ·L_adv`` (§2.7 of the chapter's spec, from the authors'
code): ``L_content = Σ_c mean_hw (f(g(t))_c − t_c)²`` with ``t = a(B)`` (the decoder's
"wellness", Eq. 3), and a C&W margin hinge on the logits with κ = 1 (untargeted: the true
class below the best other one; top-k: below the k best others; targeted: the target above the
best other), λ = 32,000. Adam (β1 = 0.5), lr 1e-2 with inverse-time decay 1e-4, the gradient
clipped per element at 10/√dim (the paper; ``clip="code"``: the code's ±dim^{1/4}/√10), the
variables projected after every step, and the best iterate kept (the lowest-content-loss
successful one, else the lowest-content-loss one; the start — τ = 0, the "Decoder" image —
is an iterate). The encoder and decoder come together as a :class:`StyleAutoencoder`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .. import features
from ..models.adain import StyleAutoencoder, channel_stats
from ..images import check_images
from .projected import Iterate, projected_descent

__all__ = ["StyleResult", "feature_augmentation", "feature_interpolation", "content_loss", "margin_loss",
           "project_simplex", "class_prototypes"]


@dataclass
class StyleResult:
    """What an FSA run returns with ``details=True`` (per image unless stated).

    ``images``: the kept iterate ``g(a(f(x)))``; ``success``; ``content``: its content loss;
    ``curve[t]``: the fraction of images with a successful kept iterate after ``t`` steps;
    ``first_success``: the first step after which each image succeeded (``steps + 1``: never);
    ``variables``: FA's ``(τ^μ, τ^σ)`` (N×C) — or, with ``param="linear"``, the new ``(|μ|, σ)``
    — or FI's ``(w^μ, w^σ)`` (N×(k+1)).
    """

    images: torch.Tensor
    success: torch.Tensor
    content: torch.Tensor
    curve: torch.Tensor
    first_success: torch.Tensor
    variables: list[torch.Tensor]


def content_loss(ae: StyleAutoencoder, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``Σ_c mean_hw (f(images)_c − target_c)²`` per image (Eq. 3/7, the code's form)."""
    return (ae.encoder(images) - target).pow(2).mean(dim=(2, 3)).sum(1)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, *, kappa: float = 1.0, targeted: bool = False,
                topk: int = 1) -> torch.Tensor:
    """The C&W margin hinge per image (the authors' adversarial loss).

    Untargeted: ``Σ_{j ∈ k best other classes} max(z_y − z_j + κ, 0)`` (k = ``topk``; 1 is
    ``max(z_y − max_{j≠y} z_j + κ, 0)``); targeted (``labels`` are the targets):
    ``max(max_{j≠t} z_j − z_t + κ, 0)``.
    """
    own = logits.gather(1, labels[:, None])
    others = logits.scatter(1, labels[:, None], float("-inf"))
    if targeted:
        return (others.amax(1, keepdim=True) - own + kappa).clamp_min(0).squeeze(1)
    best = others.topk(topk, dim=1).values
    return (own - best + kappa).clamp_min(0).sum(1)


def _success(logits: torch.Tensor, labels: torch.Tensor, targeted: bool, topk: int) -> torch.Tensor:
    if targeted:
        return logits.argmax(1) == labels
    return ~(logits.topk(topk, dim=1).indices == labels[:, None]).any(1)


def project_simplex(w: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row onto the probability simplex (Duchi et al. 2008, sort-based)."""
    u, _ = w.sort(dim=1, descending=True)
    css = u.cumsum(1) - 1
    j = torch.arange(1, w.shape[1] + 1, device=w.device, dtype=w.dtype)
    rho = ((u - css / j) > 0).sum(1, keepdim=True)
    theta = css.gather(1, rho - 1) / rho.to(w.dtype)
    return (w - theta).clamp_min(0)


def _clip_value(clip: str, dim: int) -> float:
    if clip == "paper":
        return 10 / math.sqrt(dim)
    if clip == "code":
        return dim ** 0.25 / math.sqrt(10)
    raise ValueError(f"clip must be 'paper' or 'code', got {clip!r}")


def _work(dtype: torch.dtype) -> torch.dtype:
    """The optimiser's dtype: float32 for half-precision inputs (Adam's moments), else the input's."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check(model: nn.Module, x: torch.Tensor, decoder: StyleAutoencoder, labels: torch.Tensor | None,
           target: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
    check_images(x)
    if not isinstance(decoder, StyleAutoencoder):
        raise ValueError(f"decoder must be a StyleAutoencoder (encoder + decoder, e.g. a zoo 'decoder-…' model), "
                         f"got {type(decoder).__name__}")
    decoder.check()
    with torch.no_grad():
        y = model(x.to(features.model_dtype(model, x.dtype))).argmax(1) if labels is None else labels.to(x.device)
    if target is not None:
        target = target.to(x.device)
        if target.shape != y.shape:
            raise ValueError(f"target must have one class per image ({len(y)}), got shape {tuple(target.shape)}")
        return target, True
    return y, False


def _run(model, decoder, base, aim, targeted, make_embedding, variables, project, dims, x_dtype, *, steps, lr, beta1,
         decay, weight, kappa, topk, clip, progress, desc):
    """FSA's optimisation of ``variables`` for the embeddings ``base = f(x)`` (shared by FA and FI).

    Each network runs in its own dtype (the embedding is cast to the autoencoder's, the images
    to the classifier's); the losses are in the variables' working dtype (:func:`_work`), and
    the images come back in ``x_dtype``."""
    stats = channel_stats(base)
    mdtype, ddtype, work = features.model_dtype(model, x_dtype), features.model_dtype(decoder, x_dtype), _work(x_dtype)

    def evaluate(v):
        t = make_embedding(base, stats, v).to(ddtype)
        images = decoder.decode(t)
        content = content_loss(decoder, images, t).to(work)
        logits = model(images.to(mdtype)).to(work)
        adv = margin_loss(logits, aim, kappa=kappa, targeted=targeted, topk=topk)
        return Iterate(loss=content + weight * adv, success=_success(logits.detach(), aim, targeted, topk),
                       rank=content.detach(), output=images)

    result = projected_descent(evaluate, variables, project=project, steps=steps, lr=lr, method="adam",
                               betas=(beta1, 0.999), decay=decay, clip=[_clip_value(clip, d) for d in dims],
                               progress=progress, desc=desc)
    return StyleResult(result.output.detach().to(x_dtype), result.success, result.rank, result.curve,
                       result.first_success, result.variables)


def _defaults(steps, lr, decay, weight):
    for name, value in (("steps", steps), ("lr", lr), ("weight", weight)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    if decay < 0:
        raise ValueError(f"decay must be >= 0, got {decay!r}")


def feature_augmentation(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    decoder: StyleAutoencoder,
    eps: float = math.log(1.5),
    target: torch.Tensor | None = None,
    steps: int = 2000,
    lr: float = 1e-2,
    beta1: float = 0.5,
    decay: float = 1e-4,
    weight: float = 32_000.0,
    kappa: float = 1.0,
    topk: int = 1,
    clip: str = "paper",
    param: str = "log",
    perturb: str = "both",
    details: bool = False,
    progress: bool = True,
):
    """Feature augmentation (FA, Eq. 9): scale each channel's mean and std by at most ``e^eps``.

    Args:
        model: the attacked classifier on [0, 1] images (its mode is never changed).
        x: N×C×H×W images in [0, 1]; ``labels`` their true classes (``None``: the model's
            predictions).
        decoder: the :class:`StyleAutoencoder` (encoder f + decoder g), e.g.
            ``zoo.get("decoder-allconv-cifar10")``; one trained for another encoder is refused.
        eps: the bound on ``|τ|`` (log-scale), ln 1.5 untargeted / ln 2 targeted in the paper; > 0.
        target: per-image target classes (targeted attack; success = argmax is the target).
        steps, lr, beta1, decay: Adam's iterations and ``lr_t = lr/(1 + decay·t)`` (code: 2,000,
            1e-2, 0.5, 1e-4 on CIFAR-10; 500, 1e-2, 0.5, 1e-3 on ImageNet).
        weight, kappa, topk: λ, the hinge margin κ and the untargeted top-k criterion (5 on
            ImageNet).
        clip: ``"paper"`` (10/√C per element) or ``"code"`` (C^{1/4}/√10).
        param: ``"log"`` — the paper's τ, clamped to [−ε, ε]; ``"linear"`` — the code's variables
            (the new std and |mean|), clamped to [σ/e^ε, σe^ε] and [|μ|/e^ε, |μ|e^ε].
        perturb: ``"both"``; ``"mean"`` or ``"std"`` perturbs only that statistic (the other is
            held at its own value), the paper's Fig. 3 (h) and (i).
        details: return a :class:`StyleResult` instead of the images.

    Returns:
        The adversarial images ``g(a(f(x)))`` in [0, 1] (the kept iterates), or a
        :class:`StyleResult`.
    """
    aim, targeted = _check(model, x, decoder, labels, target)
    _defaults(steps, lr, decay, weight)
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (a log-scale bound: ln 1.5 ≈ 0.405), got {eps!r}")
    if param not in ("log", "linear"):
        raise ValueError(f"param must be 'log' or 'linear', got {param!r}")
    if perturb not in ("both", "mean", "std"):
        raise ValueError(f"perturb must be 'both', 'mean' or 'std', got {perturb!r}")
    eps_m = eps if perturb in ("both", "mean") else 0.0
    eps_s = eps if perturb in ("both", "std") else 0.0
    n, c = x.shape[0], decoder.encoder.channels
    work = _work(x.dtype)
    with torch.no_grad():
        base = decoder.encoder(x.to(features.model_dtype(decoder, x.dtype)))
    mean, std = (s.view(n, c) for s in channel_stats(base))
    if param == "log":
        def embed(base, stats, v):
            mu, sigma = stats
            return v[1].exp()[..., None, None] * (base - mu) + v[0].exp()[..., None, None] * mu

        def project(v):
            v[0].clamp_(-eps_m, eps_m)
            v[1].clamp_(-eps_s, eps_s)

        start = [torch.zeros(n, c, device=x.device, dtype=work)] * 2
    else:
        p_m, p_s = math.exp(eps_m), math.exp(eps_s)
        lo_m, hi_m, lo_s, hi_s = (t.to(work) for t in (mean.abs() / p_m, mean.abs() * p_m, std / p_s, std * p_s))

        def embed(base, stats, v):
            mu, sigma = stats
            return (base - mu) * (v[1] / std)[..., None, None] + mu.sign() * v[0][..., None, None]

        def project(v):
            v[0].copy_(torch.minimum(torch.maximum(v[0], lo_m), hi_m))
            v[1].copy_(torch.minimum(torch.maximum(v[1], lo_s), hi_s))

        start = [mean.abs().to(work), std.to(work)]
    result = _run(model, decoder, base, aim, targeted, embed, start, project, (c, c), x.dtype, steps=steps, lr=lr,
                  beta1=beta1, decay=decay, weight=weight, kappa=kappa, topk=topk, clip=clip, progress=progress,
                  desc="feature augmentation")
    return result if details else result.images


@torch.no_grad()
def class_prototypes(x_pool: torch.Tensor, y_pool: torch.Tensor, labels: torch.Tensor, k: int, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """For each label, ``k`` random images of that class from the pool: N×k×C×H×W (FI's vertices).

    The draws are on ``generator``'s device (no generator: the CPU's global stream)."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    out = []
    for label in labels.tolist():
        pool = torch.nonzero(y_pool == label).flatten()
        if len(pool) < k:
            raise ValueError(f"class {label} has {len(pool)} images in the pool, fewer than k = {k}")
        out.append(x_pool[pool[torch.randperm(len(pool), generator=generator, device=gdev)[:k].to(pool.device)]])
    return torch.stack(out)


def feature_interpolation(
    model: nn.Module,
    x: torch.Tensor,
    prototypes: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    decoder: StyleAutoencoder,
    target: torch.Tensor | None = None,
    shared_weights: bool = False,
    init: str = "self",
    steps: int = 2000,
    lr: float = 1e-2,
    beta1: float = 0.5,
    decay: float = 1e-4,
    weight: float = 32_000.0,
    kappa: float = 1.0,
    topk: int = 1,
    clip: str = "paper",
    details: bool = False,
    progress: bool = True,
):
    """Feature interpolation (FI, Eq. 10): styles in the convex hull of the image's and k prototypes'.

    ``prototypes`` are N×k×C×H×W images (per input; :func:`class_prototypes` draws k images of
    the input's class, the spec's recommendation after the code's 50 same-class images) or
    k×C×H×W (shared by all inputs). The input itself is vertex 0. The mean and std weights are
    separate points of the simplex (Eq. 10; ``shared_weights=True``: one, as the code), started
    at the image's own style (``init="self"``: step 0 is the Decoder image) or at the average
    (``"uniform"``, the code's), and projected onto the simplex exactly after every step.
    The other arguments are :func:`feature_augmentation`'s; there is no ε: the bound is the hull.
    """
    aim, targeted = _check(model, x, decoder, labels, target)
    _defaults(steps, lr, decay, weight)
    check_images(prototypes.flatten(0, 1) if prototypes.dim() == 5 else prototypes, "prototypes")
    if init not in ("self", "uniform"):
        raise ValueError(f"init must be 'self' or 'uniform', got {init!r}")
    n, c = x.shape[0], decoder.encoder.channels
    if prototypes.dim() == 4:
        prototypes = prototypes.unsqueeze(0).expand(n, *prototypes.shape)
    if prototypes.shape[0] != n or prototypes.shape[2:] != x.shape[1:]:
        raise ValueError(f"prototypes must be N×k×{'×'.join(map(str, x.shape[1:]))} with N = {n}, "
                         f"got {tuple(prototypes.shape)}")
    k = prototypes.shape[1]
    ddtype, work = features.model_dtype(decoder, x.dtype), _work(x.dtype)
    with torch.no_grad():
        base = decoder.encoder(x.to(ddtype))
        own_m, own_s = channel_stats(base)
        flat = prototypes.reshape(n * k, *x.shape[1:])
        pm, ps = zip(*(channel_stats(decoder.encoder(flat[i:i + 500].to(ddtype))) for i in range(0, n * k, 500)))
        vert_m = torch.cat([own_m.view(n, 1, c), torch.cat(pm).view(n, k, c)], 1).to(work)  # N×(k+1)×C
        vert_s = torch.cat([own_s.view(n, 1, c), torch.cat(ps).view(n, k, c)], 1).to(work)
    w0 = torch.zeros(n, k + 1, device=x.device, dtype=work)
    if init == "self":
        w0[:, 0] = 1
    else:
        w0 += 1.0 / (k + 1)

    def embed(base, stats, v):
        w_m, w_s = (v[0], v[0]) if shared_weights else v
        mu_star = torch.einsum("nk,nkc->nc", w_m, vert_m)[..., None, None]
        sigma_star = torch.einsum("nk,nkc->nc", w_s, vert_s)[..., None, None]
        mu, sigma = stats
        return sigma_star * (base - mu) / sigma + mu_star

    def project(v):
        for t in v:
            t.copy_(project_simplex(t))

    start = [w0] if shared_weights else [w0, w0.clone()]
    result = _run(model, decoder, base, aim, targeted, embed, start, project, (k + 1,) * len(start), x.dtype,
                  steps=steps, lr=lr, beta1=beta1, decay=decay, weight=weight, kappa=kappa, topk=topk, clip=clip,
                  progress=progress, desc="feature interpolation")
    return result if details else result.images
