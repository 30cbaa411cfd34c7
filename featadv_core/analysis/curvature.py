"""Principal directions and curvatures of a classifier's class boundaries (Jetley et al. 2018, Algorithm 1).

For a target class ``c``, Algorithm 1 averages the Hessian of ``g_n = F_c − F_{s_n}`` (``F``
the logits, ``s_n`` the clean prediction of sample ``n``) over points near the boundary between
``s_n`` and ``c``, and takes the eigenvectors of that mean Hessian ``H̄_c``. The settings the
paper leaves out come from the authors' released code (see the chapter's spec):

1. **Samples**: ``n_samples`` random training images (a fresh permutation per class; the
   paper's 100), minus those already predicted ``c``.
2. **Boundary points**: a *targeted* DeepFool to ``c`` (5 iterations, overshoot 0.05;
   failures dropped), then a step back to the source side, ``z_n = x_n + 0.8·r̂_n``
   (:func:`boundary_points`).
3. **Curvature** is a *central finite difference of gradients* with a deliberately large step,
   ``H̄_c v ≈ ‖v‖ · mean_n [∇g_n(z_n + h u) − ∇g_n(z_n − h u)] / (2h)``, ``u = v/‖v‖``
   (:func:`mean_hessian_product`), with ``h = √D · range(i) / 512 · cdiff`` and cdiff = 10
   (:func:`fd_step`: about 2 % of the data range per pixel). On the zoo's piecewise-linear
   networks the exact Hessian is zero almost everywhere, so this step *defines* the
   quantity; it is the authors' and we keep it.
4. **Eigenvectors**: the operator is odd but not linear in ``v`` (finite ``h``), so its matrix
   depends on how it is probed. We probe it in a seeded random *dense* orthonormal basis (as
   Lanczos vectors are dense; the pixel basis would move one pixel by more than its range),
   symmetrise, and report the asymmetry ``‖T − Tᵀ‖_F / ‖T‖_F``.

**Sign convention**: positive eigenvalues are directions along which ``F_c − F_s`` is convex,
so moving either way pushes into ``c`` (the paper's text and Fig. 1). The released code
differentiates ``F_s − F_c`` instead; a test on a quadratic model pins ours.

Two ways to get the spectrum (:func:`principal_curvatures`): ``method="full"`` (``D``
operator applications and a dense ``eigh``: the paper's full spectrum) or ``method="topk"``
(a randomised block Krylov method with a Rayleigh–Ritz step, for the ``k`` most positive and
``k`` most negative directions at a fraction of the cost). Dense algebra is ``torch.linalg``'s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import features
from ..attacks.deepfool import deepfool
from ..labels import predict_labels

__all__ = ["Curvatures", "BoundaryPoints", "fd_step", "boundary_points", "mean_hessian_product",
           "curvature_spectrum", "principal_curvatures", "random_orthonormal"]

CDIFF = 10.0       # the authors' finite-difference multiplier
STEPBACK = 0.8     # z = x + 0.8 r̂: the authors' step back to the source side


@dataclass(frozen=True)
class BoundaryPoints:
    """Points near class ``target``'s boundary: ``points`` (M×C×H×W), their clean predictions
    ``sources`` (M), the rows of the input they came from (``index``), and how many inputs were
    attempted (those not already predicted ``target``)."""

    points: torch.Tensor
    sources: torch.Tensor
    index: torch.Tensor
    target: int
    attempted: int

    @property
    def success_rate(self) -> float:
        return len(self.index) / self.attempted if self.attempted else float("nan")


@dataclass(frozen=True)
class Curvatures:
    """Algorithm 1's output for one target class.

    ``values`` are eigenvalues of the symmetrised mean Hessian in descending order (paper sign:
    positive = pushes into ``target``), ``vectors`` (D×m) the matching orthonormal
    eigenvectors. ``complete`` when ``m = D`` (the full build); the top-k method keeps the
    ``k`` most positive and ``k`` most negative only. ``asymmetry`` is ``‖T − Tᵀ‖_F / ‖T‖_F``
    of the probed operator matrix; ``n_points`` the boundary points averaged over, of
    ``attempted`` samples; ``h`` the finite-difference step.
    """

    target: int
    values: torch.Tensor
    vectors: torch.Tensor
    method: str
    h: float
    n_points: int
    attempted: int
    asymmetry: float

    @property
    def dim(self) -> int:
        return self.vectors.shape[0]

    @property
    def complete(self) -> bool:
        return self.vectors.shape[1] == self.vectors.shape[0]

    @property
    def success_rate(self) -> float:
        return self.n_points / self.attempted if self.attempted else float("nan")


def random_orthonormal(dim: int, k: int, *, seed: int, dtype: torch.dtype = torch.float64,
                       exclude: torch.Tensor | None = None) -> torch.Tensor:
    """``dim×k`` random orthonormal columns (QR of a seeded Gaussian), orthogonal to ``exclude``'s columns."""
    m = 0 if exclude is None else exclude.shape[1]
    if not 0 <= k <= dim - m:
        raise ValueError(f"cannot draw {k} orthonormal directions in a {dim}-dimensional space"
                         + (f" orthogonal to {m} others" if m else ""))
    g = torch.randn(dim, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64, device="cpu")
    if exclude is not None and m:
        e = exclude.to(torch.float64).cpu()
        for _ in range(2):  # twice is enough (Kahan)
            g = g - e @ (e.T @ g)
    return torch.linalg.qr(g).Q.to(dtype)


