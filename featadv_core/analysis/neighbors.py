"""Nearest-neighbour statistics of §4.1 (Table 1) and §5 (Fig. 4a) of Sabour et al. 2016.

* :func:`knn` — the K nearest reference points of each query, with per-query exclusions
  ("since α is close to g by construction, we exclude g when finding NNs for adversarial
  points α"); chunked, so reference sets of ~50k points are fine.
* :func:`rank_statistic` — ``r_K(x)``: "We take the average distance to a point's K NNs as a
  scalar score for the point. We then rank that point along with all other points of the
  same label class within the training set." ``Δr₃(α, g) = r₃(α) − r₃(g)`` in percentiles.
* :func:`knn_intersection` — ``|N_K(α) ∩ N_K(g)| / K`` (Table 1, "3NN intersection").

Typical use for one guide ``g`` (index ``gi`` in the class's training features ``F``)::

    _, nn_g = knn(f_g[None], F, 3, exclude=[gi])      # g's NNs among the other class points
    _, nn_a = knn(f_adv[None], F, 3, exclude=[gi])    # α's NNs, g excluded as in the paper
    inter = knn_intersection(nn_a, nn_g)
    dr3 = rank_statistic(f_adv[None], F, exclude=[gi]) - rank_statistic(f_g[None], F, exclude=[gi])

Many pairs whose guides share a class go in one call (``exclude`` then holds one index per
row).
"""
from __future__ import annotations

import torch

from ..metrics.distances import _check_metric, _check_nonempty, _knn_blocks, _same_dim, _self_mask, flatten

__all__ = ["knn", "knn_score", "rank_statistic", "knn_intersection"]


def _exclusion(exclude, n_query: int, n_ref: int, device: torch.device):
    """Normalise ``exclude`` into ``(mask_block, max_excluded_per_row)``."""
    if exclude is None:
        return None, 0
    if isinstance(exclude, str):
        if exclude != "self":
            raise ValueError(f"exclude must be None, 'self', indices or a boolean mask, got {exclude!r}")
        if n_query != n_ref:
            raise ValueError(f"exclude='self' needs the query set to be the reference set, "
                             f"but they have {n_query} and {n_ref} points")
        return _self_mask, 1
    ex = torch.as_tensor(exclude, device=device)
    if ex.dtype == torch.bool:
        if ex.shape != (n_query, n_ref):
            raise ValueError(f"a boolean exclude mask must have shape (n_query, n_reference) = "
                             f"({n_query}, {n_ref}), got {tuple(ex.shape)}")
        counts = ex.sum(1)

        def mask_block(start: int, block: torch.Tensor) -> None:
            block.masked_fill_(ex[start:start + block.shape[0]], float("inf"))
        return mask_block, int(counts.max()) if n_query else 0
    if ex.is_floating_point() or ex.is_complex():
        raise ValueError(f"exclude indices must be integers, got dtype {ex.dtype}")
    ex = ex.long()
    if ex.ndim == 1 and ex.numel() == n_query:
        ex = ex[:, None]
    elif ex.ndim == 1 and ex.numel() != n_query:
        raise ValueError(f"exclude must hold one index per query ({n_query}), got {ex.numel()}; "
                         f"use shape (n_query, E) for several, padded with -1")
    if ex.ndim != 2 or ex.shape[0] != n_query:
        raise ValueError(f"exclude indices must have shape (n_query,) or (n_query, E) with "
                         f"n_query={n_query}, got {tuple(ex.shape)}")
    if ex.numel() and int(ex.max()) >= n_ref:
        raise ValueError(f"exclude index {int(ex.max())} is out of range for {n_ref} reference points")
    valid = ex >= 0                                       # -1 (any negative) pads ragged rows
    srt = torch.sort(torch.where(valid, ex, -1), dim=1).values
    distinct = (srt >= 0) & torch.cat([torch.ones_like(srt[:, :1], dtype=torch.bool),
                                       srt[:, 1:] != srt[:, :-1]], dim=1)
    max_excluded = int(distinct.sum(1).max()) if ex.numel() else 0

    def mask_block(start: int, block: torch.Tensor) -> None:
        sub, ok = ex[start:start + block.shape[0]], valid[start:start + block.shape[0]]
        rows = torch.arange(block.shape[0], device=block.device)[:, None].expand_as(sub)
        block[rows[ok], sub[ok]] = float("inf")
    return mask_block, max_excluded


