"""Metrics: distances between feature encodings (:mod:`.distances`), SSIM and PASS (:mod:`.perceptual`),
the fooling rate of a perturbation (:mod:`.fooling`), pixel and embedding perturbation sizes
(:mod:`.perturbation`, chapter 3), a detector's ROC AUC (:mod:`.detection`).

Every function is vectorised over points and device-agnostic.
"""
from .distances import (cosine_distance, distance_ratio, euclidean, flatten, mean_intra_class_distance,
                        mean_nn_distance, pairwise_distances)
from .detection import roc_auc
from .fooling import fooling_rate
from .perceptual import ecc_align, pass_score, ssim
from .perturbation import feature_distances, pixel_distances

__all__ = ["flatten", "euclidean", "cosine_distance", "pairwise_distances", "distance_ratio",
           "mean_intra_class_distance", "mean_nn_distance", "ssim", "pass_score", "ecc_align",
           "fooling_rate", "pixel_distances", "feature_distances", "roc_auc"]