def fd_step(x_train: torch.Tensor, *, mean: torch.Tensor | None = None, cdiff: float = CDIFF,
            batch_size: int = 4096) -> float:
    """The authors' finite-difference step ``h = √D · (max(i) − min(i)) / 512 · cdiff``.

    ``i = x − mean`` over the whole training set (``mean`` defaults to its per-pixel mean image);
    ``D`` is the input dimension. Scale-dependent by design: the per-pixel RMS of the step is
    ``range · cdiff / 512``.
    """
    if not cdiff > 0:
        raise ValueError(f"cdiff must be > 0, got {cdiff}")
    if mean is None:
        mean = x_train.double().mean(0)
    lo, hi = math.inf, -math.inf
    for i in range(0, len(x_train), batch_size):
        c = x_train[i:i + batch_size].double() - mean.double()
        lo, hi = min(lo, c.min().item()), max(hi, c.max().item())
    return math.sqrt(x_train[0].numel()) * (hi - lo) / 512 * cdiff


def boundary_points(model: nn.Module, x: torch.Tensor, target: int, *, overshoot: float = 0.05,
                    max_iter: int = 5, stepback: float = STEPBACK) -> BoundaryPoints:
    """Algorithm 1's points near the boundary of ``target``: targeted DeepFool, then ``x + stepback·r̂``.

    Images already predicted ``target`` are skipped, failed DeepFools dropped (the authors'
    code). DeepFool is unconstrained here (``box=None``), as theirs.
    """
    pred = predict_labels(model, x, batch_size=512)
    with torch.no_grad():
        num_classes = model(x[:1].to(features.model_dtype(model, x.dtype))).shape[1]
    if not 0 <= int(target) < num_classes:
        raise ValueError(f"target must be a class in 0..{num_classes - 1}, got {target!r}")
    rows = (pred != target).nonzero().flatten()
    _, res = deepfool(model, x[rows], target=int(target), overshoot=overshoot, max_iter=max_iter, box=None,
                      details=True)
    keep = res.success.nonzero().flatten()
    points = x[rows[keep]] + stepback * res.perturbation[keep]
    return BoundaryPoints(points=points.detach(), sources=pred[rows[keep]], index=rows[keep], target=int(target),
                          attempted=len(rows))


