"""Metrics: distances between feature encodings (:mod:`.distances`); perceptual similarity joins here.

Every function is vectorised over points and device-agnostic.
"""
from .distances import (cosine_distance, distance_ratio, euclidean, flatten, mean_intra_class_distance,
                        mean_nn_distance, pairwise_distances)

__all__ = ["flatten", "euclidean", "cosine_distance", "pairwise_distances", "distance_ratio",
           "mean_intra_class_distance", "mean_nn_distance"]
