"""Attacks: pure, batched functions with keyword-only options (DESIGN.md §3).

* :func:`feature_opt` — feature adversaries (Sabour et al. 2016, Eq. 1–2);
* :func:`feature_linear` — the same problem on the network linearised at the source (§5);
* :func:`label_opt` — Szegedy et al.'s box-constrained L-BFGS label adversaries;
* solvers: :func:`solve` (``"scipy"``, ``"lbfgsb"``, ``"pgd"``) and the batched
  :func:`minimize_box`;
* line-search attacks on 8-bit images (Rozsa et al. 2016/2017): :func:`lots`, :func:`lots_self`,
  :func:`lots_iterative`, :func:`fgs`, :func:`fgv`, :func:`hot_cold`, sharing :func:`line_search`
  over the directions of :mod:`.directions`; :func:`all_attempts` runs Table 1's 47 per origin;
* DeepFool (:func:`deepfool`: untargeted, targeted, confined to a subspace, optionally
  unconstrained) and universal perturbations (:func:`universal_perturbation`) for Jetley et al.
  (2018);
* the projected first-order loop :func:`projected_descent` and on it L∞ :func:`pgd` and the
  feature-space attack by style perturbation (:func:`feature_augmentation`,
  :func:`feature_interpolation`; chapter 3);
* box constraints: :func:`check_images`, :func:`linf_box`, :func:`project`, :func:`quantize`.

Attacks take and return [0, 1] images on the input's device and dtype, never change the model's
mode or parameters, and their box constraints hold exactly on what they return.
"""
from .attempts import KINDS, all_attempts, other_classes
from .deepfool import DeepFoolResult, check_basis, deepfool
from ..images import check_images
from .box import linf_box, project, quantize
from .directions import (backpropagate, gradient_direction, hot_cold_direction, lots_direction,
                         lots_self_direction)
from .gradient_attacks import fgs, fgv, hot_cold
from .line_search import Attempts, apply_direction, line_search, predict_labels, scale_grid, unit_linf
from .universal import UniversalResult, project_ball, universal_perturbation
from .lots import lots, lots_iterative, lots_self
from .feature_linear import feature_linear
from .feature_opt import feature_opt
from .label_opt import label_opt
from .pgd import pgd
from .projected import DescentResult, Iterate, projected_descent
from .style import (StyleResult, class_prototypes, content_loss, feature_augmentation, feature_interpolation,
                    margin_loss, project_simplex)
from .lbfgsb import minimize_box
from .solvers import solve

__all__ = ["feature_opt", "label_opt", "feature_linear", "minimize_box", "solve", "linf_box",
           "project", "quantize", "check_images", "lots", "lots_self", "lots_iterative", "fgs", "fgv",
           "hot_cold", "line_search", "Attempts", "apply_direction", "scale_grid", "unit_linf", "predict_labels",
           "backpropagate", "lots_direction", "lots_self_direction", "gradient_direction", "hot_cold_direction",
           "all_attempts", "KINDS", "other_classes", "deepfool", "DeepFoolResult", "check_basis",
           "universal_perturbation", "UniversalResult", "project_ball", "projected_descent", "Iterate",
           "DescentResult", "pgd", "feature_augmentation", "feature_interpolation", "StyleResult", "class_prototypes",
           "content_loss", "margin_loss", "project_simplex"]
