"""Distances between feature encodings (Sabour et al. 2016, §4.1; chapter 1).

Every function takes features as ``N×D`` tensors (use :func:`flatten` on conv features
``N×C×H×W`` first; the functions here flatten trailing axes themselves too), works on any
device and dtype, and is vectorised over points. Functions that look at all pairs of a set
(:func:`pairwise_distances`, :func:`mean_intra_class_distance`, :func:`mean_nn_distance`) work
in row chunks of ~16M distances, so sets of ~50k points of dimension ~4096 fit in memory
(the reference set is copied once, centred or normalised; nothing ``N×N`` is held except by
:func:`pairwise_distances`, whose result it is).

Euclidean pairwise distances use the Gram identity ``‖a−b‖² = ‖a‖² + ‖b‖² − 2⟨a, b⟩`` on
points centred at the reference set's mean (which keeps the cancellation error small) and are
clamped at 0 before the square root; row-wise distances, and the nearest-neighbour distances
that :func:`mean_nn_distance` and :func:`featadv_core.analysis.knn` return, are computed
directly (exactly).
The cosine distance is ``1 − cos(a, b)``; a zero vector has cosine similarity 0 with every
vector, so its cosine distance to anything (itself included) is 1.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ..labels import check_labels

__all__ = [
    "flatten", "euclidean", "cosine_distance", "pairwise_distances", "distance_ratio",
    "mean_intra_class_distance", "mean_nn_distance",
]

METRICS = ("euclidean", "cosine")
_BLOCK_ELEMENTS = 1 << 24      # ~64 MB of float32 per distance block
_COS_EPS = 1e-12


# --------------------------------------------------------------------------- validation

def flatten(feats: torch.Tensor) -> torch.Tensor:
    """``N×...`` features (e.g. a conv layer's ``N×C×H×W``) as an ``N×D`` matrix.

    A 0-d or 1-d tensor is a ``ValueError``: add the batch axis (``f[None]``) for one point.
    Integer/bool tensors are converted to the default float dtype.
    """
    if not isinstance(feats, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(feats).__name__}")
    if feats.ndim < 2:
        raise ValueError(
            f"features must be N×D (or N×C×H×W), got shape {tuple(feats.shape)}; "
            "for a single point add a batch axis, e.g. f[None]")
    if not feats.is_floating_point():
        feats = feats.to(torch.get_default_dtype())
    return feats.flatten(1)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")


def _check_nonempty(x: torch.Tensor, name: str) -> None:
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 points)")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has dimension 0")


def _same_dim(a: torch.Tensor, b: torch.Tensor, names: str = "a and b") -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names} have different feature dimensions: {a.shape[1]} vs {b.shape[1]}")


def _rowwise_pair(a: torch.Tensor, b: torch.Tensor, names: str = "a and b") -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten, check that dimensions agree and that the row counts match (or one is 1)."""
    a, b = flatten(a), flatten(b)
    _same_dim(a, b, names)
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(
            f"{names} must have the same number of rows (or one row, broadcast): "
            f"{a.shape[0]} vs {b.shape[0]}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


# --------------------------------------------------------------------------- row-wise

def euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Euclidean distance ``‖a_i − b_i‖₂`` → shape ``(N,)``.

    ``a`` and ``b`` are ``N×D`` (or ``N×...``, flattened); one of them may have a single row,
    which is compared with every row of the other. The paper's ``d(x, y)`` (§4.1, Fig. 3).
    """
    a, b = _rowwise_pair(a, b)
    return torch.linalg.vector_norm(a - b, dim=1)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine distance ``1 − ⟨a_i, b_i⟩ / (‖a_i‖‖b_i‖)`` in ``[0, 2]`` → ``(N,)``.

    Used to define nearest neighbours in §4.2 ("we use cosine distance for defining NNs").
    A zero row has cosine similarity 0 with everything, hence distance 1.
    """
    a, b = _rowwise_pair(a, b)
    an = torch.linalg.vector_norm(a, dim=1)
    bn = torch.linalg.vector_norm(b, dim=1)
    cos = (a * b).sum(1) / (an * bn).clamp_min(_COS_EPS)
    # exact 0 for (numerically) parallel rows; |cos| <= 1 up to rounding
    return (1.0 - cos).clamp(0.0, 2.0)


def _rowwise(metric: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    _check_metric(metric)
    return euclidean if metric == "euclidean" else cosine_distance


# --------------------------------------------------------------------------- pairwise (chunked)

class _Reference:
    """A reference set prepared once for repeated chunked distance blocks."""

    def __init__(self, reference: torch.Tensor, metric: str):
        _check_metric(metric)
        self.metric = metric
        if metric == "euclidean":
            self.center = reference.mean(0, keepdim=True)
            self.ref = reference - self.center
            self.sq = (self.ref * self.ref).sum(1)
        else:
            norm = torch.linalg.vector_norm(reference, dim=1, keepdim=True)
            self.ref = reference / norm.clamp_min(_COS_EPS)
        self.size = reference.shape[0]

    def block(self, query: torch.Tensor) -> torch.Tensor:
        """Distances from the rows of ``query`` to every reference point (``q×M``)."""
        if self.metric == "euclidean":
            q = query - self.center
            sq = (q * q).sum(1, keepdim=True) + self.sq[None, :] - 2.0 * (q @ self.ref.T)
            return sq.clamp_min_(0.0).sqrt_()
        norm = torch.linalg.vector_norm(query, dim=1, keepdim=True)
        cos = (query / norm.clamp_min(_COS_EPS)) @ self.ref.T
        return (1.0 - cos).clamp_(0.0, 2.0)


def _chunk_rows(n_cols: int, dim: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        return int(chunk_size)
    return max(1, _BLOCK_ELEMENTS // max(n_cols, dim, 1))


def _blocks(query: torch.Tensor, ref: _Reference, chunk_size: int | None) -> Iterator[tuple[int, torch.Tensor]]:
    step = _chunk_rows(ref.size, query.shape[1], chunk_size)
    for start in range(0, query.shape[0], step):
        yield start, ref.block(query[start:start + step])


def pairwise_distances(a: torch.Tensor, b: torch.Tensor | None = None, *, metric: str = "euclidean",
                       chunk_size: int | None = None) -> torch.Tensor:
    """All distances between the rows of ``a`` (``N×D``) and of ``b`` (``M×D``) → ``N×M``.

    ``b=None`` means ``b = a``. ``metric`` is ``"euclidean"`` or ``"cosine"`` (``1 − cos``).
    Computed in row chunks (``chunk_size`` rows at a time; automatic by default) so the peak
    memory is the ``N×M`` result plus one block; for statistics over very large sets use the
    reducing functions (:func:`mean_nn_distance`, :func:`featadv_core.analysis.knn`), which
    never hold the full matrix. Values are clamped at 0 and, with ``b=None``, the diagonal is
    exactly 0. Euclidean entries come from the Gram identity: their absolute error is about
    ``sqrt(eps)·‖x − x̄‖`` for (near-)coincident points — use :func:`euclidean` (exact,
    row-wise) when tiny distances matter; :func:`featadv_core.analysis.knn` recomputes the
    distances of the neighbours it returns exactly.
    """
    a = flatten(a)
    same = b is None
    b = a if same else flatten(b)
    _check_nonempty(a, "a")
    _check_nonempty(b, "b")
    _same_dim(a, b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    ref = _Reference(b, metric)
    out = torch.empty(a.shape[0], b.shape[0], dtype=dtype, device=a.device)
    for start, block in _blocks(a, ref, chunk_size):
        out[start:start + block.shape[0]] = block
    if same:
        out.fill_diagonal_(0.0)          # exact, rather than the Gram trick's ~sqrt(eps)·‖x‖
    return out


def _knn_blocks(query: torch.Tensor, reference: torch.Tensor, k: int, *, metric: str,
                mask_block: Callable[[int, torch.Tensor], None] | None, chunk_size: int | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked k smallest distances. ``mask_block(start, block)`` sets excluded entries to inf."""
    ref = _Reference(reference, metric)
    rowwise = _rowwise(metric)
    dists, idx = [], []
    for start, block in _blocks(query, ref, chunk_size):
        if mask_block is not None:
            mask_block(start, block)
        _, i = torch.topk(block, k, dim=1, largest=False, sorted=True)
        # the selected neighbours' distances, recomputed exactly (not via the Gram identity)
        q = query[start:start + block.shape[0]]
        step = max(1, _BLOCK_ELEMENTS // max(1, k * query.shape[1]))
        d = torch.cat([rowwise(q[s:s + step].repeat_interleave(k, 0), reference[i[s:s + step].reshape(-1)]
                               ).view(-1, k) for s in range(0, q.shape[0], step)])
        d, order = torch.sort(d, dim=1, stable=True)
        dists.append(d)
        idx.append(i.gather(1, order))
    return torch.cat(dists), torch.cat(idx)


def _self_mask(start: int, block: torch.Tensor) -> None:
    rows = torch.arange(block.shape[0], device=block.device)
    block[rows, rows + start] = float("inf")


# --------------------------------------------------------------------------- paper statistics

def distance_ratio(f_adv: torch.Tensor, f_src: torch.Tensor, f_guide: torch.Tensor, *,
                   metric: str = "euclidean") -> torch.Tensor:
    """``d(α, g) / d(s, g)`` per source–guide pair → ``(N,)`` (Fig. 3a, Fig. 5, §5).

    Ratios below 0.5 mean the adversarial encoding is closer to the guide than the source
    is; 1 means no progress. A pair with ``s == g`` (zero denominator) gives ``inf``/``nan``.
    """
    f_adv, f_src, f_guide = flatten(f_adv), flatten(f_src), flatten(f_guide)
    n = {f_adv.shape[0], f_src.shape[0], f_guide.shape[0]}
    if len(n - {1}) > 1:
        raise ValueError(
            f"f_adv, f_src and f_guide must have the same number of rows (or one row): "
            f"{f_adv.shape[0]}, {f_src.shape[0]}, {f_guide.shape[0]}")
    d = _rowwise(metric)
    return d(f_adv, f_guide) / d(f_src, f_guide)


def _per_class(feats: torch.Tensor, labels: torch.Tensor, num_classes: int | None,
               stat: Callable[[torch.Tensor], torch.Tensor], min_points: int, what: str) -> torch.Tensor:
    feats = flatten(feats)
    _check_nonempty(feats, "feats")
    labels = check_labels(labels, feats.shape[0], device=feats.device)
    classes, counts = torch.unique(labels, return_counts=True)
    size = int(classes.max()) + 1 if num_classes is None else int(num_classes)
    if size <= int(classes.max()):
        raise ValueError(f"num_classes={num_classes} but labels go up to {int(classes.max())}")
    small = classes[counts < min_points].tolist()
    if small:
        raise ValueError(f"{what} needs at least {min_points} points per class; class(es) {small} "
                         f"have fewer (drop them or give more points)")
    out = torch.full((size,), float("nan"), dtype=feats.dtype, device=feats.device)
    order = torch.argsort(labels, stable=True)
    for c, group in zip(classes.tolist(), torch.split(order, counts.tolist())):  # loop over classes only
        out[c] = stat(feats[group])
    return out


def mean_intra_class_distance(feats: torch.Tensor, labels: torch.Tensor, *, metric: str = "euclidean",
                              num_classes: int | None = None, chunk_size: int | None = None) -> torch.Tensor:
    """Per-class mean distance over all pairs of distinct points of the class → ``(C,)``.

    The ``d̄(s)`` of Fig. 3(c): "the average pairwise distances between points from images of
    the same class as the source". Entry ``c`` is for class ``c`` (``C = num_classes`` or
    ``labels.max() + 1``); classes without points are ``nan``, so ``out[labels_src]`` looks up
    each source's class. Self-pairs are excluded; each class needs at least 2 points.
    """
    _check_metric(metric)

    def stat(x: torch.Tensor) -> torch.Tensor:
        ref = _Reference(x, metric)
        total = 0.0                                   # a Python float: double precision anywhere
        for start, block in _blocks(x, ref, chunk_size):
            rows = torch.arange(block.shape[0], device=block.device)
            block[rows, rows + start] = 0.0          # self-pairs (≈0 up to rounding) do not count
            total += float(block.sum())
        n = x.shape[0]
        return torch.tensor(total / (n * (n - 1)), dtype=x.dtype, device=x.device)

    return _per_class(feats, labels, num_classes, stat, 2, "mean_intra_class_distance")


def mean_nn_distance(feats: torch.Tensor, labels: torch.Tensor, *, metric: str = "euclidean",
                     num_classes: int | None = None, chunk_size: int | None = None) -> torch.Tensor:
    """Per-class mean distance from each point to its nearest other point of the class → ``(C,)``.

    The ``d̄₁(g)`` of Fig. 3(b): "the average distance to the nearest neighbor encoding among
    images with the same class as the guide". Indexed by class like
    :func:`mean_intra_class_distance` (``nan`` for absent classes; ≥ 2 points per class).
    """
    _check_metric(metric)

    def stat(x: torch.Tensor) -> torch.Tensor:
        d, _ = _knn_blocks(x, x, 1, metric=metric, mask_block=_self_mask, chunk_size=chunk_size)
        return d[:, 0].mean()

    return _per_class(feats, labels, num_classes, stat, 2, "mean_nn_distance")
