"""Source–guide pairs for feature adversaries (Sabour et al. 2016, §3–4).

The paper draws random pairs of images from different classes; for the nearest-neighbour
statistics (Table 1) it further asks that "the guide is classified correctly and the source
is classified to a different class". Pairs are index pairs into one split, drawn
deterministically from a seed, with no Python loop over candidates.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["sample_pairs"]


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
        raise ValueError("no image qualifies as a guide")
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