def knn(query: torch.Tensor, reference: torch.Tensor, k: int, *, metric: str = "euclidean",
        exclude=None, chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest rows of ``reference`` to each row of ``query`` → ``(distances, indices)``.

    Both results are ``Q×k``, sorted by increasing distance; ``indices`` index ``reference``.
    ``metric`` is ``"euclidean"`` (§4.1) or ``"cosine"`` (§4.2). ``exclude`` removes
    candidates per query:

    * ``None`` — nothing excluded;
    * ``"self"`` — ``query`` is ``reference`` (same rows): row ``i`` never gets itself;
    * integer indices of shape ``(Q,)`` (one per query, e.g. the guide ``g``'s index for
      each α) or ``(Q, E)`` (several; negative entries are padding and ignored);
    * a boolean mask ``Q×M``, ``True`` = excluded.

    Raises ``ValueError`` when ``k`` exceeds the candidates left after exclusion.
    """
    query, reference = flatten(query), flatten(reference)
    _check_metric(metric)
    _check_nonempty(reference, "reference")
    if query.shape[0] == 0:
        raise ValueError("query is empty (0 points)")
    _same_dim(query, reference, "query and reference")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    dtype = torch.promote_types(query.dtype, reference.dtype)
    query, reference = query.to(dtype), reference.to(dtype)
    mask_block, n_excluded = _exclusion(exclude, query.shape[0], reference.shape[0], query.device)
    if k > reference.shape[0] - n_excluded:
        raise ValueError(f"k={k} is larger than the {reference.shape[0]} reference points"
                         + (f" minus up to {n_excluded} excluded per query" if n_excluded else ""))
    return _knn_blocks(query, reference, k, metric=metric, mask_block=mask_block, chunk_size=chunk_size)


def knn_score(query: torch.Tensor, reference: torch.Tensor, k: int = 3, *, metric: str = "euclidean",
              exclude=None, chunk_size: int | None = None) -> torch.Tensor:
    """Mean distance of each query to its ``k`` nearest reference points → ``(Q,)``.

    The scalar score behind :func:`rank_statistic` (§4.1). ``exclude`` as in :func:`knn`.
    """
    d, _ = knn(query, reference, k, metric=metric, exclude=exclude, chunk_size=chunk_size)
    return d.mean(1)


def rank_statistic(query: torch.Tensor, class_feats: torch.Tensor, *, k: int = 3, exclude=None,
                   metric: str = "euclidean", chunk_size: int | None = None) -> torch.Tensor:
    """``r_K`` percentile of each query among the points of one class → ``(Q,)`` in ``[0, 100]``.

    §4.1 / Table 1: a point's score is its mean distance to its ``k`` nearest neighbours among
    ``class_feats`` (the class's training encodings); each class point is scored against the
    others (itself excluded). ``r_K(x)`` is the percentage of class points whose score is
    ``≤`` the score of ``x``: the densest regions give small ranks, an outlier gives 100.
    ``exclude`` removes candidates from the queries' neighbour search as in :func:`knn` —
    pass the guide's index for both ``g`` (it is a class point itself) and α (the paper
    excludes ``g`` when finding α's NNs). ``Δr₃(α, g) = r₃(α) − r₃(g)``.
    """
    class_feats = flatten(class_feats)
    if class_feats.shape[0] < k + 1:
        raise ValueError(f"rank_statistic with k={k} needs at least k+1={k + 1} class points "
                         f"(each is scored against the others), got {class_feats.shape[0]}")
    ref_scores = knn_score(class_feats, class_feats, k, metric=metric, exclude="self", chunk_size=chunk_size)
    scores = knn_score(query, class_feats, k, metric=metric, exclude=exclude, chunk_size=chunk_size)
    ref_scores = torch.sort(ref_scores).values
    below = torch.searchsorted(ref_scores, scores.to(ref_scores.dtype).contiguous(), right=True)
    return 100.0 * below.to(scores.dtype) / ref_scores.numel()


def knn_intersection(a_neighbors: torch.Tensor, b_neighbors: torch.Tensor) -> torch.Tensor:
    """``|N_K(a) ∩ N_K(b)| / K`` per row of two ``Q×K`` neighbour-index tensors → ``(Q,)``.

    Table 1's "3NN intersection" between α and its guide ``g`` (find α's neighbours with
    ``g`` excluded, see :func:`knn`). Each row is treated as a set (duplicates count once).
    """
    a, b = torch.as_tensor(a_neighbors), torch.as_tensor(b_neighbors)
    if a.ndim == 1:
        a = a[None]
    if b.ndim == 1:
        b = b[None]
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"neighbour lists must be Q×K tensors of the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] == 0:
        raise ValueError("neighbour lists are empty (K = 0)")
    if a.is_floating_point() or b.is_floating_point():
        raise ValueError("neighbour lists must hold integer indices")
    b = b.to(a.device)
    a_sorted = torch.sort(a, dim=1).values
    first = torch.cat([torch.ones_like(a_sorted[:, :1], dtype=torch.bool),
                       a_sorted[:, 1:] != a_sorted[:, :-1]], dim=1)      # count each index once
    shared = (a_sorted[:, :, None] == b[:, None, :]).any(-1) & first
    return shared.sum(1).to(torch.get_default_dtype()) / a.shape[1]
