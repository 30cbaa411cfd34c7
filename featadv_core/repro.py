"""Reproducibility: seeding and an on-disk result cache (claims tables live in :mod:`.claims`, above the core).

The cache (DESIGN.md §3) keys every entry by its parameters, the checkpoint hash of the model
involved and a fingerprint of the source code that computes it, so a code change or a retrained model
never serves a stale result; entries are written atomically (temporary file + rename).
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .data import cache_dir

__all__ = [
    "atomic_save", "cached", "cached_chunks", "code_fingerprint", "core_fingerprint", "entry_meta",
    "model_hash", "seed_everything", "source_fingerprint", "state_hash", "stable_hash", "tensor_hash",
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


def tensor_hash(x: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and every value (for cache keys)."""
    t = x.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}".encode())
    digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _stable_form(obj: Any) -> Any:
    """A JSON value standing for ``obj`` in :func:`stable_hash`, by content, never by address.

    Tensors and arrays by :func:`tensor_hash` of their values; NumPy scalars as numbers; dtypes,
    devices and paths by their names; module-level functions and classes by their qualified names
    (their code is keyed separately, :func:`code_fingerprint`); dataclasses and enums by their
    fields and values. Anything else (a lambda, a closure, a model, an arbitrary object whose
    ``str`` shows its address or a truncated summary) is a ``TypeError``: pass what determines it.
    """
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": tensor_hash(obj)}
    if isinstance(obj, np.ndarray):
        return {"__tensor__": tensor_hash(torch.from_numpy(np.ascontiguousarray(obj)))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=lambda v: json.dumps(v, sort_keys=True, default=_stable_form))
    if isinstance(obj, enum.Enum):
        return {"__enum__": f"{type(obj).__module__}.{type(obj).__qualname__}.{obj.name}"}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__dataclass__": f"{type(obj).__module__}.{type(obj).__qualname__}", **dataclasses.asdict(obj)}
    qualname = getattr(obj, "__qualname__", None)
    if (callable(obj) and qualname and "<" not in qualname and getattr(obj, "__module__", None)
            and not isinstance(obj, nn.Module)):
        return {"__callable__": f"{obj.__module__}.{qualname}"}
    raise TypeError(f"{type(obj).__name__} object {obj!r:.80} has no stable form for a cache key; "
                    "pass the values that determine it (numbers, strings, tensors, a model's hash)")


def stable_hash(obj: Any) -> str:
    """SHA-256 of an object's JSON form (sorted keys): the same value, the same hash.

    JSON values hash as themselves; tensors, arrays and the other types of :func:`_stable_form`
    by content; an object without a stable form is a ``TypeError`` rather than a key that two
    different values could share.
    """
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_stable_form).encode()).hexdigest()


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


def model_hash(model: nn.Module) -> str:
    """What a cached result depends on in a model: its class, layer map, parameter dtype and weights.

    :func:`state_hash` alone would let two models with the same weights but different forward
    passes (another class, another ``layer_map``) share cached results.
    """
    from .features import model_dtype

    cls = type(model)
    layer_map = getattr(model, "layer_map", None)
    return stable_hash({"class": f"{cls.__module__}.{cls.__qualname__}", "state": state_hash(model),
                        "layer_map": dict(layer_map) if layer_map is not None else None,
                        "dtype": str(model_dtype(model, torch.float32))})


