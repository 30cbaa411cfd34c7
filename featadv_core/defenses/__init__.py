"""Defences: input transformations and detectors placed in front of a classifier.

* :mod:`.resampling` — bicubic down/up-sampling of the mean-subtracted image (Jetley et al.
  2018, §4.4, Table 1): :func:`resample` (built on :func:`resize`) and the wrapped classifier :class:`Resampled`;
* :mod:`.odds` — the O2 detector ("The Odds are Odd", Roth et al. 2019; the feature-space
  attack's Table 1): :func:`fit_odds` → :class:`OddsDetector`; :func:`threshold_for_fpr` sets a held-out threshold;
  :class:`CachedOdds` (:mod:`.odds_cache`) calibrates and scores it once, on disk, for every chapter.

Adversarially trained models (Madry, TRADES, ATDA) and the denoising blocks are zoo models
(:mod:`featadv_core.models`), trained by the losses of :mod:`featadv_core.models.adversarial_training`,
:mod:`~featadv_core.models.trades` and :mod:`~featadv_core.models.atda`.
"""
from .odds import NOISE_SOURCES, OddsDetector, fit_odds, gaussian_cutoff, noise_share, noise_statistics, threshold_for_fpr
from .odds_cache import CachedOdds
from .resampling import Resampled, resample, resize

__all__ = ["resize", "resample", "Resampled", "fit_odds", "OddsDetector", "noise_statistics", "noise_share", "NOISE_SOURCES",
           "gaussian_cutoff", "threshold_for_fpr", "CachedOdds"]
