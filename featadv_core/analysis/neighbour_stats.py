"""Per-pair neighbourhood statistics of adversarial encodings (Sabour et al. 2016, Table 1, Fig. 4).

Thin, batched compositions of :mod:`.neighbors` and :mod:`.manifold` that the chapter-1
notebooks need once per pair of (adversary, guide):

* :func:`class_nn` — Fig. 3(b): the nearest point of a given class (optionally excluding one
  point, e.g. ``g`` itself) and its distance; "α is often the 1-NN of g" means
  ``d(α, g)`` is below ``g``'s distance to its nearest other class point.
* :func:`guide_neighbour_stats` — Table 1: the 3NN intersection ``|N₃(α) ∩ N₃(g)| / 3`` and
  ``Δr₃(α, g) = r₃(α) − r₃(g)``, ranked among the training points of the guide's class, with
  ``g`` excluded from α's neighbour candidates (and from its own).
* :func:`adversary_nn_ranks` — Fig. 4 bis (a): the rank ``r₃(α)`` of an adversary among the
  points of its *predicted* class (guide excluded) and the rank of its nearest neighbour
  ``n₁(α)`` there.
* :func:`inlier_scores` — Fig. 4: ``ΔL(·, c)`` (PPCA with the mean moved to the centre ``c``)
  and ``Ω(·, c)`` (angular consistency) of α, of the close neighbours ``N_c`` and of the far
  ones ``N_f`` of a centre ``c`` (the guide ``g``, or ``n₁(α)`` for label adversaries), with
  ``N_ref``, ``N_c``, ``N_f`` drawn from a pool by :func:`.manifold.neighbourhood_sets`.

Loops run over classes only (never over pairs); every pair of one class goes in one call.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..labels import check_labels
from ..metrics.distances import flatten
from .manifold import DEFAULT_PPCA_COMPONENTS, angular_consistency, neighbourhood_sets, ppca_delta_loglik
from .neighbors import knn, knn_intersection, rank_statistic

__all__ = ["class_nn", "GuideNeighbourStats", "guide_neighbour_stats", "AdversaryRanks", "adversary_nn_ranks",
           "InlierScores", "inlier_scores"]


def _check_index(idx: torch.Tensor, n: int, name: str, allow_negative: bool = False) -> torch.Tensor:
    idx = torch.as_tensor(idx)
    if idx.ndim != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-d tensor of integer indices, got dtype {idx.dtype} "
                         f"and shape {tuple(idx.shape)}")
    idx = idx.long()
    if idx.numel() and (int(idx.max()) >= n or (not allow_negative and int(idx.min()) < 0)):
        raise ValueError(f"{name} holds indices outside [0, {n})")
    return idx


def _check_classes(classes: torch.Tensor, labels: torch.Tensor, need: int) -> torch.Tensor:
    """``classes`` as long indices, each a class with at least ``need`` points among ``labels``."""
    classes = _check_index(classes, 2 ** 62, "classes", allow_negative=True)       # integers; presence below
    present, counts = torch.unique(labels, return_counts=True)
    enough = set(present[counts >= need].tolist())
    short = sorted(set(classes.tolist()) - enough)
    if short:
        raise ValueError(f"classes {short[:8]}{' …' if len(short) > 8 else ''} have fewer than {need} reference "
                         f"point(s) (the pool's classes: {present.tolist()[:12]}{' …' if len(present) > 12 else ''})")
    return classes


def _check_pool(feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    feats = flatten(feats)
    return feats, check_labels(labels, feats.shape[0], device=feats.device)


def _local_exclusion(exclude: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """Global indices (``-1`` = none) → rows within the sorted ``members`` (``-1`` if not a member)."""
    pos = torch.searchsorted(members, exclude.clamp_min(0)).clamp_max(members.numel() - 1)
    return torch.where((exclude >= 0) & (members[pos] == exclude), pos, torch.full_like(pos, -1))


def _per_query_exclude(exclude, q: int, n: int, device) -> torch.Tensor:
    if exclude is None:
        return torch.full((q,), -1, dtype=torch.long, device=device)
    exclude = _check_index(exclude, n, "exclude", allow_negative=True).to(device)
    if exclude.shape[0] != q:
        raise ValueError(f"exclude must have one entry per query ({q}), got {exclude.shape[0]}")
    return exclude


def class_nn(f_query: torch.Tensor, classes: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, *,
             exclude: torch.Tensor | None = None, metric: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to, and index of, each query's nearest point of class ``classes[i]`` → ``((Q,), (Q,))``.

    ``f_query`` is ``Q×D``, ``feats``/``labels`` the reference points (e.g. the training
    encodings). ``exclude`` (``(Q,)`` indices into ``feats``, ``-1`` for none) is left out —
    pass a guide's own row to get the distance from ``g`` to its nearest *other* class point,
    the yardstick of "α is often the 1-NN of g" (Fig. 3b). Indices refer to ``feats``.
    """
    feats, labels = _check_pool(feats, labels)
    f_query = flatten(f_query).to(feats.dtype)
    q = f_query.shape[0]
    classes = _check_classes(classes, labels, 1).to(feats.device)
    if classes.shape[0] != q:
        raise ValueError(f"f_query has {q} rows but classes has {classes.shape[0]} entries")
    exclude = _per_query_exclude(exclude, q, feats.shape[0], feats.device)
    dist = torch.empty(q, dtype=feats.dtype, device=feats.device)
    index = torch.empty(q, dtype=torch.long, device=feats.device)
    for c in torch.unique(classes).tolist():
        rows = torch.nonzero(classes == c).flatten()
        members = torch.nonzero(labels == c).flatten()
        d, i = knn(f_query[rows], feats[members], 1, metric=metric,
                   exclude=_local_exclusion(exclude[rows], members))
        dist[rows], index[rows] = d[:, 0], members[i[:, 0]]
    return dist, index


