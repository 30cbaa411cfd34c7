"""Image-space subspaces of Jetley et al. (2018), §4.2–§4.4: selection, union, projection, SVD.

All vectors live in the *mean-subtracted* image space ``i = x − x̄`` (``x̄`` the per-pixel mean
image of the training split), flattened to ``D`` entries.

* :func:`select_directions` — per class, the ``d`` eigenvectors of Algorithm 1 that make
  ``S_pos`` (``"first"``: most positive), ``S_neg`` (``"last"``), ``S_neg∪pos``
  (``"first_and_last"``), ``S_flat`` (``"least"``: smallest ``|λ|``) or the most curved
  (``"most"``: largest ``|λ|``);
* :func:`union_basis` — the orthonormal ``Q_d`` of all classes' selected directions (reduced QR)
  and its dimension ``min(C·d, D)``;
* :func:`project_images` — ``x̄ + Q Qᵀ (x − x̄)``, never clipped (the authors' networks take
  unconstrained inputs);
* :func:`norm_fractions` — ``‖Qᵀ p̂‖`` of unit-normalised perturbations (Fig. 3 bottom), with
  :func:`random_fraction`, the expected value ``√(dim/D)`` for a random direction;
* :func:`svd_directions` — left singular vectors of stacked, L2-normalised perturbations, **not
  centred** (an SVD about the origin, not PCA), from a Gram matrix accumulated in batches;
* :func:`subspace_overlap` — the mean squared cosine of the principal angles of two subspaces.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .curvature import Curvatures, random_orthonormal

__all__ = ["STRATEGIES", "select_directions", "union_basis", "project_images", "norm_fractions",
           "random_fraction", "svd_directions", "subspace_overlap"]

STRATEGIES = ("first", "last", "first_and_last", "least", "most")


def select_directions(curv: Curvatures, d: int, strategy: str, *, seed: int = 0) -> torch.Tensor:
    """The ``D×d`` (``D×2d`` for ``"first_and_last"``) directions of one class (see module docstring).

    With a top-k spectrum (``curv.complete`` false), ``"first"``/``"last"`` need ``d ≤ k``, and
    ``"least"`` returns random orthonormal directions in the orthogonal complement of the
    computed ones — exact at the level of the subspace (every uncomputed eigenvalue is smaller
    in magnitude than every computed one), only the order within the near-null space is random.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    dim, m = curv.vectors.shape
    if not 0 <= d <= dim:
        raise ValueError(f"d must be in 0..{dim} (the input dimension), got {d}")
    v, lam = curv.vectors, curv.values
    if strategy == "least" and not curv.complete:
        return random_orthonormal(dim, d, seed=seed * 1000 + curv.target, dtype=v.dtype, exclude=v)
    half = m if curv.complete else m // 2
    if strategy in ("first", "last", "first_and_last") and d > half:
        raise ValueError(f"d = {d} exceeds the {half} directions computed at each end of the spectrum "
                         "(method='topk'); use a smaller d or method='full'")
    if strategy == "first":
        return v[:, :d]
    if strategy == "last":
        return v[:, m - d:].flip(1)
    if strategy == "first_and_last":
        return torch.cat([v[:, :d], v[:, m - d:].flip(1)], 1)
    order = lam.abs().argsort(descending=strategy == "most")
    if d > m:
        raise ValueError(f"d = {d} exceeds the {m} computed directions")
    return v[:, order[:d]]


