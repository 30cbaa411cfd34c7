"""The O2 detector, "The Odds are Odd" (Roth, Kilcher & Hofmann, ICML 2019), batched.

An adversarial input sits just across a decision boundary, so small random noise tends to move
its log-odds back toward the true class. With penultimate features ``φ`` and last-layer weights
``W`` (rows ``w_k``), for an input with **predicted** class ``y`` and every other class ``z``:

    g_{y,z}(x, η) = ⟨w_z − w_y, φ(x + η) − φ(x)⟩            (biases cancel)

averaged over M noise draws per noise source. Sources (the reference code's detection set):
{Gaussian N(0, 1), sign ±1, uniform U[−1, 1]} × ε ∈ {0.003, 0.005, 0.008} = 9 sources, M = 256,
noisy images clipped to [0, 1]. On clean calibration images (correctly classified; the code
also requires them to be flipped by PGD unless ``just_detect``) each (class y, source, z) gets
the mean and std of the averaged statistic; a class with fewer than 3 images gets none and is
never flagged. At test time ``Z_{z,s} = (ḡ − μ)/σ``, averaged over sources → ``Z_z``; the input
is flagged when ``max_{z≠y} Z_z`` exceeds the cutoff ``Φ⁻¹(0.999) ≈ 3.09`` (the code's
``maxp_cutoff``; with 9 other classes ≈ 0.9 % false positives under Gaussian z-scores, Table 1's
0.95 %), or a threshold calibrated on held-out clean images for a target false-positive rate.

The noise draws are a batch dimension: one forward per (image chunk, source) of ``M`` draws each,
in channels-last memory format (1.5–1.7× faster forwards on CPU for the zoo's CIFAR-10 CNNs, equal
to float round-off; ``benchmarks/fsa_speed.py`` measures it).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import features
from ..images import check_images

__all__ = ["NOISE_SOURCES", "OddsDetector", "fit_odds", "noise_statistics", "noise_share", "gaussian_cutoff",
           "threshold_for_fpr"]

NOISE_SOURCES: tuple[tuple[str, float], ...] = tuple((kind, eps) for kind in ("normal", "sign", "uniform")
                                                     for eps in (0.003, 0.005, 0.008))


def _noise(kind: str, eps: float, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Float32 noise of ``kind`` and scale ``eps``, drawn on ``generator``'s device."""
    dev = generator.device
    if kind == "normal":
        return eps * torch.randn(shape, generator=generator, device=dev)
    if kind == "sign":
        return eps * (torch.randint(0, 2, shape, generator=generator, device=dev) * 2 - 1).float()
    if kind == "uniform":
        return eps * (torch.rand(shape, generator=generator, device=dev) * 2 - 1)
    raise ValueError(f"unknown noise kind {kind!r}; valid: normal, sign, uniform")