class GuideNeighbourStats(NamedTuple):
    """Per-pair results of :func:`guide_neighbour_stats` (all ``(Q,)`` or ``Q×k``)."""

    intersection: torch.Tensor   # |N_k(α) ∩ N_k(g)| / k, in {0, 1/k, ..., 1}
    rank_adv: torch.Tensor       # r_k(α), percentile in [0, 100]
    rank_guide: torch.Tensor     # r_k(g)
    delta_rank: torch.Tensor     # Δr_k(α, g) = r_k(α) − r_k(g), percentile points
    nn_adv: torch.Tensor         # Q×k indices into feats: N_k(α) (g excluded)
    nn_guide: torch.Tensor       # Q×k indices into feats: N_k(g) (g itself excluded)


def guide_neighbour_stats(f_adv: torch.Tensor, guide_idx: torch.Tensor, feats: torch.Tensor,
                          labels: torch.Tensor, *, k: int = 3, metric: str = "euclidean"
                          ) -> GuideNeighbourStats:
    """kNN intersection and rank difference of each adversary α and its guide g (Table 1).

    ``f_adv`` (``Q×D``) are the adversaries' encodings; ``guide_idx`` (``(Q,)``) the guides'
    rows in ``feats`` (``N×D``, e.g. all training encodings) with class ``labels`` (``(N,)``).
    For each pair, the reference set is the points of the guide's class in ``feats``
    ("we then rank that point along with all other points of the same label class within the
    training set"); ``g`` is excluded from α's neighbours ("since α is close to g by
    construction, we exclude g when finding NNs for adversarial points α") and, naturally,
    from its own. Ranks come from :func:`.neighbors.rank_statistic`.
    """
    feats, labels = _check_pool(feats, labels)
    f_adv = flatten(f_adv).to(feats.dtype)
    guide_idx = _check_index(guide_idx, feats.shape[0], "guide_idx").to(feats.device)
    if f_adv.shape[0] != guide_idx.shape[0]:
        raise ValueError(f"f_adv has {f_adv.shape[0]} rows but guide_idx has {guide_idx.shape[0]} entries")
    q = f_adv.shape[0]
    inter = torch.empty(q, dtype=feats.dtype, device=feats.device)
    r_adv, r_guide = torch.empty_like(inter), torch.empty_like(inter)
    nn_adv = torch.empty(q, k, dtype=torch.long, device=feats.device)
    nn_guide = torch.empty_like(nn_adv)
    guide_class = labels[guide_idx]
    for c in torch.unique(guide_class).tolist():         # loop over classes, not pairs
        rows = torch.nonzero(guide_class == c).flatten()
        members = torch.nonzero(labels == c).flatten()
        class_feats = feats[members]
        local = torch.searchsorted(members, guide_idx[rows])   # the guides' rows within the class
        _, na = knn(f_adv[rows], class_feats, k, metric=metric, exclude=local)
        _, ng = knn(class_feats[local], class_feats, k, metric=metric, exclude=local)
        inter[rows] = knn_intersection(na, ng).to(inter.dtype)
        r_adv[rows] = rank_statistic(f_adv[rows], class_feats, k=k, exclude=local, metric=metric).to(inter.dtype)
        r_guide[rows] = rank_statistic(class_feats[local], class_feats, k=k, exclude=local,
                                       metric=metric).to(inter.dtype)
        nn_adv[rows], nn_guide[rows] = members[na], members[ng]
    return GuideNeighbourStats(inter, r_adv, r_guide, r_adv - r_guide, nn_adv, nn_guide)


