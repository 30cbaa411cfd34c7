"""Reproducibility: seeding, an on-disk result cache, and claims tables (from :mod:`.claims`).

The cache (DESIGN.md §3) keys every entry by its parameters, the checkpoint hash of the model
involved and a fingerprint of the source code that computes it, so a code change or a retrained model
never serves a stale result; entries are written atomically (temporary file + rename).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .claims import Claim, claims_table
from .data import cache_dir

__all__ = [
    "Claim", "atomic_save", "cached", "claims_table", "code_fingerprint", "core_fingerprint", "seed_everything",
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
_PACKAGE_DIR = Path(__file__).resolve().parent
_PACKAGE = _PACKAGE_DIR.name


def _module_file(dotted: str) -> Path | None:
    """The source file of a ``featadv_core`` module or package (``None`` if there is none)."""
    parts = dotted.split(".")
    if parts[0] != _PACKAGE:
        return None
    base = _PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(dotted: str, file: Path) -> set[str]:
    """The ``featadv_core`` modules that the module ``dotted`` (at ``file``) imports."""
    import ast

    package = dotted if file.name == "__init__.py" else dotted.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == _PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != _PACKAGE:
                continue
            for alias in node.names:  # ``from pkg import submodule`` names a module
                sub = f"{base}.{alias.name}"
                found.add(sub if _module_file(sub) is not None else base)
    return {m for m in found if _module_file(m) is not None}


def code_fingerprint(*modules: Any) -> str:
    """SHA-256 over the source of ``modules`` and every ``featadv_core`` module they import.

    ``modules`` are module objects, functions or classes (their defining module) or dotted
    names inside ``featadv_core``. Inside the core the import graph is followed transitively
    (parsed, not executed), so a cached result is invalidated by a change to any code it can
    run — and by nothing else: editing a plotting helper, a docstring or a comment leaves
    every attack result valid (:func:`_code_only`). Code outside the core (a notebook's helper module, a test's stand-in) counts by its own
    source file only; objects without a source file are a ``ValueError``.
    """
    import inspect

    todo, outside = [], {}
    for obj in modules:
        name = obj if isinstance(obj, str) else getattr(inspect.getmodule(obj), "__name__", None)
        if name is not None and _module_file(name) is not None:
            todo.append(name)
            continue
        try:
            outside[name] = Path(inspect.getsourcefile(inspect.getmodule(obj)))
        except (TypeError, ValueError):
            raise ValueError(f"{obj!r} is not a module of {_PACKAGE} and has no source file") from None
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = _module_file(name)
        todo.extend(_imported_modules(name, seen[name]) - seen.keys())
    digest = hashlib.sha256()
    for name, file in sorted(seen.items()) + sorted(outside.items()):
        digest.update(name.encode())
        digest.update(_code_only(file).encode())
    return digest.hexdigest()


def _code_only(file: Path) -> str:
    """The module's syntax tree without docstrings (comments are not in it): what it computes.

    Rewording documentation then leaves cached results valid; any change to the code does not.
    Falls back to the raw text for files that are not valid Python.
    """
    import ast

    text = file.read_text()
    try:
        tree = ast.parse(text, filename=str(file))
    except SyntaxError:
        return text
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def core_fingerprint() -> str:
    """Fingerprint of the whole ``featadv_core`` source: any code change invalidates results."""
    global _CORE_FINGERPRINT
    if _CORE_FINGERPRINT is None:
        _CORE_FINGERPRINT = source_fingerprint(_PACKAGE_DIR)
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
           code: tuple | list | None = None, refresh: bool = False) -> Any:
    """Return ``compute()``, cached on disk under ``FEATADV_CACHE/results``.

    The key covers ``name``, ``params`` (JSON-serialisable), the checkpoint hash of ``model``
    (if given) and the code that computes the value: :func:`code_fingerprint` of ``code`` (the
    modules or functions ``compute`` calls, followed through their imports), or, when ``code``
    is ``None``, :func:`core_fingerprint` (any change to the core). ``refresh=True`` recomputes
    and overwrites. The value must be ``torch.save``-able (tensors, arrays, dicts, numbers...).
    """
    key = stable_hash({
        "name": name, "params": params,
        "core": core_fingerprint() if code is None else code_fingerprint(*code),
        "model": state_hash(model) if model is not None else None,
    })
    path = cache_dir() / "results" / f"{name}-{key[:20]}.pt"
    if path.is_file() and not refresh:
        return torch.load(path, map_location="cpu", weights_only=False)
    value = compute()
    atomic_save(value, path)
    return value
