"""Source–guide pairs for feature adversaries (Sabour et al. 2016, §3–4) and LOTS targets (Rozsa et al. 2017).

The paper draws random pairs of images from different classes; for the nearest-neighbour
statistics (Table 1) it further asks that "the guide is classified correctly and the source
is classified to a different class". Pairs are index pairs into one split, drawn
deterministically from a seed, with no Python loop over candidates. LOTS uses one fixed
target image per class (:func:`first_correct_per_class`) and, for its figures, a target that
looks like the origin (:func:`nearest_of_class`).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["sample_pairs", "first_correct_per_class", "nearest_of_class", "stratified"]


def sample_pairs(labels: torch.Tensor, n: int, *, seed: int = 0, preds: torch.Tensor | None = None,
                 guide_correct: bool = False, max_tries: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` (source, guide) index pairs whose classes differ.

    ``labels`` are the true labels of the pool. With ``preds`` (the model's predictions on the
    pool) the source's *predicted* class must also differ from the guide's class, and with
    ``guide_correct=True`` the guide must be classified correctly (Table 1's protocol).
    Sources and guides come from the same pool; no (source, guide) pair repeats. Raises
    ``ValueError`` when fewer than ``n`` valid pairs can be found.
    """
    labels = torch.as_tensor(labels).cpu()
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if preds is not None and len(preds) != len(labels):
        raise ValueError(f"preds has {len(preds)} entries but labels has {len(labels)}")
    rng = np.random.default_rng(seed)
    guides_ok = np.ones(len(labels), dtype=bool)
    if guide_correct:
        if preds is None:
            raise ValueError("guide_correct=True needs preds")
        guides_ok = (torch.as_tensor(preds).cpu() == labels).numpy()
    guide_pool = np.flatnonzero(guides_ok)
    if len(guide_pool) == 0:
        raise ValueError("no image qualifies as a guide" + (f": the model classifies none of the {len(labels)} "
                         "images correctly (are its labels and the pool's in the same label space?)"
                         if guide_correct else ""))
    y = labels.numpy()
    p = torch.as_tensor(preds).cpu().numpy() if preds is not None else None
    chosen: dict[tuple[int, int], None] = {}  # insertion-ordered set of pairs
    for _ in range(max_tries):  # rejection sampling in vectorised rounds
        g = rng.choice(guide_pool, size=4 * n)
        s = rng.integers(0, len(y), size=4 * n)
        ok = y[s] != y[g]
        if p is not None:
            ok &= p[s] != y[g]
        chosen.update(dict.fromkeys(zip(s[ok].tolist(), g[ok].tolist())))
        if len(chosen) >= n:
            break
    if len(chosen) < n:
        raise ValueError(f"found only {len(chosen)} valid pairs of the {n} asked for")
    src, guide = zip(*list(chosen)[:n])
    return torch.tensor(src), torch.tensor(guide)


def first_correct_per_class(labels: torch.Tensor, preds: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Index of the first image of each class (in index order) that the model classifies correctly.

    Rozsa et al. (2017, §5.1) use "the same 10 images as targets" for every origin without
    saying which; this is the chapter's choice. Raises ``ValueError`` naming a class with none.
    """
    labels, preds = torch.as_tensor(labels).cpu(), torch.as_tensor(preds).cpu()
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    ok = labels == preds
    out = []
    for c in range(num_classes):
        idx = ((labels == c) & ok).nonzero().flatten()
        if not len(idx):
            raise ValueError(f"no correctly classified image of class {c}")
        out.append(int(idx[0]))
    return torch.tensor(out)


def nearest_of_class(x: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, reference: torch.Tensor,
                     target_class: int) -> int:
    """Index of the correctly classified image of ``target_class`` nearest to ``reference`` in pixel L2.

    Fig. 3's target is "an applicable image of 9 … that looks relatively similar to the origin".
    """
    labels, preds = torch.as_tensor(labels).cpu(), torch.as_tensor(preds).cpu()
    pool = ((labels == target_class) & (preds == labels)).nonzero().flatten()
    if not len(pool):
        raise ValueError(f"no correctly classified image of class {target_class}")
    d = (x[pool].flatten(1).double() - reference.flatten().double()).norm(dim=1)
    return int(pool[d.argmin()])


def stratified(labels: torch.Tensor, per_class: int, *, mask: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """``per_class`` random indices of each class (where ``mask`` holds), sorted; fewer if a class has fewer."""
    labels = torch.as_tensor(labels).cpu()
    ok = torch.ones_like(labels, dtype=torch.bool) if mask is None else torch.as_tensor(mask).cpu()
    rng = np.random.default_rng(seed)
    out = []
    for c in labels.unique().tolist():
        pool = ((labels == c) & ok).nonzero().flatten().numpy()
        out.extend(rng.choice(pool, size=min(per_class, len(pool)), replace=False).tolist())
    return torch.tensor(sorted(out), dtype=torch.long)
