"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi et al. 2017, Algorithm 1).

One perturbation ``v`` for a whole set of images ``X``: start from ``v = 0``; pass over ``X``
in a shuffled order and, for every image that ``v`` does not yet fool
(``k̂(x + v) = k̂(x)``), add the minimal DeepFool perturbation of ``x + v`` and project the
sum back onto the ℓp ball of radius ``ξ``,

    v ← P_{p,ξ}(v + Δv),

until the fooling rate on ``X`` reaches ``1 − δ`` or ``max_passes`` passes are done. The
algorithm is sequential by definition (each update depends on the last), so it runs one image
at a time; only the fooling-rate checks are batched.

Two departures of the reference implementations that we do **not** follow:

* LTS4's MATLAB and Python code, for p = 2, *rescale* ``v`` to norm exactly ``ξ`` after every
  update; this is not a projection (it inflates small ``v``). We use the true projection
  ``min(1, ξ/‖v‖₂)·v`` (and clamping for p = ∞), as the paper's Eq. (2) defines.
* ART's ``UniversalPerturbation`` measures the error against given labels when labels are
  passed; the fooling rate here is always against the clean predictions (footnote 7 of
  Jetley et al.; :func:`featadv_core.metrics.fooling_rate`).

The inner DeepFool is :func:`~featadv_core.attacks.deepfool` with its own overshoot,
iteration cap and candidate count, unconstrained (``x + v`` may leave [0, 1], as in the
reference); an increment is used only when the inner DeepFool succeeded within its cap (the
reference's "converged" test).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import features
from ..images import check_images
from ..labels import predict_labels
from .deepfool import _deepfool

__all__ = ["UniversalResult", "universal_perturbation", "project_ball"]


@dataclass(frozen=True)
class UniversalResult:
    """``perturbation`` (1×C×H×W), the fooling rate on ``X`` after every pass, and the updates made."""

    perturbation: torch.Tensor
    fooling_history: list[float]
    updates: int


def project_ball(v: torch.Tensor, xi: float, p: float) -> torch.Tensor:
    """Euclidean projection of ``v`` onto ``{‖v‖_p ≤ ξ}`` for ``p ∈ {2, ∞}`` (the UAP paper's two norms)."""
    if not xi > 0:
        raise ValueError(f"xi must be > 0, got {xi}")
    if p == 2:
        norm = v.flatten().norm().item()
        return v if norm <= xi else v * (xi / norm)
    if p == math.inf:
        return v.clamp(-xi, xi)
    raise ValueError(f"p must be 2 or math.inf, got {p!r}")


def universal_perturbation(model: nn.Module, x: torch.Tensor, *, xi: float, p: float = math.inf,
                           delta: float = 0.2, max_passes: int = 10, df_overshoot: float = 0.02,
                           df_max_iter: int = 10, candidates: int | None = 10, seed: int = 0,
                           progress: bool = True) -> UniversalResult:
    """A universal perturbation of the images ``x`` (N×C×H×W in [0, 1]) within ``‖v‖_p ≤ xi``.

    ``delta``: stop once the fooling rate on ``x`` is ≥ 1 − δ (the paper: 0.2); ``max_passes``
    passes at most; ``candidates``: classes the inner DeepFool considers (capped at the number
    of classes). ``seed`` fixes the order of every pass. Deterministic under the seed.
    """
    check_images(x)
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    if max_passes < 1:
        raise ValueError(f"max_passes must be ≥ 1, got {max_passes}")
    project_ball(torch.zeros(1), xi, p)  # validates xi and p
    mdtype = features.model_dtype(model, x.dtype)
    clean = predict_labels(model, x, batch_size=512)
    with torch.no_grad():
        num_classes = model(x[:1].to(mdtype)).shape[1]
    k = None if candidates is None else min(int(candidates), num_classes)
    v = torch.zeros_like(x[:1], dtype=mdtype)
    gen = torch.Generator().manual_seed(seed)
    history: list[float] = []
    updates = 0
    for _ in tqdm(range(max_passes), desc="UAP passes", disable=not progress, leave=False):
        for i in torch.randperm(len(x), generator=gen, device="cpu").tolist():  # the order: device-independent
            xi_v = x[i:i + 1].to(mdtype) + v
            if predict_labels(model, xi_v, batch_size=512)[0] != clean[i]:
                continue
            _, res = _deepfool(model, xi_v, overshoot=df_overshoot, max_iter=df_max_iter, candidates=k, target=None,
                               basis=None, box=None, details=True)
            if bool(res.success[0]):
                v = project_ball(v + res.perturbation, xi, p)
                updates += 1
        fooled = predict_labels(model, x.to(mdtype) + v, batch_size=512) != clean
        history.append(fooled.double().mean().item())
        if history[-1] >= 1 - delta:
            break
    return UniversalResult(perturbation=v.to(x.dtype), fooling_history=history, updates=updates)