class AdversaryRanks(NamedTuple):
    """Per-adversary results of :func:`adversary_nn_ranks` (all ``(Q,)``)."""

    rank_adv: torch.Tensor   # r_k(α) among the points of its class (guide excluded), percentile
    rank_nn: torch.Tensor    # r_k(n₁(α)), the same statistic of α's nearest class point
    nn1: torch.Tensor        # n₁(α): index into feats


def adversary_nn_ranks(f_adv: torch.Tensor, classes: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor,
                       *, exclude: torch.Tensor | None = None, k: int = 3, metric: str = "euclidean"
                       ) -> AdversaryRanks:
    """Rank of each adversary α and of its nearest neighbour ``n₁(α)`` in its class (Fig. 4 bis a).

    "Average distance of 3-NNs is used to rank all points in predicted class (excl. guide)":
    the class of α is ``classes`` (``(Q,)``, e.g. the model's prediction on α), its reference
    points the rows of ``feats`` with that label. ``exclude`` (``(Q,)`` indices into ``feats``,
    ``-1`` for none; e.g. the guides' rows) is left out of α's neighbours, so ``n₁(α)`` is
    never the guide. ``r_k(n₁(α))`` is computed like any class point's rank (itself excluded).
    Classes without at least ``k + 1`` points raise ``ValueError``.
    """
    feats, labels = _check_pool(feats, labels)
    f_adv = flatten(f_adv).to(feats.dtype)
    classes = _check_classes(classes, labels, k + 1).to(feats.device)
    q = f_adv.shape[0]
    if classes.shape[0] != q:
        raise ValueError(f"f_adv has {q} rows but classes has {classes.shape[0]} entries")
    exclude = _per_query_exclude(exclude, q, feats.shape[0], feats.device)
    r_adv = torch.empty(q, dtype=feats.dtype, device=feats.device)
    r_nn = torch.empty_like(r_adv)
    nn1 = torch.empty(q, dtype=torch.long, device=feats.device)
    for c in torch.unique(classes).tolist():
        rows = torch.nonzero(classes == c).flatten()
        members = torch.nonzero(labels == c).flatten()
        class_feats = feats[members]
        local = _local_exclusion(exclude[rows], members)      # -1 where not a class point
        _, n1 = knn(f_adv[rows], class_feats, 1, metric=metric, exclude=local)
        n1 = n1[:, 0]
        r_adv[rows] = rank_statistic(f_adv[rows], class_feats, k=k, exclude=local, metric=metric).to(r_adv.dtype)
        r_nn[rows] = rank_statistic(class_feats[n1], class_feats, k=k, exclude=n1, metric=metric).to(r_adv.dtype)
        nn1[rows] = members[n1]
    return AdversaryRanks(r_adv, r_nn, nn1)


