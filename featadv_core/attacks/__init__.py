"""Attacks: pure, batched functions with keyword-only options (DESIGN.md §3).

* :func:`feature_opt` — feature adversaries (Sabour et al. 2016, Eq. 1–2);
* :func:`feature_linear` — the same problem on the network linearised at the source (§5);
* :func:`label_opt` — Szegedy et al.'s box-constrained L-BFGS label adversaries;
* solvers: :func:`solve` (``"scipy"``, ``"lbfgsb"``, ``"pgd"``) and the batched
  :func:`minimize_box`;
* box constraints: :func:`check_images`, :func:`linf_box`, :func:`project`, :func:`quantize`.

Attacks take and return [0, 1] images on the input's device and dtype, never change the model's
mode or parameters, and their box constraints hold exactly on what they return.
"""
from .box import check_images, linf_box, project, quantize
from .feature_linear import feature_linear
from .feature_opt import feature_opt
from .label_opt import label_opt
from .lbfgsb import minimize_box
from .solvers import solve

__all__ = ["feature_opt", "label_opt", "feature_linear", "minimize_box", "solve", "linf_box",
           "project", "quantize", "check_images"]