def union_basis(directions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Orthonormal basis ``Q`` (D×r) of the span of all ``directions`` (each D×d_c), by reduced QR.

    ``r = min(Σ d_c, D)``: once the union has ``D`` or more columns, ``Q`` spans everything and
    the projection is the identity. An empty union gives a D×0 matrix.
    """
    if not len(directions):
        raise ValueError("need at least one matrix of directions")
    dims = {t.shape[0] for t in directions}
    if len(dims) != 1:
        raise ValueError(f"all directions must have the same dimension, got {sorted(dims)}")
    a = torch.cat([t.to(torch.float64) for t in directions], 1)
    if a.shape[1] == 0:
        return a
    dim = a.shape[0]
    if a.shape[1] < dim:
        return torch.linalg.qr(a).Q
    q, r = torch.linalg.qr(a[:, :dim])  # D columns already span everything when independent
    diag = r.diagonal().abs()
    if diag.min() > 1e-10 * diag.max():
        return q
    return torch.linalg.svd(a, full_matrices=False).U


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1)


def project_images(x: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``x̄ + Q Qᵀ (x − x̄)`` for every image of ``x`` (not clipped); ``x``'s dtype and shape.

    (The authors' code adds the training mean of the orthogonal component, ``(I − QQᵀ)·mean(i)``;
    with ``x̄`` the training mean that term is zero, so it is left out.)
    """
    if mean.shape != x.shape[1:]:
        raise ValueError(f"mean must be one image of shape {tuple(x.shape[1:])}, got {tuple(mean.shape)}")
    if basis.shape[0] != x[0].numel():
        raise ValueError(f"basis must have {x[0].numel()} rows, got {tuple(basis.shape)}")
    q = basis.to(torch.float64)
    c = _flat(x.to(torch.float64) - mean.to(torch.float64))
    return (mean.to(torch.float64) + ((c @ q) @ q.T).view_as(x)).to(x.dtype)


def norm_fractions(perturbations: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``‖Qᵀ p / ‖p‖‖`` per perturbation (N, float64): the share of its norm inside ``span(Q)``.

    1 for a perturbation inside the subspace, 0 for one orthogonal to it; zero perturbations
    give NaN.
    """
    p = _flat(perturbations).to(torch.float64)
    if basis.shape[0] != p.shape[1]:
        raise ValueError(f"basis must have {p.shape[1]} rows, got {tuple(basis.shape)}")
    n = p.norm(dim=1)
    frac = (p @ basis.to(torch.float64)).norm(dim=1) / n
    return torch.where(n > 0, frac, torch.full_like(frac, float("nan")))


def random_fraction(dim: int, total: int) -> float:
    """``√(dim / D)``: about the norm fraction of a random direction in a ``dim``-dimensional subspace of ``R^D``."""
    if not 0 <= dim <= total:
        raise ValueError(f"need 0 ≤ dim ≤ D, got dim = {dim}, D = {total}")
    return (dim / total) ** 0.5


def svd_directions(perturbations: torch.Tensor | Iterable[torch.Tensor], *, normalise: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors (D×D, by decreasing singular value) and singular values of stacked perturbations.

    ``perturbations`` is an N×… tensor or an iterable of such batches (streamed: only the D×D
    Gram matrix ``G = Σ p̂ p̂ᵀ`` is held). Each perturbation is scaled to unit L2 norm first when
    ``normalise`` (the authors'); nothing is centred. With fewer than D perturbations the
    trailing directions are an arbitrary basis of the null space (they come first in ``S_lo``).
    """
    batches = [perturbations] if isinstance(perturbations, torch.Tensor) else perturbations
    gram = None
    for batch in batches:
        p = _flat(batch).to(torch.float64)
        if normalise:
            n = p.norm(dim=1, keepdim=True)
            p = torch.where(n > 0, p / n.clamp_min(1e-300), p)
        gram = p.T @ p if gram is None else gram + p.T @ p
    if gram is None:
        raise ValueError("no perturbations")
    values, vectors = torch.linalg.eigh(gram)
    order = values.argsort(descending=True)
    return vectors[:, order], values[order].clamp_min(0).sqrt()


def subspace_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖Aᵀ B‖_F² / min(k_a, k_b)`` of two orthonormal bases: 1 when one subspace contains the other, ≈ k/D at random."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"bases must have the same dimension, got {a.shape[0]} and {b.shape[0]}")
    k = min(a.shape[1], b.shape[1])
    if not k:
        raise ValueError("empty basis")
    return ((a.to(torch.float64).T @ b.to(torch.float64)).norm() ** 2 / k).item()