def mean_hessian_product(model: nn.Module, bp: BoundaryPoints, directions: torch.Tensor, *, h: float,
                         batch_size: int = 1024) -> torch.Tensor:
    """``H̄_c v`` for every row ``v`` of ``directions`` (k×D) by central differences of gradients.

    ``H̄_c v = ‖v‖ · (1/M) Σ_n [∇g_n(z_n + h u) − ∇g_n(z_n − h u)] / (2h)``, ``u = v / ‖v‖``,
    ``g_n = F_c − F_{s_n}``; exact for quadratic logits at any ``h``. One backward pass serves
    ``batch_size`` (direction, point, sign) triples. Returns k×D in float64.
    """
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}")
    z, s = bp.points, bp.sources
    m, shape = len(z), z.shape[1:]
    dim = z[0].numel()
    if directions.dim() != 2 or directions.shape[1] != dim:
        raise ValueError(f"directions must be k×{dim}, got shape {tuple(directions.shape)}")
    if not m:
        raise ValueError(f"no boundary points for class {bp.target}: the targeted DeepFool found none")
    mdtype = features.model_dtype(model, z.dtype)
    scale = directions.double().norm(dim=1)
    u = (directions.double() / scale.clamp_min(1e-300)[:, None]).to(mdtype)
    zf = z.to(mdtype).flatten(1)
    with torch.no_grad():
        num_classes = model(z[:1].to(mdtype)).shape[1]
    cot_one = (F.one_hot(torch.full_like(s, bp.target), num_classes) - F.one_hot(s, num_classes)).to(mdtype)
    per = max(1, batch_size // (2 * m))  # directions per backward pass
    out = torch.empty(len(u), dim, dtype=torch.float64, device=z.device)
    for j in range(0, len(u), per):
        ub = u[j:j + per]                                      # b×D
        step = (h * ub)[:, None, :]                            # b×1×D
        pts = torch.stack([zf[None] + step, zf[None] - step])  # 2×b×M×D
        with torch.enable_grad():
            xg = pts.reshape(-1, *shape).requires_grad_(True)
            logits = model(xg)
            cot = cot_one.repeat(2 * len(ub), 1)
            (g,) = torch.autograd.grad(logits, xg, grad_outputs=cot)
        g = g.reshape(2, len(ub), m, dim).double()
        out[j:j + len(ub)] = (g[0] - g[1]).sum(1) / (2 * h * m)
    out *= scale[:, None]
    return torch.where(scale[:, None] > 0, out, torch.zeros_like(out))


def _apply(model, bp, basis_cols: torch.Tensor, *, h: float, batch_size: int, block: int, progress: bool,
           desc: str) -> torch.Tensor:
    """``H̄`` applied to every column of ``basis_cols`` (D×k), in blocks, → D×k."""
    cols = []
    for j in tqdm(range(0, basis_cols.shape[1], block), desc=desc, disable=not progress, leave=False):
        cols.append(mean_hessian_product(model, bp, basis_cols[:, j:j + block].T, h=h, batch_size=batch_size).T)
    return torch.cat(cols, 1)


def _rayleigh_ritz(basis: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Eigenpairs of the symmetrised ``T = Bᵀ (H̄ B)``, rotated back; descending; and T's asymmetry."""
    t = basis.T @ image
    asym = ((t - t.T).norm() / t.norm().clamp_min(1e-300)).item()
    values, u = torch.linalg.eigh((t + t.T) / 2)
    order = values.argsort(descending=True)
    return values[order], basis @ u[:, order], asym


def curvature_spectrum(model: nn.Module, bp: BoundaryPoints, *, h: float, method: str = "full", k: int = 48,
                       oversample: int = 32, depth: int = 3, seed: int = 0, batch_size: int = 1024, block: int = 32,
                       progress: bool = True) -> Curvatures:
    """Eigenpairs of the mean Hessian ``H̄_c`` at the boundary points ``bp`` (Algorithm 1's EIGS).

    ``method="full"`` probes ``H̄`` in a D×D random orthonormal basis (seeded) and returns all D
    eigenpairs; ``method="topk"`` builds a block Krylov space ``[Ω, H̄Ω, …, H̄^depth Ω]`` from
    ``k + oversample`` random columns and returns the ``k`` most positive and ``k`` most
    negative Ritz pairs. Costs: full ``2·M·D`` gradients; top-k ``2·M·(k + oversample)(2·depth + 1)``.

    The finite-difference operator is not linear, so its matrix depends on the probing vectors:
    on MNIST two full builds in different random bases share ≈ 0.9 of their 16 most curved
    directions, and the defaults here (oversample 32, depth 3) reach ≈ 0.8 of the full build's
    (chapter 4's Algorithm 1 page measures both).
    """
    if method not in ("full", "topk"):
        raise ValueError(f"method must be 'full' or 'topk', got {method!r}")
    if not len(bp.index):
        raise ValueError(f"no boundary points for class {bp.target} (of {bp.attempted} samples the targeted DeepFool "
                         "reached none): attempt more samples or allow more DeepFool iterations")
    dim = bp.points[0].numel()
    dev = bp.points.device
    run = dict(h=h, batch_size=batch_size, block=block, progress=progress)
    if method == "full":
        basis = random_orthonormal(dim, dim, seed=seed).to(dev)
        values, vectors, asym = _rayleigh_ritz(basis, _apply(model, bp, basis, desc=f"H̄ class {bp.target}", **run))
    else:
        b = k + oversample
        if k < 1 or 2 * k > dim or b * (depth + 1) > dim:
            raise ValueError(f"top-k needs 1 ≤ k, 2k ≤ D and (k + oversample)(depth + 1) ≤ D = {dim}; "
                             "use method='full'")
        blocks = [random_orthonormal(dim, b, seed=seed).to(dev)]
        for i in range(depth):
            blocks.append(torch.linalg.qr(_apply(model, bp, blocks[-1], desc=f"Krylov {i + 1} class {bp.target}",
                                                 **run)).Q)
        krylov = torch.linalg.qr(torch.cat(blocks, 1)).Q
        values, vectors, asym = _rayleigh_ritz(krylov, _apply(model, bp, krylov, desc=f"Ritz class {bp.target}",
                                                              **run))
        keep = torch.cat([torch.arange(k), torch.arange(len(values) - k, len(values))]).to(dev)
        values, vectors = values[keep], vectors[:, keep]
    return Curvatures(target=bp.target, values=values.cpu(), vectors=vectors.cpu(), method=method, h=float(h),
                      n_points=len(bp.index), attempted=bp.attempted, asymmetry=asym)


def principal_curvatures(model: nn.Module, x: torch.Tensor, target: int, *, h: float, n_samples: int = 100,
                         seed: int = 0, basis_seed: int | None = None, df_overshoot: float = 0.05,
                         df_max_iter: int = 5, stepback: float = STEPBACK, **spectrum) -> Curvatures:
    """Algorithm 1 for one ``target`` class on the (training) images ``x``: see the module docstring.

    ``n_samples`` random rows of ``x`` (seeded by ``seed`` and the class; the authors' 100) are
    attempted (:func:`boundary_points`), then :func:`curvature_spectrum` (``spectrum``: its
    options) computes the eigenpairs, probing in a random basis seeded by ``basis_seed``
    (default: ``seed``; another value re-probes the same boundary points).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be ≥ 1, got {n_samples}")
    gen = torch.Generator().manual_seed(seed * 1000 + int(target))
    rows = torch.randperm(len(x), generator=gen, device="cpu")[:n_samples].to(x.device)
    bp = boundary_points(model, x[rows], target, overshoot=df_overshoot, max_iter=df_max_iter, stepback=stepback)
    return curvature_spectrum(model, bp, h=h, seed=seed if basis_seed is None else basis_seed, **spectrum)
