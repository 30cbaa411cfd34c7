"""A batched L-BFGS-B: limited-memory quasi-Newton for box constraints, many problems at once.

Sabour et al. (2016, §3) solve Eq. 1–2, ``min ||φ_k(I) − φ_k(I_g)||²`` s.t. ``I`` in the box
``[max(0, I_s − ε), min(1, I_s + ε)]``, with L-BFGS-B, one pair at a time. :func:`minimize_box`
solves ``B`` such box-constrained problems *at once*, so that every model evaluation is one
batched forward/backward pass, and drops the pairs that have converged from later evaluations.

Each iteration is L-BFGS-B's (Byrd, Lu, Nocedal & Zhu 1995), per pair:

* the compact limited-memory Hessian ``B = θI − W M Wᵀ`` from the last ``history`` pairs
  ``s = x⁺ − x``, ``y = g⁺ − g`` (Byrd, Nocedal & Schnabel 1994; a pair is stored only when
  ``sᵀy > ε_mach·yᵀy``), :func:`_compact`;
* the **generalized Cauchy point** ``x_c``: the first minimiser of the quadratic model along
  the projected steepest-descent path, which fixes the variables whose bounds come first
  (:func:`_cauchy_point`; the paper's breakpoint loop is unrolled into prefix sums so that all
  pairs and breakpoints are handled by a few tensor operations);
* **subspace minimisation** of the model over the variables free at ``x_c``, by the direct
  primal method with Sherman–Morrison–Woodbury (one 2m×2m solve per pair), the result
  projected onto the box as in L-BFGS-B 3.0 (Morales & Nocedal 2011), :func:`_subspace_step`;
* a **line search** along ``d = x̄ − x`` from the unit step (``x̄`` is feasible, so every trial
  is): backtracking with safeguarded quadratic interpolation until the Armijo condition
  ``f(x + αd) ≤ f(x) + c₁ α gᵀd`` holds — scipy's Fortran code uses Moré–Thuente's search
  (also starting at 1, and accepting it almost always) here. After ``max_ls`` failed trials
  the memory is discarded and the pair restarts from steepest descent; a failure without
  memory stops the pair (L-BFGS-B's "abnormal termination in line search").

Stopping per pair follows scipy's L-BFGS-B: the projected gradient ``||P(x − g) − x||_∞ ≤ gtol``
(``pgtol``), the relative decrease ``(f_k − f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) ≤ ftol``
(``factr · ε_mach``), or ``max_iter`` iterations.

The line search is *asynchronous*: every round evaluates the current trial point of every
unfinished pair in one call; a pair whose trial fails the Armijo test simply proposes a shorter
step in the next round, together with the others' next iterations. Iterates and trial points
always lie in ``[lo, hi]``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = ["minimize_box"]

ValueAndGrad = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_C1 = 1e-4  # Armijo constant


def _project(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(x, hi), lo)


class _State:
    """The unfinished pairs' solver state, all tensors with the same leading (pair) axis."""

    fields = ("ids", "x", "f", "g", "d", "gtd", "alpha", "trial", "lo", "hi", "boxed", "ls",
              "n_iter", "n_evals", "W", "SS", "SY", "YY", "stamp")

    def __init__(self, **kw):
        for name in self.fields:
            setattr(self, name, kw[name])

    def keep(self, mask: torch.Tensor) -> None:
        for name in self.fields:
            setattr(self, name, getattr(self, name)[mask])


