"""Box-constrained solvers behind the attacks, chosen by name.

All solve ``B`` independent problems ``min f_b(x_b)`` s.t. ``lo_b ≤ x_b ≤ hi_b`` given a batched
``value_and_grad(x, idx) -> (losses[len(idx)], grads)`` (see :func:`.lbfgsb.minimize_box`):

* ``"scipy"`` — the paper's method (Sabour et al. 2016, §3: "we use l-BFGS-b, with the inequality
  (2) expressed as a box constraint"): :func:`scipy.optimize.minimize` with ``L-BFGS-B``, one
  pair at a time, float64 on scipy's side, exact gradients. The faithful, slow reference.
* ``"lbfgsb"`` — :func:`.lbfgsb.minimize_box`: L-BFGS-B's algorithm (Cauchy point, subspace
  minimisation, line search) batched on the input's device, all pairs at once, converged
  pairs dropped.
* ``"pgd"`` — projected Adam with a cosine-decayed step proportional to the box radius,
  projection after every step, best iterate kept: the cheap first-order baseline.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from .box import project
from .lbfgsb import ValueAndGrad, minimize_box

__all__ = ["SOLVERS", "solve"]

SOLVERS = ("scipy", "lbfgsb", "pgd")
_FTOL = 1e7 * 2.220446049250313e-16  # scipy's default factr · machine epsilon
_GTOL = 1e-5


def solve(
    solver: str,
    value_and_grad: ValueAndGrad,
    x0: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    *,
    steps: int,
    history: int = 10,
    ftol: float = _FTOL,
    gtol: float = _GTOL,
    max_ls: int = 20,
    step_size: float | torch.Tensor | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Minimise the batched problem with ``solver`` in :data:`SOLVERS`; returns ``(x, info)``.

    ``steps`` is the iteration budget per pair (scipy's ``maxiter``, :func:`minimize_box`'s
    ``max_iter``, or the number of Adam steps). ``history`` (L-BFGS memory, scipy's ``maxcor``),
    ``ftol``, ``gtol``, ``max_ls`` apply to the quasi-Newton solvers (scipy's defaults);
    ``step_size`` to ``"pgd"`` (default: a tenth of each pair's box radius). ``x`` lies in
    ``[lo, hi]`` with ``x0``'s shape, dtype and device; ``info`` holds per-pair tensors ``loss``,
    ``n_iter`` and ``n_evals``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid solvers: {', '.join(SOLVERS)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    lo = torch.broadcast_to(lo, x0.shape).to(device=x0.device, dtype=x0.dtype)
    hi = torch.broadcast_to(hi, x0.shape).to(device=x0.device, dtype=x0.dtype)
    if solver == "lbfgsb":
        return minimize_box(value_and_grad, x0, lo, hi, max_iter=steps, history=history, ftol=ftol,
                            gtol=gtol, max_ls=max_ls, progress=progress,
                            desc=desc or "L-BFGS-B (batched)")
    if solver == "scipy":
        return _scipy(value_and_grad, x0, lo, hi, steps=steps, history=history, ftol=ftol, gtol=gtol,
                      max_ls=max_ls, progress=progress, desc=desc or "L-BFGS-B (scipy, per pair)")
    return _pgd(value_and_grad, x0, lo, hi, steps=steps, step_size=step_size, progress=progress,
                desc=desc or "projected Adam")


def _single_threaded_blas():
    """Limit BLAS (OpenBLAS/MKL) to one thread if ``threadpoolctl`` is installed.

    L-BFGS-B's BLAS calls are tiny (vectors of ``history`` entries); multi-threaded OpenBLAS
    spends far more time waking and spinning its threads than computing, ≈ 15× the solver's own
    time per iteration on a busy 2-core machine. Without ``threadpoolctl`` nothing changes.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _scipy(value_and_grad, x0, lo, hi, *, steps, history, ftol, gtol, max_ls, progress, desc):
    """scipy's L-BFGS-B, one pair at a time (the paper's optimiser)."""
    import scipy.optimize  # noqa: F401  (load its BLAS before limiting the loaded libraries' threads)

    with _single_threaded_blas():
        return _scipy_pairs(value_and_grad, x0, lo, hi, steps=steps, history=history, ftol=ftol,
                            gtol=gtol, max_ls=max_ls, progress=progress, desc=desc)


