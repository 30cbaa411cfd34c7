"""Reproducibility: seeding, an on-disk result cache, and claims tables.

The cache (DESIGN.md §3) keys every entry by its parameters, the checkpoint hash of the model
involved and a fingerprint of the core's source code, so a code change or a retrained model
never serves a stale result; entries are written atomically (temporary file + rename).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import cache_dir

__all__ = [
    "Claim", "atomic_save", "cached", "claims_table", "core_fingerprint", "seed_everything",
    "source_fingerprint", "state_hash", "stable_hash",
]


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA). Optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False


def stable_hash(obj: Any) -> str:
    """SHA-256 of a JSON-serialisable object (sorted keys): the same value, the same hash."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def source_fingerprint(*paths: Path) -> str:
    """SHA-256 over the contents of the given files (or every ``*.py`` under given folders)."""
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(path.parent if path.is_dir() else file.parent)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


_CORE_FINGERPRINT: str | None = None


def core_fingerprint() -> str:
    """Fingerprint of the whole ``featadv_core`` source: any code change invalidates results."""
    global _CORE_FINGERPRINT
    if _CORE_FINGERPRINT is None:
        _CORE_FINGERPRINT = source_fingerprint(Path(__file__).resolve().parent)
    return _CORE_FINGERPRINT


def state_hash(model: nn.Module) -> str:
    """SHA-256 of a model's ``state_dict`` (names, dtypes, shapes, values): its checkpoint hash."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cache entries are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached(name: str, params: dict, compute: Callable[[], Any], *, model: nn.Module | None = None,
           refresh: bool = False) -> Any:
    """Return ``compute()``, cached on disk under ``FEATADV_CACHE/results``.

    The key covers ``name``, ``params`` (JSON-serialisable), the checkpoint hash of ``model``
    (if given) and :func:`core_fingerprint`. ``refresh=True`` recomputes and overwrites. The
    value must be ``torch.save``-able (tensors, arrays, dicts, numbers...).
    """
    key = stable_hash({
        "name": name, "params": params, "core": core_fingerprint(),
        "model": state_hash(model) if model is not None else None,
    })
    path = cache_dir() / "results" / f"{name}-{key[:20]}.pt"
    if path.is_file() and not refresh:
        return torch.load(path, map_location="cpu", weights_only=False)
    value = compute()
    atomic_save(value, path)
    return value


@dataclass(frozen=True)
class Claim:
    """One claim of a paper set beside our measurement.

    ``replicated`` must be computed from ``ours`` in the notebook (e.g. ``ours >= 0.9``), never
    typed; ``criterion`` says in words what was tested.
    """

    claim: str
    paper: str
    ours: str
    replicated: bool
    criterion: str = ""


def claims_table(claims: list[Claim]):
    """A pandas DataFrame of claims with a ✓/✗ column, for display in a notebook."""
    import pandas as pd

    return pd.DataFrame([
        {"claim": c.claim, "paper": c.paper, "ours": c.ours, "criterion": c.criterion,
         "replicated": "✓ yes" if c.replicated else "✗ no"}
        for c in claims
    ])
