"""Analyses of feature encodings (chapter 1: Sabour et al. 2016, §4–§5) and of attacks (chapter 2).

* :mod:`.neighbors` — kNN with exclusions, the ``r_K`` rank statistic, kNN intersection (Table 1);
* :mod:`.manifold` — neighbourhood sets, PPCA ``ΔL`` and angular consistency ``Ω`` (§4.2, Fig. 4);
* :mod:`.sparsity` — active fractions, ``ΔS`` and I/U of active units (Table 2);
* :mod:`.random_networks` — copies of a model with random orthonormal weights (§5);
* :mod:`.inversion` — Mahendran & Vedaldi representation inversion (Fig. 2);
* :mod:`.attempts` — Table 1-style summaries of line-search attempts (Rozsa et al. 2017);
* :mod:`.statistics` — medians, descriptions, t statistics;
* :mod:`.uncertainty` — a claim's 95 % interval (exact binomial, bootstrap) and its three-state
  verdict (replicated / not replicated / undecided, with the n that would decide it);
* :mod:`.curvature` — Jetley et al.'s Algorithm 1: boundary points, finite-difference mean
  Hessians, principal directions and curvatures (full or top-k);
* :mod:`.subspaces` — S_pos/S_neg/S_flat selection, QR unions, projections, norm fractions,
  SVD of perturbations;
* :mod:`.saliency` — signed class-score gradients;
* :mod:`.traces` — class scores along a direction and their summaries (Fig. 1–2);
* :mod:`.perturbation_structure` — a perturbation's low-frequency share and edge alignment
  (chapter 3's Fig. 3 proxies).

Distances themselves live in :mod:`featadv_core.metrics`. Everything is batched over points
and device-agnostic.
"""
from .attempts import select, summarise
from .curvature import (BoundaryPoints, Curvatures, boundary_points, curvature_spectrum, fd_step,
                        mean_hessian_product, principal_curvatures, random_orthonormal)
from .perturbation_structure import edge_correlation, gradient_magnitude, low_frequency_fraction
from .saliency import saliency
from .traces import half_line_trend, scores_along, shape_spread, symmetry
from .subspaces import (STRATEGIES, norm_fractions, project_images, random_fraction, select_directions,
                        subspace_overlap, svd_directions, union_basis)
from .inversion import invert, total_variation
from .manifold import (DEFAULT_PPCA_COMPONENTS, DEFAULT_SIGMA2_FLOOR, PPCA, NeighbourhoodSets,
                       angular_consistency, neighbourhood_sets, ppca_delta_loglik, ppca_fit)
from .neighbors import knn, knn_intersection, knn_score, rank_statistic
from .random_networks import orthonormal_copy
from .sparsity import active_fraction, active_iou, sparsity_change
from .statistics import describe, mcnemar, median, spearman
from .uncertainty import Interval, bootstrap_interval, judge, n_to_decide, rate_interval, ratio_interval

__all__ = [
    "low_frequency_fraction", "edge_correlation", "gradient_magnitude",
    "knn", "knn_score", "rank_statistic", "knn_intersection",
    "NeighbourhoodSets", "neighbourhood_sets", "PPCA", "ppca_fit", "ppca_delta_loglik",
    "angular_consistency", "DEFAULT_PPCA_COMPONENTS", "DEFAULT_SIGMA2_FLOOR",
    "active_fraction", "sparsity_change", "active_iou",
    "orthonormal_copy",
    "invert", "total_variation",
    "select", "summarise", "describe", "median", "mcnemar", "spearman",
    "Interval", "rate_interval", "bootstrap_interval", "ratio_interval", "judge", "n_to_decide",
    "BoundaryPoints", "Curvatures", "boundary_points", "fd_step", "mean_hessian_product", "curvature_spectrum", "principal_curvatures",
    "random_orthonormal", "saliency", "STRATEGIES", "select_directions", "union_basis", "project_images",
    "norm_fractions", "random_fraction", "svd_directions", "subspace_overlap",
    "scores_along", "half_line_trend", "symmetry", "shape_spread",
]
