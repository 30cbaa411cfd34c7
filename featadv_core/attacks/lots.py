"""LOTS — layerwise origin-target synthesis (Rozsa, Günther & Boult 2017), single-step and iterative.

Single-step LOTS fixes the direction of Eq. 3 (towards a target's representation at ``layer``)
or Eq. 4 (magnifying / reducing the origin's own) and searches along it on 8-bit images
(:func:`.line_search.line_search`). The iterative "step-and-adjust" variant that the paper
proposes in §5.2 recomputes the direction at every step; we follow the form of the authors'
follow-up (IJCB 2017): a step of one grey level along the L∞-normalised direction, rounded to
the 8-bit grid, until the criterion is met.
"""
from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import features
from ..images import check_images
from .directions import lots_direction, lots_self_direction
from .feature_opt import _check_pair
from .line_search import GREY, Attempts, _norms, apply_direction, line_search, predict_labels, unit_linf

__all__ = ["lots", "lots_self", "lots_iterative", "STOPS"]

STOPS = ("target", "label_change")


def _target_setup(model: nn.Module, x_origin: torch.Tensor, x_target: torch.Tensor, layer: str,
                  stop: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated ``(y_origin, y_target, target_features)``; the origin's class as target raises."""
    _check_pair(x_origin, x_target, "x_target")
    if stop not in STOPS:
        raise ValueError(f"stop must be one of {STOPS}, got {stop!r}")
    if layer not in features.layer_names(model):
        raise ValueError(f"unknown layer {layer!r} for {type(model).__name__}; "
                         f"valid layers: {', '.join(features.layer_names(model))}")
    y_o = predict_labels(model, x_origin, batch_size=batch_size)
    y_t = predict_labels(model, x_target, batch_size=batch_size)
    same = (y_o == y_t).nonzero().flatten()
    if len(same):
        raise ValueError(f"{len(same)} target(s) are classified as their origin's class (first: pair "
                         f"{int(same[0])}, class {int(y_o[same[0]])}); LOTS needs a target of another class")
    mdtype = features.model_dtype(model, x_target.dtype)
    with torch.no_grad():
        feats = torch.cat([features.forward_to(model, x_target[i:i + batch_size].to(mdtype), layer)
                           for i in range(0, len(x_target), batch_size)])
    return y_o, y_t, feats


def lots(
    model: nn.Module,
    x_origin: torch.Tensor,
    x_target: torch.Tensor,
    *,
    layer: str,
    stop: str = "target",
    iterative: bool = False,
    eps_max: float = 10.0,
    grid_points: int = 30,
    bisect_steps: int = 10,
    max_steps: int = 500,
    step: float = 1 / GREY,
    batch_size: int = 1024,
    details: bool = False,
    progress: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Attempts]:
    """LOTS adversarial images of ``x_origin`` towards ``x_target``'s representation at ``layer``.

    Single-step (default): the direction ``J_l(x_o)ᵀ (f_l(x_t) − f_l(x_o))`` (Eq. 3), fixed, and
    the line search of :func:`.line_search` up to ``eps_max`` (pixel units; 10 = 2,550 grey
    levels). ``iterative=True``: :func:`lots_iterative` (``step``, ``max_steps``). ``stop``:
    ``"target"`` — the target's class is reached (Fig. 3, 4) — or ``"label_change"`` — any
    other class (Table 1's success). One target per origin; a target classified as its origin's
    class raises. Returns the images (8-bit grid, [0, 1]; the origin where an attempt failed),
    and with ``details=True`` also the per-attempt :class:`.Attempts`.
    """
    y_o, y_t, feats = _target_setup(model, x_origin, x_target, layer, stop, batch_size)
    target = y_t if stop == "target" else None
    if iterative:
        res = lots_iterative(model, x_origin, feats, layer=layer, y_orig=y_o, target=target, step=step,
                             max_steps=max_steps, batch_size=batch_size, progress=progress)
    else:
        eta = torch.cat([lots_direction(model, x_origin[i:i + batch_size], feats[i:i + batch_size], layer=layer)
                         for i in range(0, len(x_origin), batch_size)])
        res = line_search(model, x_origin, eta, y_orig=y_o, target=target, eps_max=eps_max,
                          grid_points=grid_points, bisect_steps=bisect_steps, batch_size=batch_size)
    return (res.images, res) if details else res.images


def lots_self(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: str,
    sign: int,
    eps: float | None = None,
    eps_max: float = 10.0,
    grid_points: int = 30,
    bisect_steps: int = 10,
    batch_size: int = 1024,
    details: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Attempts]:
    """LOTS on the origin itself (Eq. 4): magnify (``sign=+1``) or reduce (``-1``) ``layer``'s representation.

    With ``eps`` (pixel units) the image at that fixed nominal L∞ (Fig. 1(b, c): 128/255, a
    visualisation; ``success`` then says whether the label changed); without, the smallest
    label-changing scale by the line search (Fig. 1(d, e)).
    """
    check_images(x)
    y = predict_labels(model, x, batch_size=batch_size)
    eta = torch.cat([lots_self_direction(model, x[i:i + batch_size], layer=layer, sign=sign)
                     for i in range(0, len(x), batch_size)])
    if eps is None:
        res = line_search(model, x, eta, y_orig=y, eps_max=eps_max, grid_points=grid_points,
                          bisect_steps=bisect_steps, batch_size=batch_size)
    else:
        d, zero = unit_linf(eta)
        images = apply_direction(x, d, eps)
        labels = predict_labels(model, images, batch_size=batch_size)
        l2, linf = _norms(images, x)
        res = Attempts(images=images, success=labels != y, labels=labels,
                       scale=torch.full((len(x),), float(eps), dtype=torch.float64, device=x.device),
                       steps=torch.zeros(len(x), dtype=torch.long, device=x.device), l2=l2, linf=linf,
                       zero_direction=zero, stalled=torch.zeros(len(x), dtype=torch.bool, device=x.device))
    return (res.images, res) if details else res.images


def lots_iterative(
    model: nn.Module,
    x: torch.Tensor,
    target_features: torch.Tensor,
    *,
    layer: str,
    y_orig: torch.Tensor,
    target: torch.Tensor | None = None,
    step: float = 1 / GREY,
    max_steps: int = 500,
    feature_tolerance: float | None = None,
    batch_size: int = 1024,
    progress: bool = False,
) -> Attempts:
    """Iterative ("step-and-adjust") LOTS: ``x_{k+1} = clip(round(x_k + step · η_k / ‖η_k‖∞))``.

    ``η_k = J_l(x_k)ᵀ (f_t − f_l(x_k))`` (Eq. 3 at the current iterate), so the largest-gradient
    pixel moves by ``step`` (one grey level) and every iterate is a valid 8-bit image. Each
    attempt stops at the first iterate meeting the criterion (``target`` reached, or any change
    from ``y_orig`` when ``target`` is None), or when ``‖f_l(x_k) − f_t‖₂ < feature_tolerance``
    (then ``success`` still reports the criterion), or when it **stalls** — the rounded step leaves
    the iterate unchanged (every pixel that would move is saturated at 0 or 255) or returns it to
    the iterate before (a 2-cycle), so that every later step would repeat one already taken
    (failure, marked in ``stalled``; the stalled iterate is returned) — or after ``max_steps``
    (failure; the last iterate is returned, the origin if the direction vanished at the start).
    """
    check_images(x)
    n = len(x)
    y_orig = torch.as_tensor(y_orig, device=x.device).long()
    tgt = None if target is None else torch.as_tensor(target, device=x.device).long()
    if step * GREY < 0.5:
        raise ValueError(f"step must be at least half a grey level, or no pixel ever moves; got {step!r}")
    cur = apply_direction(x, torch.zeros_like(x, dtype=torch.float64), 0.0)  # the origin on the grid
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    success = torch.zeros_like(done)
    zero = torch.zeros_like(done)
    stalled = torch.zeros_like(done)
    steps = torch.zeros(n, dtype=torch.long, device=x.device)
    prev = cur.clone()  # each attempt's iterate before its current one: a step back to it is a 2-cycle
    labels = predict_labels(model, cur, batch_size=batch_size)

    def meets(lab: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return lab == tgt[idx] if tgt is not None else lab != y_orig[idx]

    for k in tqdm(range(max_steps + 1), desc="iterative LOTS", disable=not progress, leave=False):
        active = (~done).nonzero().flatten()
        ok = meets(labels[active], active)
        success[active[ok]] = True
        done[active[ok]] = True
        active = active[~ok]
        if not len(active) or k == max_steps:
            break
        eta = torch.cat([lots_direction(model, cur[c], target_features[c], layer=layer)
                         for c in active.split(batch_size)])
        d, vanished = unit_linf(eta)
        if k == 0:
            zero[active[vanished]] = True  # no step could be taken at all
        z = vanished
        if feature_tolerance is not None:
            with torch.no_grad():
                f = features.forward_to(model, cur[active].to(features.model_dtype(model, cur.dtype)), layer)
                dist = (f - target_features[active]).flatten(1).norm(dim=1)
            z = z | (dist < feature_tolerance)
        done[active[z]] = True
        move, d = active[~z], d[~z]
        before = cur[move]
        after = apply_direction(before, d, step)
        stuck = (after == before).flatten(1).all(1) | ((steps[move] > 0) & (after == prev[move]).flatten(1).all(1))
        stalled[move[stuck]] = True
        done[move[stuck]] = True
        move, before, after = move[~stuck], before[~stuck], after[~stuck]
        prev[move] = before
        cur[move] = after
        steps[move] += 1
        labels[move] = predict_labels(model, cur[move], batch_size=batch_size)
    l2, linf = _norms(cur, x)
    return Attempts(images=cur, success=success, labels=labels,
                    scale=torch.full((n,), float("nan"), dtype=torch.float64, device=x.device),
                    steps=steps, l2=l2, linf=linf, zero_direction=zero, stalled=stalled)