class InlierScores(NamedTuple):
    """Results of :func:`inlier_scores`: per centre, scores of α, ``N_c`` and ``N_f``.

    ``delta_L`` and ``omega`` are dicts ``{"alpha": (G,), "close": G×|N_c|, "far": G×|N_f|}``;
    ``sets`` holds the :class:`.manifold.NeighbourhoodSets` (indices into the pool).
    """

    delta_L: dict
    omega: dict
    sets: tuple

    def medians(self) -> dict:
        """``{(score, who): median}`` for ``score`` in ``delta_L``/``omega`` and ``who`` in
        ``alpha``/``close``/``far``, pooled over centres (Python floats)."""
        return {(score, who): float(getattr(self, score)[who].double().median())
                for score in ("delta_L", "omega") for who in ("alpha", "close", "far")}


def inlier_scores(f_alpha: torch.Tensor, f_center: torch.Tensor, pool: torch.Tensor, *,
                  n_components: int = DEFAULT_PPCA_COMPONENTS, metric: str = "cosine",
                  generator: torch.Generator | int | None = 0, exclude=None,
                  n_ref: int = 15, n_close: int = 20, far: tuple[int, int] = (40, 50),
                  score_dtype: torch.dtype | None = torch.float64) -> InlierScores:
    """``ΔL(·, c)`` and ``Ω(·, c)`` of α, ``N_c`` and ``N_f`` around each centre ``c`` (§4.2, Fig. 4).

    ``f_alpha`` and ``f_center`` are ``G×D`` (one adversary per centre; the centre is the guide
    ``g``, or ``n₁(α)`` for Fig. 4 bis b), ``pool`` ``N×D`` the encodings neighbours are drawn
    from (the training set). Per centre, :func:`.manifold.neighbourhood_sets` gives ``N_ref``
    (``n_ref`` random points of ``N_{n_close}(c)``), ``N_c = N_{n_close}(c) ∖ N_ref`` and
    ``N_f = N_{far[1]}(c) ∖ N_{far[0]}(c)`` under ``metric`` (copies of ``c`` in the pool are
    left out; ``exclude`` leaves out more, as there). Then
    :func:`.manifold.ppca_delta_loglik` (PPCA of ``N_ref`` with ``n_components``, mean moved
    to ``c``) and :func:`.manifold.angular_consistency` score the three sets.

    The neighbour search runs in the features' dtype; the scores are computed in
    ``score_dtype`` (default float64, ``None`` = the features' dtype): more accurate for
    ``ΔL`` of order 10³, and on the CPU much faster — torch's float32 batched SVD of the tall
    ``D×q`` PPCA factors is pathologically slow (≈1 s for 10 guides at ``D = 256``).
    """
    f_alpha, f_center, pool = flatten(f_alpha), flatten(f_center), flatten(pool)
    if f_alpha.shape != f_center.shape:
        raise ValueError(f"f_alpha and f_center must both be G×D with the same shape, got "
                         f"{tuple(f_alpha.shape)} and {tuple(f_center.shape)}")
    dtype = torch.promote_types(torch.promote_types(f_alpha.dtype, f_center.dtype), pool.dtype)
    f_alpha, f_center, pool = f_alpha.to(dtype), f_center.to(dtype), pool.to(dtype)
    sets = neighbourhood_sets(f_center, pool, n_ref=n_ref, n_close=n_close, far=far, metric=metric,
                              generator=generator, exclude=exclude)
    cast = (lambda t: t) if score_dtype is None else (lambda t: t.to(score_dtype))
    ref, center = cast(pool[sets.ref]), cast(f_center)              # G×n_ref×D, G×D
    points = {"alpha": cast(f_alpha), "close": cast(pool[sets.close]), "far": cast(pool[sets.far])}
    delta_L = {name: ppca_delta_loglik(z, center, ref, n_components=n_components)
               for name, z in points.items()}
    omega = {name: angular_consistency(z, center, ref) for name, z in points.items()}
    return InlierScores(delta_L, omega, sets)
