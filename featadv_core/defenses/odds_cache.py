"""O2 calibrated once and scored once per image set, on disk: the detector every chapter shares.

Calibrating O2 (:func:`.odds.fit_odds`) costs minutes of noise draws and scoring an image about
half a second on a CPU, so chapter 3's Table 1 and chapter 5's comparison must not each redo it.
:class:`CachedOdds` keys the calibration by the network's weights, the feature and head layers,
the noise sources, the draws, the seed, the estimator (``antithetic``) and the calibration images,
and the z-scores of an image set by the same plus the images (:func:`featadv_core.repro.cached`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..repro import cached, tensor_hash
from .odds import NOISE_SOURCES, OddsDetector, fit_odds

__all__ = ["CachedOdds"]


class CachedOdds:
    """An :class:`~.odds.OddsDetector` calibrated on ``(x_cal, y_cal)`` (cached), with cached scoring.

    ``head_layer`` names the network's last linear layer in its ``layer_map`` (O2's ``W``);
    ``feature_layer`` the penultimate features φ it multiplies.
    """

    def __init__(self, model: nn.Module, x_cal: torch.Tensor, y_cal: torch.Tensor, *, feature_layer: str,
                 head_layer: str, draws: int, sources: Sequence[tuple[str, float]] = NOISE_SOURCES, seed: int = 0,
                 antithetic: bool = False, progress: bool = True):
        layer_map = getattr(model, "layer_map", None)
        if layer_map is None or head_layer not in layer_map:
            raise ValueError(f"head_layer {head_layer!r} is not one of the model's named layers "
                             f"({', '.join(layer_map or {}) or 'it has no layer_map'})")
        head = dict(model.named_modules())[layer_map[head_layer]]
        if not isinstance(head, nn.Linear):
            raise ValueError(f"O2 needs a linear head; {head_layer!r} is a {type(head).__name__}")
        sources = [tuple(s) for s in sources]
        self.key = {"layer": feature_layer, "head": head_layer, "draws": draws, "sources": [list(s) for s in sources],
                    "seed": seed, "antithetic": antithetic}
        self.cal = tensor_hash(x_cal)
        self.model, self.progress = model, progress

        def fit() -> dict[str, torch.Tensor]:
            d = fit_odds(model, x_cal, y_cal, feature_layer=feature_layer, head=head, sources=sources, draws=draws,
                         seed=seed, antithetic=antithetic, progress=progress)
            return {"mean": d.mean, "std": d.std, "valid": d.valid}

        stats = cached("odds-fit", dict(self.key, images=self.cal), fit, model=model, code=(fit_odds,))
        self.detector = OddsDetector(model, feature_layer, head, tuple(sources), draws, **stats, antithetic=antithetic)

    def z_scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"pred", "z"}`` of :meth:`~.odds.OddsDetector.z_scores`, cached per image set."""
        return cached("odds-z", dict(self.key, cal=self.cal, images=tensor_hash(images)),
                      lambda: dict(zip(("pred", "z"), self.detector.z_scores(images, progress=self.progress))),
                      model=self.model, code=(fit_odds,))

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """``max_{z≠y} Z_z`` per image (cached)."""
        return self.z_scores(images)["z"].amax(1)

    def detect(self, images: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Flags ``score > threshold`` (default: the detector's own cutoff Φ⁻¹(0.999))."""
        return self.scores(images) > (self.detector.threshold if threshold is None else threshold)
