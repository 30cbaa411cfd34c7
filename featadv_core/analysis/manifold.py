"""Is α an inlier near its guide? The manifold analyses of §4.2 of Sabour et al. 2016 (Fig. 4).

* :func:`neighbourhood_sets` — ``N_ref`` (15 random points of ``N₂₀(g)``), the "close"
  neighbours ``N_c = N₂₀(g) ∖ N_ref`` and the "far" ones ``N_f = N₅₀(g) ∖ N₄₀(g)``, with
  neighbours defined by cosine distance.
* :func:`ppca_fit` / :func:`ppca_delta_loglik` — "Manifold Tangent Space": probabilistic
  PCA (Tipping & Bishop 1999) fitted to ``N_ref``, its mean moved to ``g``, and
  ``ΔL(z, g) = L(z) − L(g) ≤ 0``.
* :func:`angular_consistency` — ``Ω(z, g)`` of Eq. (3).

Batching: ``ref`` is ``(..., K, D)``, ``g`` is ``(..., D)`` and ``z`` is ``(..., Z, D)`` (or
``(..., D)`` for one point per batch entry), with the same leading batch shape ``...`` (empty
for one guide, ``(G,)`` for ``G`` guides at once). Features must be flattened to ``D``
(see :func:`featadv_core.metrics.flatten`).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

from ..metrics.distances import _check_metric, flatten
from .neighbors import knn

__all__ = ["NeighbourhoodSets", "neighbourhood_sets", "PPCA", "ppca_fit", "ppca_delta_loglik",
           "angular_consistency", "DEFAULT_PPCA_COMPONENTS", "DEFAULT_SIGMA2_FLOOR"]

#: Default PPCA rank for the 15-point reference sets of §4.2 (the paper does not state one).
#: 15 centred points span at most 14 directions, so ``q ≤ 14``; with ``q = 14`` nothing is
#: left to estimate the noise variance, ``σ²`` collapses to its floor and every point off the
#: 14-dimensional affine span (natural neighbours included) gets an arbitrarily low ΔL.
#: ``q = 5`` models the dominant third of the local directions as the tangent plane and
#: leaves 9 sample directions to estimate ``σ²``. Notebooks should vary it as a sensitivity check.
DEFAULT_PPCA_COMPONENTS = 5
#: ``σ²`` is at least this fraction of the reference set's mean per-dimension variance
#: ``tr(S)/D``: a unit-free floor that only acts when the residual variance vanishes
#: (``q = K − 1``, or collinear references) and keeps ``C = WWᵀ + σ²I`` invertible.
DEFAULT_SIGMA2_FLOOR = 1e-6

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- neighbourhoods

class NeighbourhoodSets(NamedTuple):
    """Indices into the pool: ``ref`` (``N_ref``), ``close`` (``N_c``), ``far`` (``N_f``)."""

    ref: torch.Tensor
    close: torch.Tensor
    far: torch.Tensor


def _identical(g: torch.Tensor, pool: torch.Tensor, idx: torch.Tensor, rtol: float) -> torch.Tensor:
    """``G×k``: is candidate ``pool[idx[i, j]]`` within ``rtol·‖g_i‖`` (Euclidean, exact) of ``g_i``?"""
    k, d = idx.shape[1], g.shape[1]
    step = max(1, (1 << 24) // max(1, k * d))
    out = []
    for s in range(0, g.shape[0], step):
        gi, ii = g[s:s + step], idx[s:s + step]
        dist = torch.linalg.vector_norm(pool[ii] - gi[:, None], dim=2)
        out.append(dist <= rtol * torch.linalg.vector_norm(gi, dim=1, keepdim=True))
    return torch.cat(out)


def _index_mask(exclude, n_guides: int, n_pool: int, single: bool, device: torch.device) -> torch.Tensor:
    """``exclude`` (indices or boolean mask) as a ``G×N`` boolean mask."""
    ex = torch.as_tensor(exclude, device=device)
    if single:                                   # one guide: any list of indices / an (N,) mask
        ex = ex.reshape(1, -1)
    if ex.dtype == torch.bool:
        if ex.shape != (n_guides, n_pool):
            raise ValueError(f"a boolean exclude mask must have shape ({n_guides}, {n_pool}), got {tuple(ex.shape)}")
        return ex
    if ex.is_floating_point() or ex.is_complex():
        raise ValueError(f"exclude indices must be integers, got dtype {ex.dtype}")
    ex = ex.long()
    if ex.ndim == 1 and ex.shape[0] == n_guides:
        ex = ex[:, None]
    if ex.ndim != 2 or ex.shape[0] != n_guides:
        raise ValueError(f"exclude must be pool indices of shape ({n_guides},) or ({n_guides}, E), "
                         f"got {tuple(ex.shape)}")
    if ex.numel() and int(ex.max()) >= n_pool:
        raise ValueError(f"exclude index {int(ex.max())} is out of range for a pool of {n_pool}")
    mask = torch.zeros(n_guides, n_pool, dtype=torch.bool, device=device)
    rows = torch.arange(n_guides, device=device)[:, None].expand_as(ex)
    ok = ex >= 0
    mask[rows[ok], ex[ok]] = True
    return mask


def neighbourhood_sets(g_feat: torch.Tensor, pool: torch.Tensor, *, n_ref: int = 15, n_close: int = 20,
                       far: tuple[int, int] = (40, 50), metric: str = "cosine",
                       generator: torch.Generator | int | None = None, exclude=None,
                       drop_identical: bool = True, identical_rtol: float = 1e-5) -> NeighbourhoodSets:
    """Reference, close and far neighbours of guide(s) ``g_feat`` in ``pool`` (§4.2).

    With ``N_K(g)`` the ``K`` nearest pool points of ``g`` under ``metric`` (cosine distance,
    as in the paper: "we use cosine distance for defining NNs"):

    * ``ref`` — ``N_ref``: ``n_ref`` = 15 points drawn at random from ``N_{n_close}(g)``;
    * ``close`` — ``N_c = N₂₀(g) ∖ N_ref`` (the other ``n_close − n_ref`` = 5);
    * ``far`` — ``N_f = N₅₀(g) ∖ N₄₀(g)``, i.e. neighbours ranked ``far[0]+1 … far[1]``.

    ``g_feat`` is ``(D,)`` for one guide (results are 1-d index tensors) or ``G×D`` (results
    ``G×n``); ``pool`` is ``N×D`` (e.g. the training encodings). ``g`` itself is left out of
    the pool: ``drop_identical`` drops pool rows within ``identical_rtol·‖g‖`` of ``g``, and
    ``exclude`` (pool indices ``(G,)``/``(G, E)`` padded with -1, or a ``G×N`` boolean mask;
    for a single guide any list of indices or an ``(N,)`` mask) drops more. The random
    draw uses ``generator`` (a ``torch.Generator`` or an int seed; ``None`` = torch's global
    RNG). Each index set is listed by increasing distance to ``g``.
    """
    _check_metric(metric)
    single = torch.is_tensor(g_feat) and g_feat.ndim == 1
    g = flatten(g_feat[None] if single else g_feat)
    pool = flatten(pool)
    if g.shape[1] != pool.shape[1]:
        raise ValueError(f"g_feat and pool have different feature dimensions: {g.shape[1]} vs {pool.shape[1]}")
    far = tuple(int(v) for v in far)
    if len(far) != 2 or not (1 <= n_ref < n_close <= far[0] < far[1]):
        raise ValueError(f"need 1 <= n_ref < n_close <= far[0] < far[1], got n_ref={n_ref}, "
                         f"n_close={n_close}, far={far}")
    dtype = torch.promote_types(g.dtype, pool.dtype)
    g, pool = g.to(dtype), pool.to(dtype)
    mask = None if exclude is None else _index_mask(exclude, g.shape[0], pool.shape[0], single, g.device)
    available = pool.shape[0] - (int(mask.sum(1).max()) if mask is not None else 0)
    # g's own copies in the pool have cosine distance ~0: fetch a few spare neighbours, drop
    # the copies among them (checked exactly), and fetch more in the rare case they run out
    spare = 8 if drop_identical else 0
    while True:
        k = min(far[1] + spare, available)
        if k < far[1]:
            raise ValueError(f"the pool has {available} candidate neighbours, fewer than far[1]={far[1]}")
        _, idx = knn(g, pool, k, metric=metric, exclude=mask)
        if not drop_identical:
            break
        same = _identical(g, pool, idx, identical_rtol)
        n_same = int(same.sum(1).max())
        if n_same < spare or k == available:
            break
        spare *= 4
    if drop_identical:
        if k - n_same < far[1]:
            raise ValueError(f"the pool has {k - n_same} candidate neighbours after leaving out g, "
                             f"fewer than far[1]={far[1]}")
        keep_first = torch.argsort(same.to(torch.int8), dim=1, stable=True)   # copies of g to the end
        idx = idx.gather(1, keep_first)
    idx = idx[:, :far[1]]

    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.rand(g.shape[0], n_close, generator=generator, device=gen_device).argsort(1).to(idx.device)
    near = idx[:, :n_close]
    ref = near.gather(1, perm[:, :n_ref].sort(1).values)
    close = near.gather(1, perm[:, n_ref:].sort(1).values)
    far_idx = idx[:, far[0]:far[1]]
    if single:
        return NeighbourhoodSets(ref[0], close[0], far_idx[0])
    return NeighbourhoodSets(ref, close, far_idx)


# --------------------------------------------------------------------------- PPCA

class PPCA(NamedTuple):
    """A probabilistic PCA model ``N(mean, C)``, ``C = W Wᵀ + σ² I`` (Tipping & Bishop 1999).

    ``mean`` is ``(..., D)``, ``W`` is ``(..., D, q)``, ``sigma2`` is ``(...)``. Unpacks as
    ``mean, W, sigma2 = ppca_fit(...)``. Densities are evaluated with the Woodbury identity
    ``C⁻¹ = σ⁻²(I − W(σ²I + WᵀW)⁻¹Wᵀ)`` and ``|C| = σ^{2(D−q)}|σ²I + WᵀW|``, written in the
    orthonormal basis of ``W``'s columns: ``(x−μ)ᵀC⁻¹(x−μ) = ‖r_⊥‖²/σ² + Σ_j c_j²/(s_j² + σ²)``
    with ``c = Uᵀ(x−μ)``, ``r_⊥ = (x−μ) − Uc`` and ``W = U diag(s) Vᵀ`` — no ``D×D`` matrix,
    and the off-plane residual is computed directly rather than as a difference of large terms.
    """

    mean: torch.Tensor
    W: torch.Tensor
    sigma2: torch.Tensor

    @property
    def n_components(self) -> int:
        return self.W.shape[-1]

    def covariance(self) -> torch.Tensor:
        """The dense ``D×D`` covariance (for checks on small ``D`` only)."""
        eye = torch.eye(self.W.shape[-2], dtype=self.W.dtype, device=self.W.device)
        return self.W @ self.W.transpose(-1, -2) + self.sigma2[..., None, None] * eye

    def _basis(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n_components == 0:
            return self.W, self.W.new_zeros(self.W.shape[:-2] + (0,))
        u, s, _ = torch.linalg.svd(self.W, full_matrices=False)
        return u, s

    def mahalanobis(self, x: torch.Tensor, center: torch.Tensor | None = None) -> torch.Tensor:
        """``(x − μ)ᵀ C⁻¹ (x − μ)`` for ``x`` of shape ``(..., Z, D)`` → ``(..., Z)``.

        ``center`` replaces the mean (``(..., D)``), e.g. the guide ``g`` in §4.2.
        """
        mu = self.mean if center is None else center
        r = x - mu[..., None, :]
        u, s = self._basis()
        c = r @ u                                                     # (..., Z, q)
        resid = r - c @ u.transpose(-1, -2)
        s2 = self.sigma2[..., None, None]
        return (resid * resid).sum(-1) / s2[..., 0] + (c * c / (s[..., None, :] ** 2 + s2)).sum(-1)

    def log_det(self) -> torch.Tensor:
        """``log |C| = (D − q) log σ² + Σ_j log(s_j² + σ²)`` (matrix determinant lemma)."""
        _, s = self._basis()
        d, q = self.W.shape[-2], self.n_components
        return (d - q) * torch.log(self.sigma2) + torch.log(s ** 2 + self.sigma2[..., None]).sum(-1)

    def log_prob(self, x: torch.Tensor, center: torch.Tensor | None = None) -> torch.Tensor:
        """Gaussian log-density ``L(x)`` for ``x`` of shape ``(..., Z, D)`` → ``(..., Z)``."""
        d = self.W.shape[-2]
        return -0.5 * (d * _LOG_2PI + self.log_det()[..., None] + self.mahalanobis(x, center))


def ppca_fit(points: torch.Tensor, n_components: int = DEFAULT_PPCA_COMPONENTS, *,
             sigma2_floor: float = DEFAULT_SIGMA2_FLOOR) -> PPCA:
    """Maximum-likelihood PPCA of ``points`` (``(..., N, D)``, batched over ``...``) → :class:`PPCA`.

    Tipping & Bishop's closed form from the eigen-decomposition of the sample covariance
    ``S = (1/N) Σ (x−x̄)(x−x̄)ᵀ`` with eigenvalues ``λ₁ ≥ … ≥ λ_D``:
    ``σ² = Σ_{j>q} λ_j / (D − q)`` and ``W = U_q (Λ_q − σ² I)^{1/2}``. The eigenpairs come from
    the SVD of the centred ``N×D`` data (never a ``D×D`` matrix), so ``D`` in the thousands
    is cheap. ``σ²`` is floored at ``sigma2_floor · tr(S)/D``. Used on ``N_ref`` in §4.2
    ("PPCA is applied to N_ref"). Requires ``N ≥ 2``, ``0 ≤ q ≤ N − 1`` and ``q < D``.
    """
    if not torch.is_tensor(points) or points.ndim < 2:
        raise ValueError("points must be a (..., N, D) tensor")
    if not points.is_floating_point():
        points = points.to(torch.get_default_dtype())
    n, d = points.shape[-2:]
    q = n_components
    if isinstance(q, bool) or int(q) != q:
        raise ValueError(f"n_components must be an integer, got {q!r}")
    q = int(q)
    if n < 2:
        raise ValueError(f"PPCA needs at least 2 points, got {n}")
    if not 0 <= q <= n - 1 or q >= d:
        raise ValueError(f"n_components must satisfy 0 <= q <= N-1 = {n - 1} and q < D = {d}, got {q}")
    if not sigma2_floor > 0:
        raise ValueError(f"sigma2_floor must be positive, got {sigma2_floor}")
    mean = points.mean(-2)
    xc = points - mean[..., None, :]
    _, sv, vh = torch.linalg.svd(xc, full_matrices=False)           # sv: (..., min(N, D))
    lam = sv ** 2 / n                                                # non-zero eigenvalues of S
    total = lam.sum(-1)                                              # tr(S)
    if bool((total <= 0).any()):
        raise ValueError("the points are all identical: PPCA is undefined (zero variance)")
    sigma2 = lam[..., q:].sum(-1) / (d - q)
    sigma2 = torch.maximum(sigma2, sigma2_floor * total / d)
    scale = (lam[..., :q] - sigma2[..., None]).clamp_min(0.0).sqrt()
    w = vh[..., :q, :].transpose(-1, -2) * scale[..., None, :]
    return PPCA(mean, w, sigma2)


def _batched(z: torch.Tensor, g: torch.Tensor, ref: torch.Tensor):
    """Check shapes; return ``z`` as ``(..., Z, D)`` and whether it was one point per batch."""
    for name, t in (("z", z), ("g", g), ("ref", ref)):
        if not torch.is_tensor(t):
            raise TypeError(f"{name} must be a tensor")
    if ref.ndim < 2:
        raise ValueError(f"ref must be (..., K, D), got shape {tuple(ref.shape)}")
    batch, d = ref.shape[:-2], ref.shape[-1]
    if tuple(g.shape) != tuple(batch) + (d,):
        raise ValueError(f"g must have shape {tuple(batch) + (d,)} to match ref {tuple(ref.shape)}, "
                         f"got {tuple(g.shape)}")
    if tuple(z.shape) == tuple(batch) + (d,):
        return z[..., None, :], True
    if z.ndim == ref.ndim and tuple(z.shape[:-2]) == tuple(batch) and z.shape[-1] == d:
        return z, False
    raise ValueError(f"z must have shape {tuple(batch) + ('Z', d)} or {tuple(batch) + (d,)} to match "
                     f"ref {tuple(ref.shape)}, got {tuple(z.shape)}")


def _promote(*ts: torch.Tensor) -> list[torch.Tensor]:
    floats = [t.dtype for t in ts if t.is_floating_point()]
    dtype = functools.reduce(torch.promote_types, floats) if floats else torch.get_default_dtype()
    return [t.to(dtype) for t in ts]


def ppca_delta_loglik(z: torch.Tensor, g: torch.Tensor, ref: torch.Tensor, *,
                      n_components: int = DEFAULT_PPCA_COMPONENTS,
                      sigma2_floor: float = DEFAULT_SIGMA2_FLOOR) -> torch.Tensor:
    """``ΔL(z, g) = L(z) − L(g)`` under PPCA of ``ref`` with its mean moved to ``g`` (§4.2, Fig. 4).

    "PPCA is applied to N_ref … We correct this small offset by shifting the plane to pass
    through g; with PPCA this is achieved by moving the mean of the high-dimensional Gaussian
    to g." With the mean at ``g`` the normalising constants cancel, so
    ``ΔL(z, g) = −½ (z − g)ᵀ C⁻¹ (z − g) ≤ 0`` exactly, evaluated with the Woodbury identity
    (see :class:`PPCA`). Shapes: ``z (..., Z, D)`` or ``(..., D)``, ``g (..., D)``,
    ``ref (..., K, D)`` → ``(..., Z)`` (or ``(...)``). Defaults: :data:`DEFAULT_PPCA_COMPONENTS`,
    :data:`DEFAULT_SIGMA2_FLOOR`.
    """
    z, single = _batched(z, g, ref)
    z, g, ref = _promote(z, g, ref)
    model = ppca_fit(ref, n_components, sigma2_floor=sigma2_floor)
    out = -0.5 * model.mahalanobis(z, center=g)
    out = out.clamp_max(0.0)
    return out[..., 0] if single else out


def angular_consistency(z: torch.Tensor, g: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``Ω(z, g) = (1/k) Σ_i ⟨x_i − z, x_i − g⟩ / (‖x_i − z‖ ‖x_i − g‖)`` (Eq. 3) → ``(..., Z)``.

    ``x_i`` are the ``k`` reference points ``N_ref`` (``ref``, ``(..., k, D)``); ``Ω ≤ 1`` with
    equality when every reference point is seen from ``z`` in the same direction as from
    ``g`` (``Ω(g, g) = 1``); points far from the neighbourhood see all references in a
    narrow cone around one direction and score lower. A reference point equal to ``g`` makes
    Ω undefined (``ValueError``: leave ``g`` out of ``N_ref``); a term whose ``x_i`` coincides
    with ``z`` (up to rounding) contributes 0. Shapes as in :func:`ppca_delta_loglik`.
    """
    z, single = _batched(z, g, ref)
    z, g, ref = _promote(z, g, ref)
    x = ref - g[..., None, :]                                   # x_i − g, (..., k, D)
    zc = z - g[..., None, :]                                     # z − g,   (..., Z, D)
    xx = (x * x).sum(-1)                                         # (..., k)
    if bool((xx == 0).any()):
        raise ValueError("a reference point equals g: Ω is undefined; leave g out of N_ref")
    zz = (zc * zc).sum(-1)                                       # (..., Z)
    zx = zc @ x.transpose(-1, -2)                                # (..., Z, k)
    num = xx[..., None, :] - zx                                  # ⟨x_i − z, x_i − g⟩
    dz2 = (xx[..., None, :] + zz[..., :, None] - 2.0 * zx).clamp_min(0.0)   # ‖x_i − z‖²
    eps = torch.finfo(dz2.dtype).eps
    degenerate = dz2 <= 16.0 * eps * (xx[..., None, :] + zz[..., :, None])
    cos = num / (dz2.sqrt() * xx.sqrt()[..., None, :]).clamp_min(torch.finfo(dz2.dtype).tiny)
    cos = torch.where(degenerate, torch.zeros_like(cos), cos.clamp(-1.0, 1.0))
    out = cos.mean(-1)
    return out[..., 0] if single else out
