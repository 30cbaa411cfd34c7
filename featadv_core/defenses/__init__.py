"""Defences: input transformations and detectors placed in front of a classifier.

* :mod:`.resampling` — bicubic down/up-sampling of the mean-subtracted image (Jetley et al.
  2018, §4.4, Table 1): :func:`resample` (built on :func:`resize`) and the wrapped classifier :class:`Resampled`.
"""
from .resampling import Resampled, resample, resize

__all__ = ["resize", "resample", "Resampled"]
