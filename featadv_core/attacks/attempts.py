"""Every attempt of Rozsa et al.'s Table 1 for a batch of origins: FGS, FGV, hot/cold and LOTS at once.

Per origin of class ``y``: one FGS and one FGV attempt, nine hot/cold attempts (every other
class hot) and 9 × ``len(layers)`` LOTS attempts (towards the fixed target image of every
other class, at every layer): 47 for LeNet's four layers. All directions of a kind are one
batched backpropagation (origins replicated, one ``grad_outputs`` row each); all attempts then
share one line search, with ``eps_max`` per attempt (sign directions 1, value directions 10 in
pixel units). Success is any label change (Table 1), so the returned ``target`` column only
says which direction was followed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import features
from ..images import check_images
from .directions import gradient_direction, hot_cold_direction, lots_direction
from .line_search import line_search, predict_labels

__all__ = ["KINDS", "all_attempts", "other_classes"]

KINDS = ("fgs", "fgv", "hc", "lots")


def other_classes(y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, classes)``: for each label of ``y``, its row index repeated and the other classes, ascending.

    ``rows`` and ``classes`` have ``len(y) · (num_classes − 1)`` entries, grouped by row.
    """
    all_classes = torch.arange(num_classes, device=y.device).expand(len(y), num_classes)
    keep = all_classes != y[:, None]
    rows = torch.arange(len(y), device=y.device)[:, None].expand(len(y), num_classes)[keep]
    return rows, all_classes[keep]


def all_attempts(
    model: nn.Module,
    x: torch.Tensor,
    x_targets: torch.Tensor,
    *,
    layers: Sequence[str],
    kinds: Sequence[str] = KINDS,
    eps_max_sign: float = 1.0,
    eps_max_value: float = 10.0,
    grid_points: int = 30,
    bisect_steps: int = 10,
    batch_size: int = 1024,
) -> dict[str, torch.Tensor]:
    """All attempts of ``kinds`` on the origins ``x``; ``x_targets[c]`` is LOTS's target image of class ``c``.

    Origins are attacked from their predicted class (count only correctly classified ones in a
    table). Returns columns, one row per attempt, grouped by origin then kind: ``origin``
    (row of ``x``), ``kind`` (index into :data:`KINDS`), ``layer`` (index into ``layers``, −1
    for FGS/FGV/HC), ``target`` (hot class or LOTS target's class, −1 for FGS/FGV), ``y``
    (the origin's class) and the :class:`.line_search.Attempts` fields (``images`` as uint8
    grey levels, to keep large sets small).
    """
    check_images(x)
    check_images(x_targets, "x_targets")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown attack kind(s) {unknown}; valid: {', '.join(KINDS)}")
    n, device = len(x), x.device
    y = predict_labels(model, x, batch_size=batch_size)
    with torch.no_grad():
        num_classes = model(x_targets[:1].to(features.model_dtype(model, x.dtype))).shape[1]
    if "lots" in kinds:
        if len(x_targets) != num_classes:
            raise ValueError(f"x_targets must hold one image per class ({num_classes}), got {len(x_targets)}")
        t_labels = predict_labels(model, x_targets, batch_size=batch_size)
        wrong = (t_labels != torch.arange(num_classes, device=device)).nonzero().flatten().tolist()
        if wrong:
            raise ValueError(f"x_targets[c] must be classified as c; not so for classes {wrong}")
    rows_o, others = other_classes(y, num_classes)

    blocks = []  # (origin rows, kind, layer, target, direction, eps_max)

    def add(rows, kind, layer, target, eta, cap):
        blocks.append((rows, torch.full_like(rows, KINDS.index(kind)), torch.full_like(rows, layer), target, eta,
                       torch.full((len(rows),), cap, dtype=torch.float64, device=device)))

    arange = torch.arange(n, device=device)
    none = torch.full((n,), -1, dtype=torch.long, device=device)
    if "fgs" in kinds or "fgv" in kinds:
        grad = _chunked(lambda s: gradient_direction(model, x[s], y[s], kind="value"), n, batch_size)
        if "fgs" in kinds:
            add(arange, "fgs", -1, none, grad.sign(), eps_max_sign)
        if "fgv" in kinds:
            add(arange, "fgv", -1, none, grad, eps_max_value)
    if "hc" in kinds:
        eta = _chunked(lambda s: hot_cold_direction(model, x[rows_o[s]], y[rows_o[s]], others[s]),
                       len(rows_o), batch_size)
        add(rows_o, "hc", -1, others, eta, eps_max_value)
    if "lots" in kinds:
        for li, layer in enumerate(layers):
            with torch.no_grad():
                f_t = features.forward_to(model, x_targets.to(features.model_dtype(model, x.dtype)), layer)
            eta = _chunked(lambda s: lots_direction(model, x[rows_o[s]], f_t[others[s]], layer=layer),
                           len(rows_o), batch_size)
            add(rows_o, "lots", li, others, eta, eps_max_value)

    origin, kind, layer, target, eta, caps = (torch.cat(c) for c in zip(*blocks))
    order = torch.argsort(origin * len(blocks) + _block_index(blocks), stable=True)
    origin, kind, layer, target, eta, caps = (t[order] for t in (origin, kind, layer, target, eta, caps))
    res = line_search(model, x[origin], eta, y_orig=y[origin], eps_max=caps, grid_points=grid_points,
                      bisect_steps=bisect_steps, batch_size=batch_size)
    out = {"origin": origin, "kind": kind, "layer": layer, "target": target, "y": y[origin]}
    out.update({k: v for k, v in vars(res).items() if k != "images"})
    out["images"] = torch.round(res.images.to(torch.float64) * 255).to(torch.uint8)
    return out


def _chunked(fn, n: int, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(slice(i, i + batch_size)) for i in range(0, n, batch_size)])


def _block_index(blocks) -> torch.Tensor:
    return torch.cat([torch.full_like(b[0], i) for i, b in enumerate(blocks)])