@torch.inference_mode()
def noise_statistics(model: nn.Module, x: torch.Tensor, *, feature_layer: str, head: nn.Linear,
                     sources: Sequence[tuple[str, float]] = NOISE_SOURCES, draws: int = 256, seed: int = 0,
                     antithetic: bool = False, batch_size: int = 2048,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes (N) and the averaged statistics ``ḡ`` (N × sources × K): entry ``[n, s, z]`` is
    ``⟨w_z − w_y, mean_η φ(x_n + η) − φ(x_n)⟩`` for source ``s`` (0 at ``z = y``).

    ``antithetic``: the draws come in pairs ``(η, −η)`` (``draws`` even). Every source is symmetric, so each
    draw keeps its distribution and ``ḡ`` its expectation, but the term linear in ``η`` — zero on average and,
    at these ε, most of a finite-M estimate's noise — cancels within each pair: a variance reduction that lets
    few draws behave like many (the reference code draws independently: ``False``).

    The noise is drawn where ``head`` lives when that is a CUDA device (no host draws and copies;
    the same ``seed`` then gives other draws than on the CPU), else on the CPU."""
    check_images(x)
    if draws < 1 or not sources:
        raise ValueError(f"need at least one noise source and one draw, got {len(sources)} and {draws}")
    if antithetic and draws % 2:
        raise ValueError(f"antithetic draws come in pairs: draws must be even, got {draws}")
    device = head.weight.device
    w = head.weight.float()
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed)
    mdtype = features.model_dtype(model, x.dtype)
    per_chunk = max(1, batch_size // draws)
    preds, stats = [], []
    chunks = range(0, len(x), per_chunk)
    for i in tqdm(chunks, desc="O2 noise statistics", unit="chunk", leave=False, disable=not progress):
        xb = x[i:i + per_chunk].to(device=device, dtype=mdtype)
        phi = features.forward_to(model, xb, feature_layer).flatten(1).float()
        y = head(phi.to(head.weight.dtype)).argmax(1)
        rows = []
        for kind, eps in sources:
            if antithetic:
                half = _noise(kind, eps, (len(xb), draws // 2, *xb.shape[1:]), gen)
                eta = torch.cat([half, -half], 1).to(device=device, dtype=xb.dtype)
            else:
                eta = _noise(kind, eps, (len(xb), draws, *xb.shape[1:]), gen).to(device=device, dtype=xb.dtype)
            noisy = (xb[:, None] + eta).clamp(0, 1).flatten(0, 1).contiguous(memory_format=torch.channels_last)
            shift = features.forward_to(model, noisy, feature_layer).flatten(1).float().view(len(xb), draws, -1).mean(1) - phi
            proj = shift @ w.T                                    # N×K: ⟨w_z, shift⟩
            rows.append(proj - proj.gather(1, y[:, None]))       # ⟨w_z − w_y, shift⟩
        preds.append(y.cpu())
        stats.append(torch.stack(rows, 1).cpu())
    return torch.cat(preds), torch.cat(stats)


def noise_share(model: nn.Module, x: torch.Tensor, *, feature_layer: str, head: nn.Linear,
                sources: Sequence[tuple[str, float]] = NOISE_SOURCES, draws: int = 256, antithetic: bool = False,
                seed: int = 0) -> torch.Tensor:
    """Per source, the share of ``ḡ``'s spread over images of one predicted class that is Monte-Carlo noise.

    Two estimates of ``ḡ`` from independent draws differ only by that noise, so its variance is half the
    mean squared difference; the total is the variance of one estimate around its predicted class's mean
    (the spread O2's z-scores divide by), both pooled over images and classes ``z ≠ y``. Near 1 the detector
    standardises mostly its own sampling noise, and a shift that PGD causes is diluted; more draws, or
    ``antithetic`` pairs, shrink it.
    """
    kw = dict(feature_layer=feature_layer, head=head, sources=sources, draws=draws, antithetic=antithetic)
    y, g1 = noise_statistics(model, x, seed=seed, **kw)
    _, g2 = noise_statistics(model, x, seed=seed + 1, **kw)
    other = torch.ones_like(g1, dtype=torch.bool).scatter(2, y[:, None, None].expand(-1, g1.shape[1], 1), False)
    centre = torch.zeros_like(g1)
    for c in y.unique():
        centre[y == c] = g1[y == c].mean(0)
    noise = torch.where(other, (g1 - g2) ** 2 / 2, 0).sum((0, 2))
    total = torch.where(other, (g1 - centre) ** 2, 0).sum((0, 2))
    return noise / total.clamp_min(1e-30)


@dataclass
class OddsDetector:
    """Calibrated O2 statistics. ``mean``, ``std``: K (class y) × S × K (z); ``valid``: K (classes with ≥ 3 images).

    :meth:`scores` gives ``max_{z≠y} Z_z`` per input; :meth:`detect` compares it with ``threshold``. Test
    inputs are scored with the estimator the statistics were calibrated with (``draws``, ``antithetic``).
    """

    model: nn.Module
    feature_layer: str
    head: nn.Linear
    sources: tuple[tuple[str, float], ...]
    draws: int
    mean: torch.Tensor
    std: torch.Tensor
    valid: torch.Tensor
    threshold: float = 3.090232306167813  # Φ⁻¹(0.999), the reference code's cutoff
    antithetic: bool = False

    def z_scores(self, x: torch.Tensor, *, seed: int = 1, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predicted class y, Z)`` per image: ``Z[n, z]`` is the source-averaged z-score of the noise-induced
        log-odds change toward ``z``; −∞ at ``z = y`` and in every column for a class without statistics."""
        y, g = noise_statistics(self.model, x, feature_layer=self.feature_layer, head=self.head, sources=self.sources,
                                draws=self.draws, seed=seed, antithetic=self.antithetic, progress=progress)
        z = ((g - self.mean[y]) / self.std[y]).mean(1)            # N×K, averaged over sources
        z = z.scatter(1, y[:, None], float("-inf"))
        return y, torch.where(self.valid[y][:, None], z, torch.full_like(z, float("-inf")))

    def scores(self, x: torch.Tensor, *, seed: int = 1, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predicted class, max_{z≠y} Z_z)`` per image; classes without statistics score −∞."""
        y, z = self.z_scores(x, seed=seed, progress=progress)
        return y, z.amax(1)

    def detect(self, x: torch.Tensor, *, seed: int = 1, progress: bool = False) -> torch.Tensor:
        """Boolean flags: ``True`` where O2 calls the input adversarial."""
        return self.scores(x, seed=seed, progress=progress)[1] > self.threshold

    def calibrate_threshold(self, x_clean: torch.Tensor, fpr: float, *, seed: int = 2) -> "OddsDetector":
        """Set the threshold to :func:`threshold_for_fpr` of clean held-out images' scores (returns self)."""
        if not 0 < fpr < 1:  # checked before the (long) scoring
            raise ValueError(f"fpr must be in (0, 1), got {fpr}")
        self.threshold = threshold_for_fpr(self.scores(x_clean, seed=seed)[1], fpr)
        return self


def threshold_for_fpr(clean_scores: torch.Tensor, fpr: float) -> float:
    """The ``1 − fpr`` quantile of clean images' O2 scores, ignoring the −∞ of classes without statistics.

    Flagging ``score > threshold`` then marks a share ``fpr`` of those clean images, up to one image."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    s = clean_scores[torch.isfinite(clean_scores)]
    if len(s) == 0:
        raise ValueError("no finite clean scores to set a threshold from")
    return float(torch.quantile(s, 1 - fpr))


def fit_odds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, feature_layer: str, head: nn.Linear,
             sources: Sequence[tuple[str, float]] = NOISE_SOURCES, draws: int = 256, seed: int = 0,
             antithetic: bool = False, min_images: int = 3, progress: bool = False) -> OddsDetector:
    """Calibrate O2 on clean images ``x`` with labels ``y`` (only correctly classified ones are used);
    ``antithetic`` as in :func:`noise_statistics`, kept by the detector for scoring."""
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    pred, g = noise_statistics(model, x, feature_layer=feature_layer, head=head, sources=sources, draws=draws,
                               seed=seed, antithetic=antithetic, progress=progress)
    keep = pred == y.cpu()
    pred, g = pred[keep], g[keep]
    k = head.weight.shape[0]
    mean = torch.zeros(k, g.shape[1], k)
    std = torch.ones(k, g.shape[1], k)
    valid = torch.zeros(k, dtype=torch.bool)
    for c in range(k):
        rows = g[pred == c]
        if len(rows) >= min_images:
            mean[c] = rows.mean(0)
            std[c] = rows.std(0).clamp_min(1e-12)
            valid[c] = True
    return OddsDetector(model, feature_layer, head, tuple(sources), draws, mean, std, valid, antithetic=antithetic)


def gaussian_cutoff(p: float = 0.999) -> float:
    """``Φ⁻¹(p)``: the z-score cutoff for a one-sided tail of ``1 − p``."""
    return math.sqrt(2) * torch.erfinv(torch.tensor(2 * p - 1, dtype=torch.float64)).item()
