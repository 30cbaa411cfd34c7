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
  projection after every step, best iterate kept: the cheap first-order baseline, on the
  attacks' one projected loop (:func:`.projected.projected_descent`).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from .box import project
from .lbfgsb import ValueAndGrad, minimize_box
from .projected import Iterate, projected_descent

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
    """Projected Adam (β = 0.9, 0.999) with a cosine-decayed step; keeps each pair's best iterate.

    Runs on :func:`.projected.projected_descent` (the attacks' one projected loop) with the
    gradients ``value_and_grad`` supplies. Half-precision problems iterate in float32, rounded to
    their own dtype after every step, so the network sees what the caller's dtype can hold.
    """
    B = x0.shape[0]
    work = torch.float32 if x0.dtype in (torch.float16, torch.bfloat16) else x0.dtype
    if step_size is None:
        lr0 = 0.1 * ((hi - lo).to(work) / 2).reshape(B, -1).amax(1)
    else:
        lr0 = torch.as_tensor(step_size, dtype=work, device=x0.device).expand(B)
    ids = torch.arange(B, device=x0.device)
    lo_w, hi_w = lo.to(work), hi.to(work)

    def evaluate(v):
        x = v[0].detach()
        f, g = value_and_grad(x.to(x0.dtype), ids)
        f = f.detach().reshape(B).to(work)
        none = torch.zeros(B, dtype=torch.bool, device=x0.device)
        return Iterate(loss=None, success=none, rank=f, output=x, grads=[g.detach().to(work)])

    def box(v):
        v[0].copy_(project(v[0], lo_w, hi_w).to(x0.dtype).to(work))

    res = projected_descent(evaluate, [project(x0.detach(), lo, hi).to(work)], project=box, steps=steps, lr=lr0,
                            method="adam", eps=1e-12, schedule="cosine", progress=progress, desc=desc)
    out = project(res.output.to(x0.dtype), lo, hi)
    n = torch.full((B,), steps, dtype=torch.long, device=x0.device)
    return out, {"loss": res.rank, "n_iter": n, "n_evals": n + 1}