def _scipy_pairs(value_and_grad, x0, lo, hi, *, steps, history, ftol, gtol, max_ls, progress, desc):
    from scipy.optimize import minimize

    B = x0.shape[0]
    item_shape = x0.shape[1:]
    out = x0.detach().clone()
    loss = torch.empty(B, dtype=torch.float64)
    n_iter = torch.zeros(B, dtype=torch.long)
    n_evals = torch.zeros(B, dtype=torch.long)
    lo_np = lo.detach().reshape(B, -1).double().cpu().numpy()
    hi_np = hi.detach().reshape(B, -1).double().cpu().numpy()
    start = project(x0.detach(), lo, hi).reshape(B, -1).double().cpu().numpy()
    pairs = range(B)
    if progress:
        from tqdm.auto import tqdm
        pairs = tqdm(pairs, desc=desc, unit="pair", leave=False)
    for i in pairs:
        idx = torch.tensor([i], device=x0.device)

        def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
            xi = torch.from_numpy(z).to(device=x0.device, dtype=x0.dtype).reshape(1, *item_shape)
            f, g = value_and_grad(xi, idx)
            return float(f.reshape(())), g.detach().reshape(-1).double().cpu().numpy()

        res = minimize(fun, start[i], jac=True, method="L-BFGS-B",
                       bounds=list(zip(lo_np[i], hi_np[i])),
                       options={"maxiter": steps, "maxcor": history, "ftol": ftol, "gtol": gtol,
                                "maxls": max_ls})
        out[i] = torch.from_numpy(res.x).to(device=x0.device, dtype=x0.dtype).reshape(item_shape)
        loss[i] = float(res.fun)
        n_iter[i] = int(res.nit)
        n_evals[i] = int(res.nfev)
    out = project(out, lo, hi)  # float64 → dtype rounding is monotone; this is a guard
    dev = x0.device
    return out, {"loss": loss.to(dev), "n_iter": n_iter.to(dev), "n_evals": n_evals.to(dev)}


def _pgd(value_and_grad, x0, lo, hi, *, steps, step_size, progress, desc):
    """Projected Adam (β = 0.9, 0.999) with a cosine-decayed step; keeps each pair's best iterate."""
    B = x0.shape[0]
    work = torch.float32 if x0.dtype in (torch.float16, torch.bfloat16) else x0.dtype
    view = (B,) + (1,) * (x0.dim() - 1)
    if step_size is None:
        radius = ((hi - lo).to(work) / 2).reshape(B, -1).amax(1)
        lr0 = 0.1 * radius
    else:
        lr0 = torch.as_tensor(step_size, dtype=work, device=x0.device).expand(B)
    lr0 = lr0.reshape(view)
    ids = torch.arange(B, device=x0.device)
    x = project(x0.detach(), lo, hi).to(work)
    lo_w, hi_w = lo.to(work), hi.to(work)
    m1 = torch.zeros_like(x)
    m2 = torch.zeros_like(x)
    best_x = x.clone()
    best_f = torch.full((B,), math.inf, dtype=work, device=x0.device)
    b1, b2, tiny = 0.9, 0.999, 1e-12
    it = range(steps + 1)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=desc, unit="it", leave=False)
    for t in it:
        f, g = value_and_grad(x.to(x0.dtype), ids)
        f = f.detach().reshape(B).to(work)
        better = f < best_f
        best_f = torch.where(better, f, best_f)
        best_x = torch.where(better.reshape(view), x, best_x)
        if t == steps:
            break
        g = g.detach().to(work)
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        mhat = m1 / (1 - b1 ** (t + 1))
        vhat = m2 / (1 - b2 ** (t + 1))
        lr = lr0 * 0.5 * (1 + math.cos(math.pi * t / max(steps, 1)))
        x = project(x - lr * mhat / (vhat.sqrt() + tiny), lo_w, hi_w)
        if work != x0.dtype:
            x = x.to(x0.dtype).to(work)
    out = project(best_x.to(x0.dtype), lo, hi)
    n = torch.full((B,), steps, dtype=torch.long, device=x0.device)
    return out, {"loss": best_f, "n_iter": n, "n_evals": n + 1}