def _device_of(model: nn.Module | None) -> str:
    for t in (list(model.parameters()) + list(model.buffers())) if model is not None else []:
        return str(t.device)
    return "cpu"


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

    The key covers ``name``, ``params`` (JSON values, tensors by content; anything without a
    stable form is a ``TypeError``, :func:`stable_hash`), :func:`model_hash` of ``model`` (if
    given) and the code that computes the value: :func:`code_fingerprint` of ``code`` (the
    modules or functions ``compute`` calls, followed through their imports), or, when ``code``
    is ``None``, :func:`core_fingerprint` (any change to the core). ``refresh=True`` recomputes
    and overwrites. The value must be ``torch.save``-able (tensors, arrays, dicts, numbers...).
    Every entry records where it was computed (device, the model's dtype, torch's version;
    :func:`entry_meta` reads it back).

    Under ``torchrun`` (:mod:`featadv_core.distributed`) rank 0 computes a missing entry (alone:
    cached runs inside it do not wait for the other ranks) while the others wait at a barrier,
    then every rank reads it: one computation, the same value everywhere.
    """
    key = stable_hash({
        "schema": _ENTRY_SCHEMA, "name": name, "params": params,
        "core": core_fingerprint() if code is None else code_fingerprint(*code),
        "model": model_hash(model) if model is not None else None,
    })
    path = cache_dir() / "results" / f"{name}-{key[:20]}.pt"
    owner = distributed.is_main()
    value = _load_or_compute(path, compute, key, model, refresh) if owner else None
    if distributed.world_size() > 1:
        distributed.barrier()
        if not owner:
            value = _load(path)
    return value


def _load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)["value"]


def _load_or_compute(path: Path, compute: Callable[[], Any], key: str, model: nn.Module | None,
                     refresh: bool) -> Any:
    if path.is_file() and not refresh:
        return _load(path)
    from .features import model_dtype

    with distributed.solo():
        value = compute()
    meta = {"key": key, "device": _device_of(model), "torch": torch.__version__,
            "dtype": str(model_dtype(model, torch.float32)) if model is not None else None}
    atomic_save({"value": value, "meta": meta}, path)
    return value


def _to_cpu(value: Any) -> Any:
    return {k: v.cpu() for k, v in value.items()} if isinstance(value, dict) else value.cpu()


def _concat(parts: list) -> Any:
    if parts and isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def cached_chunks(name: str, params: dict, inputs: Sequence[torch.Tensor], compute: Callable[..., Any], *,
                  batch_size: int, model: nn.Module | None = None, code: Sequence = (), cache: bool = True,
                  progress: bool = True) -> torch.Tensor | dict[str, torch.Tensor]:
    """``torch.cat([compute(*chunk) for chunk in chunks])`` with every chunk cached on its own.

    ``inputs`` are tensors with the same first dimension, cut into row chunks of
    ``batch_size``; ``compute`` gets one chunk of each and returns a tensor for those rows, or
    a dict of tensors (concatenated key by key; rows need not match the input's).
    A chunk's key is ``name``, ``params``, the hashes of its own input rows, ``model``'s
    :func:`model_hash` and :func:`code_fingerprint` of ``code``: so an interrupted run
    recomputes only the chunks it had not finished, and a longer run over the same rows reuses
    the shorter one's chunks. Results come back on the CPU.

    Under ``torchrun`` with K processes, rank r computes the missing chunks i with i mod K = r,
    writes them into the shared cache (atomically, under per-process temporary names), waits at
    a barrier, and reads every chunk back: each rank returns the whole result, bit-identical to
    one process's, so the notebook cells after it need no change. Without the cache
    (``cache=False``) every rank computes everything.
    """
    n = len(inputs[0])
    if any(len(t) != n for t in inputs):
        raise ValueError(f"inputs must have the same length, got {[len(t) for t in inputs]}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    starts = list(range(0, n, batch_size))
    r, size = distributed.world() if cache else (0, 1)
    code_key = code_fingerprint(*code)
    model_key = model_hash(model) if model is not None else None
    keys = {i: stable_hash({"schema": _ENTRY_SCHEMA, "name": name,
                            "params": dict(params, chunk=[tensor_hash(t[i:i + batch_size]) for t in inputs]),
                            "core": code_key, "model": model_key}) for i in starts}
    paths = {i: cache_dir() / "results" / f"{name}-{key[:20]}.pt" for i, key in keys.items()}
    mine = [i for k, i in enumerate(starts) if k % size == r]
    bar = progress and len(mine) > 1 and distributed.is_main()
    out = {}
    for i in tqdm(mine, desc=name if size == 1 else f"{name} (rank {r} of {size})", disable=not bar, leave=False):
        chunk = [t[i:i + batch_size] for t in inputs]
        run = lambda: _to_cpu(compute(*chunk))  # noqa: E731
        out[i] = _load_or_compute(paths[i], run, keys[i], model, refresh=False) if cache else run()
    if size > 1:
        distributed.barrier()
        out.update({i: _load(paths[i]) for i in starts if i not in out})
    return _concat([out[i] for i in starts])


_ENTRY_SCHEMA = 2  # entries are {"value", "meta"}; keys hash the model with model_hash


def entry_meta(path: Path) -> dict:
    """The record of a cache entry written by :func:`cached`: its key, device, model dtype and torch version."""
    return torch.load(path, map_location="cpu", weights_only=False)["meta"]