def _rows_dot(W: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``W v`` for ``W`` [k, r, n] and ``v`` [k, n] (or [k, j, n] → [k, j, r]), as a row-times-matrix
    product: ``bmm(W, v[..., None])`` takes a slow matrix–vector path on the CPU (≈ 5× slower)."""
    out = torch.bmm(v.unsqueeze(1) if v.dim() == 2 else v, W.transpose(1, 2))
    return out.squeeze(1) if v.dim() == 2 else out


def _combine(W: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``Wᵀ u`` for ``W`` [k, r, n] and ``u`` [k, r] → [k, n] (the rows of ``W`` combined)."""
    return torch.bmm(u.unsqueeze(1), W).squeeze(1)


class _Compact(NamedTuple):
    """The compact L-BFGS Hessian ``B = θI − Rᵀ M R`` of every pair.

    Byrd, Nocedal & Schnabel (1994, Eq. 3.5) write ``B = θI − W M Wᵀ`` with ``W = [Y θS]`` and
    ``M⁻¹ = [[−D, Lᵀ], [L, θSᵀS]]``. Here the memory rows ``R = [S; Y]`` are used as stored (no
    copy of the large ``n``-wide arrays) and the reordering and ``θ`` go into the small matrix:
    ``M⁻¹ = K = [[SᵀS/θ, L/θ], [Lᵀ/θ, −D]]`` in ``R``'s order — the same ``B``.
    """

    has: torch.Tensor    # [k] the pair has curvature pairs in memory
    theta: torch.Tensor  # [k] θ = yᵀy / sᵀy of the newest pair (1 without memory), float64
    W: torch.Tensor      # [k, 2m, n] the rows R = [S; Y] (empty slots: zero rows)
    K: torch.Tensor      # [k, 2m, 2m] M⁻¹, float64 (empty slots: identity)
    M: torch.Tensor      # [k, 2m, 2m] M, float64


def _compact(st: _State, m: int) -> _Compact:
    """:class:`_Compact` from the memory. ``L`` is the strictly lower triangle of ``SᵀY`` in time
    order (``L_ij = s_iᵀy_j`` for ``s_i`` newer than ``y_j``; slots are reused, so "lower"
    follows the stamps) and ``D`` its diagonal."""
    valid = st.stamp >= 0                                           # [k, m]
    k, dev = valid.shape[0], st.W.device
    rows = torch.arange(k, device=dev)
    newest = st.stamp.argmax(1)
    has = valid.any(1)
    sy_new = st.SY[rows, newest, newest].double()
    yy_new = st.YY[rows, newest, newest].double()
    theta = torch.where(has, yy_new / torch.where(has, sy_new, torch.ones_like(sy_new)),
                        torch.ones_like(sy_new))
    both = valid[:, :, None] & valid[:, None, :]
    later = st.stamp[:, :, None] > st.stamp[:, None, :]
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    SY, SS = st.SY.double(), st.SS.double()
    L = torch.where(both & later, SY, zero)
    D = torch.diagonal(SY, dim1=1, dim2=2) * valid
    th = theta[:, None, None]
    eye = torch.diag_embed((~valid).double())                     # empty slots: identity
    K = torch.cat([torch.cat([torch.where(both, SS, zero) / th + eye, L / th], 2),
                   torch.cat([L.transpose(1, 2) / th, -torch.diag_embed(D) + eye], 2)], 1)
    return _Compact(has, theta, st.W, K, torch.linalg.inv(K))


def _cauchy_point(x: torch.Tensor, g: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                  B: _Compact, prefix: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The generalized Cauchy point of every pair: ``(x_c, c = Wᵀ(x_c − x), free)``.

    Algorithm CP of Byrd, Lu, Nocedal & Zhu (1995, §4): the first local minimiser of the
    quadratic model ``gᵀ(z − x) + ½(z − x)ᵀB(z − x)`` along the projected steepest-descent path
    ``P(x − t g)``; the variables whose breakpoints ``t_i`` come before it are fixed at their
    bounds, the others move by ``−t g_i``. ``free`` marks the variables strictly inside the box
    at ``x_c`` (L-BFGS-B's free set). The walk over the sorted breakpoints is vectorised
    (:func:`_breakpoint_walk`); it looks at the ``prefix`` earliest breakpoints first, then at
    ``8 · prefix`` and at all of them only for the pairs that passed every breakpoint seen —
    the model's minimum usually comes after a few dozen or hundred of the thousands.
    """
    k, n = x.shape
    bound = torch.where(g < 0, hi, lo)                              # the bound −g points to
    t = (x - bound) / g                                             # g = 0: +inf, or nan at lo
    moving = t > 0                                                  # not pushed out of the box
    d = torch.where(moving, -g, torch.zeros_like(g))
    t = torch.where(moving, t, torch.full_like(x, float("inf")))
    p0 = _rows_dot(B.W, d)                                          # Wᵀd, [k, 2m]
    f1_0 = -(d.double() * d.double()).sum(1)
    Mp0 = torch.bmm(B.M, p0.double().unsqueeze(2)).squeeze(2)
    f2_0 = -B.theta * f1_0 - (p0.double() * Mp0).sum(1)

    fixed = torch.zeros_like(x, dtype=torch.bool)
    rows = torch.arange(k, device=x.device)
    walk = None
    for size in sorted({min(prefix, n), min(8 * prefix, n), n}):
        pick = (lambda a: a) if walk is None else (lambda a: a[rows])  # noqa: E731 (no copies at first)
        ts, order = torch.topk(pick(t), size, dim=1, largest=False, sorted=True)
        part = _breakpoint_walk(ts, order, pick(x), pick(g), pick(lo), pick(hi), _Compact(*map(pick, B)),
                                pick(p0), pick(f1_0), pick(f2_0))
        walk = part if walk is None else tuple(w.index_put((rows,), v) for w, v in zip(walk, part))
        passed = torch.arange(size, device=x.device)[None, :] < part[0][:, None]
        fixed[rows] = torch.zeros_like(fixed[rows]).scatter(1, order, passed)
        more = part[0] == size                                      # passed every breakpoint seen
        if size == n or not bool(more.any()):
            break
        rows = rows[more]
    J, f1J, f2J, pJ, cJ, t_old = walk
    dt_min = torch.where(f2J > 0, (-f1J / torch.where(f2J > 0, f2J, torch.ones_like(f2J))).clamp_min(0),
                         torch.zeros_like(f2J)).to(x.dtype)
    xc = torch.where(fixed, bound, x + (t_old + dt_min)[:, None] * d)
    xc = _project(xc, lo, hi)
    c = cJ + dt_min[:, None] * pJ
    return xc, c, (xc > lo) & (xc < hi)


def _breakpoint_walk(ts, order, x, g, lo, hi, B: _Compact, p0, f1_0, f2_0):
    """Algorithm CP's loop over the sorted breakpoints ``ts`` (variables ``order``), unrolled.

    After passing breakpoint ``b`` (Byrd et al. 1995, Eqs. 4.9–4.11, with ``w_b`` row ``b`` of
    ``W`` and ``z_b = bound_b − x_b``): ``c ← c + Δt p``, ``f′ ← f′ + Δt f″ + g_b² + θ g_b z_b −
    g_b w_bᵀMc``, ``f″ ← f″ − θ g_b² − 2 g_b w_bᵀMp − g_b² w_bᵀMw_b``, ``p ← p + g_b w_b``. Every
    quantity is a prefix sum over the breakpoints, so all of them come from a few cumulative
    sums; the walk stops before the first breakpoint ``j`` with ``−f′/f″ < Δt_j``. Returns ``J``
    (breakpoints passed) and ``f′, f″, p, c, t`` after them.
    """
    k, L = ts.shape
    dtype = x.dtype
    finite = torch.isfinite(ts)
    gb = g.gather(1, order)
    zb = torch.where(gb < 0, hi.gather(1, order), lo.gather(1, order)) - x.gather(1, order)
    zb = torch.where(finite, zb, torch.zeros_like(zb))
    two_m = B.W.shape[1]
    # [k, L, 2m]; gathered along W's contiguous rows, then transposed (2–4× faster than gathering Wᵀ)
    wb = B.W.gather(2, order.unsqueeze(1).expand(k, two_m, L)).transpose(1, 2)
    Mwb = torch.matmul(wb, B.M.to(dtype))                           # (M w_b)ᵀ, M symmetric
    q = gb.unsqueeze(2) * wb
    P = p0.unsqueeze(1) + q.cumsum(1)                               # p after breakpoint j
    P_prev = P - q
    tz = torch.where(finite, ts, torch.zeros_like(ts))
    dt = torch.diff(tz, dim=1, prepend=torch.zeros(k, 1, dtype=dtype, device=x.device))
    dt = torch.where(finite, dt, torch.zeros_like(dt))
    C = (dt.unsqueeze(2) * P_prev).cumsum(1)                        # c after breakpoint j
    gb64, theta = gb.double(), B.theta[:, None]
    a = (theta * gb64 ** 2 + 2 * gb64 * (Mwb * P_prev).sum(2).double()
         + gb64 ** 2 * (Mwb * wb).sum(2).double())
    f2 = torch.maximum(f2_0[:, None] - a.cumsum(1), torch.finfo(dtype).eps * f2_0[:, None])
    f2_prev = torch.cat([f2_0[:, None], f2[:, :-1]], 1)
    e = (dt.double() * f2_prev + gb64 ** 2 + theta * gb64 * zb.double()
         - gb64 * (Mwb * C).sum(2).double())
    f1 = f1_0[:, None] + e.cumsum(1)
    f1_prev = torch.cat([f1_0[:, None], f1[:, :-1]], 1)
    go_on = finite & (-f1_prev >= dt.double() * f2_prev)           # Δt_min ≥ Δt: pass breakpoint j
    J = go_on.long().cumprod(1).sum(1)
    rows = torch.arange(k, device=x.device)
    last = (J - 1).clamp_min(0)
    passed = J > 0
    return (J,
            torch.where(passed, f1[rows, last], f1_0),
            torch.where(passed, f2[rows, last], f2_0),
            torch.where(passed[:, None], P[rows, last], p0),
            torch.where(passed[:, None], C[rows, last], torch.zeros_like(p0)),
            torch.where(passed, tz[rows, last], torch.zeros_like(tz[:, 0])))


def _subspace_step(x: torch.Tensor, g: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                   xc: torch.Tensor, c: torch.Tensor, free: torch.Tensor, B: _Compact) -> torch.Tensor:
    """``x̄``: the quadratic model minimised over the free variables from the Cauchy point.

    Direct primal method of Byrd et al. (1995, §5.1): ``d̂ = −[B_FF]⁻¹ r_c`` with the reduced
    gradient ``r_c = [g + θ(x_c − x) − W M c]_F`` and, by Sherman–Morrison–Woodbury,
    ``[B_FF]⁻¹ = I/θ + W_F (K − W_Fᵀ W_F / θ)⁻¹ W_Fᵀ / θ²`` (one 2m×2m solve per pair). As in
    L-BFGS-B 3.0 (Morales & Nocedal 2011) ``x_c + d̂`` is projected onto the box; where that is
    not a descent direction from ``x``, the step is truncated at the box instead.
    """
    dtype = x.dtype
    theta = B.theta[:, None]
    mask = free.to(dtype)
    hF = (g + theta.to(dtype) * (xc - x)) * mask                   # h_F, with r_c = [h − W M c]_F
    GF = torch.bmm(B.W * mask[:, None, :], B.W.transpose(1, 2)).double()  # W_Fᵀ W_F
    WFh = _rows_dot(B.W, hF).double()                               # W_Fᵀ h
    Mc = torch.bmm(B.M, c.double().unsqueeze(2)).squeeze(2)
    v = WFh - torch.bmm(GF, Mc.unsqueeze(2)).squeeze(2)             # W_Fᵀ r_c
    u = torch.linalg.solve(B.K - GF / theta[:, :, None], v)
    # d̂ = −(r_c + W_F u / θ) / θ = −(h_F − W_Fᵀ(M c − u / θ)) / θ
    dhat = -(hF - _combine(B.W, (Mc - u / theta).to(dtype)) * mask) / theta.to(dtype)
    xbar = _project(xc + dhat, lo, hi)
    descent = ((xbar - x) * g).sum(1) < 0
    if not bool(descent.all()):
        room = torch.where(dhat > 0, (hi - xc) / dhat, torch.where(dhat < 0, (lo - xc) / dhat,
                                                                      torch.full_like(dhat, float("inf"))))
        alpha = room.amin(1).clamp(0, 1)
        xbar = torch.where(descent[:, None], xbar, _project(xc + alpha[:, None] * dhat, lo, hi))
    ok = torch.isfinite(xbar).all(1) & B.has
    return torch.where(ok[:, None], xbar, xc)


def _update_and_direction(st: _State, m: int, clock: int, need: torch.Tensor, upd: torch.Tensor,
                          s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor,
                          yy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Store the new pairs ``(s, y)`` of ``upd`` and return the directions ``d``, ``gᵀd``.

    ``d = x̄ − x`` with ``x̄`` L-BFGS-B's: the generalized Cauchy point (:func:`_cauchy_point`),
    then subspace minimisation over its free variables (:func:`_subspace_step`; skipped without
    memory, as L-BFGS-B does). One batched product ``[S Y]ᵀ [s y]`` with the old memory gives the
    new entries of ``SᵀS``, ``SᵀY`` and ``YᵀY``. A pair in ``need`` whose direction is
    numerically not one of descent drops its memory and takes projected steepest descent.
    """
    if bool(upd.any()):
        rows = upd.nonzero().squeeze(1)
        # every pair's products with its old memory, then the updating pairs' rows: one pass over W, no copy of it
        q = _rows_dot(st.W, torch.stack([s, y], dim=1))[rows].transpose(1, 2)
        ss_j = q[:, :m, 0]                                          # s_j · s_new
        slot = st.stamp[rows].argmin(1)                             # empty or oldest slot
        r = torch.arange(len(rows), device=rows.device)
        st.W[rows, slot] = s[rows]
        st.W[rows, m + slot] = y[rows]
        st.stamp[rows, slot] = clock
        s_yj = q[:, m:, 0]                                          # s_new · y_j
        sj_y = q[:, :m, 1]                                          # s_j · y_new
        yj_y = q[:, m:, 1]                                          # y_j · y_new
        ss_j[r, slot] = (s[rows] * s[rows]).sum(1)
        s_yj[r, slot] = sy[rows]
        sj_y[r, slot] = sy[rows]
        yj_y[r, slot] = yy[rows]
        st.SS[rows, slot, :] = ss_j
        st.SS[rows, :, slot] = ss_j
        st.SY[rows, slot, :] = s_yj
        st.SY[rows, :, slot] = sj_y
        st.YY[rows, slot, :] = yj_y
        st.YY[rows, :, slot] = yj_y
    d = torch.zeros_like(st.x)
    gtd = torch.zeros_like(st.f)
    if bool(need.any()):
        # computed for every pair (the others' directions are discarded): cheaper than copying their memory out
        B = _compact(st, m)
        xc, c, free = _cauchy_point(st.x, st.g, st.lo, st.hi, B)
        xbar = _subspace_step(st.x, st.g, st.lo, st.hi, xc, c, free, B) if bool(B.has.any()) else xc
        d = torch.where(need[:, None], xbar - st.x, d)
        gtd = torch.where(need, (st.g * d).sum(1), gtd)
    bad = need & ~(gtd < 0)  # numerical trouble: projected steepest descent, memory dropped
    if bool(bad.any()):
        steep = _project(st.x - st.g, st.lo, st.hi) - st.x
        d = torch.where(bad[:, None], steep, d)
        gtd = torch.where(bad, (st.g * steep).sum(1), gtd)
        _forget(st, bad)
    return d, gtd


def _forget(st: _State, mask: torch.Tensor) -> None:
    """Empty the memory of the pairs in ``mask`` (rows zeroed: :class:`_Compact` relies on it)."""
    st.stamp = torch.where(mask[:, None], torch.full_like(st.stamp, -1), st.stamp)
    st.W = torch.where(mask[:, None, None], torch.zeros_like(st.W), st.W)


def minimize_box(
    value_and_grad: ValueAndGrad,
    x0: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    *,
    max_iter: int,
    history: int = 10,
    ftol: float = 1e7 * 2.220446049250313e-16,
    gtol: float = 1e-5,
    max_ls: int = 20,
    progress: bool = False,
    desc: str = "L-BFGS-B (batched)",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Minimise ``B`` independent box-constrained problems ``min f_b(x_b)``, ``lo_b ≤ x_b ≤ hi_b``.

    ``value_and_grad(x, idx)`` receives the points ``x`` (``len(idx)`` × ``x0.shape[1:]``, in
    ``x0``'s dtype and device) of the pairs ``idx`` (a LongTensor of indices into the batch) and
    returns their losses (``[len(idx)]``) and gradients (shape of ``x``). Pairs that have
    converged are no longer passed. Every ``x`` passed, and the result, lie in ``[lo, hi]``.

    Options (defaults as scipy's L-BFGS-B): ``max_iter`` iterations per pair, ``history``
    correction pairs, ``ftol`` relative decrease (scipy's ``factr · ε_mach``), ``gtol`` on the
    projected gradient's ∞-norm, ``max_ls`` trials per line search. The solver computes in
    ``x0``'s dtype (float32 for float16/bfloat16). Returns ``(x, info)`` with ``info`` a dict of
    per-pair tensors: ``loss`` (at ``x``), ``n_iter``, ``n_evals`` and ``converged`` (stopped by
    ``gtol``/``ftol`` rather than ``max_iter`` or a failed line search).
    """
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    if history < 1:
        raise ValueError(f"history must be >= 1, got {history}")
    if x0.dim() < 1 or x0.shape[0] == 0:
        raise ValueError("x0 must have a non-empty leading batch axis")
    shape, io_dtype, dev = x0.shape, x0.dtype, x0.device
    work = torch.float32 if io_dtype in (torch.float16, torch.bfloat16) else io_dtype
    B = shape[0]
    m = history
    lo_io = torch.broadcast_to(lo, shape).to(device=dev, dtype=io_dtype)
    hi_io = torch.broadcast_to(hi, shape).to(device=dev, dtype=io_dtype)
    if bool((lo_io > hi_io).any()):
        raise ValueError("lower bounds must not exceed upper bounds")
    lo_w = lo_io.reshape(B, -1).to(work)
    hi_w = hi_io.reshape(B, -1).to(work)
    n = lo_w.shape[1]
    eps_mach = torch.finfo(work).eps

    def evaluate(xw: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xin = xw.reshape(len(ids), *shape[1:]).to(io_dtype)
        f, g = value_and_grad(xin, ids)
        return f.detach().reshape(len(ids)).to(work), g.detach().reshape(len(ids), n).to(work)

    x = _project(x0.detach().reshape(B, n).to(work), lo_w, hi_w)
    if work != io_dtype:  # iterates are what the caller sees: representable in its dtype
        x = x.to(io_dtype).to(work)
    all_ids = torch.arange(B, device=dev)
    f, g = evaluate(x, all_ids)

    out_x = x.clone()
    out_f = f.clone()
    out_iter = torch.zeros(B, dtype=torch.long, device=dev)
    out_evals = torch.ones(B, dtype=torch.long, device=dev)
    out_conv = torch.zeros(B, dtype=torch.bool, device=dev)

    boxed = torch.isfinite(lo_w).all(1) & torch.isfinite(hi_w).all(1)
    st = _State(
        ids=all_ids, x=x, f=f, g=g, d=torch.zeros_like(x), gtd=torch.zeros_like(f),
        alpha=torch.ones_like(f), trial=x, lo=lo_w, hi=hi_w, boxed=boxed,
        ls=torch.zeros(B, dtype=torch.long, device=dev),
        n_iter=torch.zeros(B, dtype=torch.long, device=dev),
        n_evals=torch.ones(B, dtype=torch.long, device=dev),
        W=torch.zeros(B, 2 * m, n, dtype=work, device=dev),
        SY=torch.zeros(B, m, m, dtype=work, device=dev),
        SS=torch.zeros(B, m, m, dtype=work, device=dev),
        YY=torch.zeros(B, m, m, dtype=work, device=dev),
        stamp=torch.full((B, m), -1, dtype=torch.long, device=dev),
    )

    def finish(done: torch.Tensor, converged: torch.Tensor) -> None:
        if not bool(done.any()):
            return
        ids = st.ids[done]
        out_x[ids] = st.x[done]
        out_f[ids] = st.f[done]
        out_iter[ids] = st.n_iter[done]
        out_evals[ids] = st.n_evals[done]
        out_conv[ids] = converged[done]
        st.keep(~done)

    def propose(need, first, upd, s, y, sy, yy, clock) -> None:
        """Store new curvature pairs; new direction and first trial step for ``need``."""
        if not (bool(need.any()) or bool(upd.any())):
            return
        d, gtd = _update_and_direction(st, m, clock, need, upd, s, y, sy, yy)
        st.d = torch.where(need[:, None], d, st.d)
        st.gtd = torch.where(need, gtd, st.gtd)
        # L-BFGS-B's first step: 1 for boxed problems, else 1/||d|| on the first iteration
        dnorm = st.d.norm(dim=1)
        a0 = torch.where(first & ~st.boxed, 1.0 / dnorm.clamp_min(torch.finfo(work).tiny),
                         torch.ones_like(dnorm)).clamp(max=1.0)
        st.alpha = torch.where(need, a0, st.alpha)
        st.ls = torch.where(need, torch.zeros_like(st.ls), st.ls)

    def make_trials() -> None:
        t = _project(st.x + st.alpha[:, None] * st.d, st.lo, st.hi)
        if work != io_dtype:
            t = t.to(io_dtype).to(work)
        st.trial = t

    # iteration 0: converged already?
    pg = (_project(st.x - st.g, st.lo, st.hi) - st.x).abs().amax(1)
    done0 = (pg <= gtol) | (max_iter == 0)
    finish(done0, pg <= gtol)
    if st.ids.numel():
        yes = torch.ones_like(st.f, dtype=torch.bool)
        zero = torch.zeros_like(st.x)
        propose(yes, yes, ~yes, zero, zero, st.f, st.f, 0)
        make_trials()

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max_iter, desc=desc, unit="it", leave=False)
    clock = 0
    try:
        while st.ids.numel():
            clock += 1
            ft, gt = evaluate(st.trial, st.ids)
            st.n_evals += 1
            step = st.trial - st.x
            decrease = (st.g * step).sum(1)
            acc = torch.isfinite(ft) & (ft <= st.f + _C1 * decrease)

            # curvature pairs of accepted steps (stored when sᵀy > ε·yᵀy, as L-BFGS-B does)
            y = gt - st.g
            sy = (step * y).sum(1)
            yy = (y * y).sum(1)
            upd = acc & (sy > eps_mach * yy) & (yy > 0)

            f_old = st.f
            st.x = torch.where(acc[:, None], st.trial, st.x)
            st.f = torch.where(acc, ft, st.f)
            st.g = torch.where(acc[:, None], gt, st.g)
            st.n_iter = st.n_iter + acc.long()

            pg = (_project(st.x - st.g, st.lo, st.hi) - st.x).abs().amax(1)
            scale = torch.maximum(torch.maximum(f_old.abs(), st.f.abs()), torch.ones_like(st.f))
            conv = acc & ((pg <= gtol) | ((f_old - st.f) <= ftol * scale))
            done = conv | (acc & (st.n_iter >= max_iter))

            rej = ~acc
            st.ls = torch.where(rej, st.ls + 1, st.ls)
            fail = rej & (st.ls >= max_ls)
            has_mem = (st.stamp >= 0).any(1)
            restart = fail & has_mem
            done = done | (fail & ~has_mem)
            if bool(restart.any()):
                _forget(st, restart)

            # rejected trials: shorter step by safeguarded quadratic interpolation
            a = st.alpha
            denom = 2.0 * (ft - f_old - st.gtd * a)
            a_q = -st.gtd * a * a / torch.where(denom > 0, denom, torch.ones_like(denom))
            a_q = torch.where(torch.isfinite(a_q) & (denom > 0), a_q, 0.1 * a)
            st.alpha = torch.where(rej, torch.minimum(torch.maximum(a_q, 0.1 * a), 0.5 * a), a)

            finish(done, conv)
            if bar is not None:
                top = int(max(out_iter.max().item(), st.n_iter.max().item() if st.ids.numel() else 0))
                bar.update(top - bar.n)
                bar.set_postfix(active=int(st.ids.numel()))
            if not st.ids.numel():
                break
            keep = ~done
            if not bool(keep.all()):
                acc, restart, upd = acc[keep], restart[keep], upd[keep]
                step, y, sy, yy = step[keep], y[keep], sy[keep], yy[keep]
            propose(acc | restart, restart, upd, step, y, sy, yy, clock)
            make_trials()
    finally:
        if bar is not None:
            bar.close()

    x_out = out_x.to(io_dtype).reshape(shape)
    x_out = _project(x_out, lo_io, hi_io)
    info = {"loss": out_f, "n_iter": out_iter, "n_evals": out_evals, "converged": out_conv}
    return x_out, info
