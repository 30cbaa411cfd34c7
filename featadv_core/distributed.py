"""Many processes, one notebook: the rank bookkeeping of ``torchrun`` runs (DESIGN.md §10).

A notebook at the paper's scale runs as K copies of one program (SPMD, ``torchrun
--nproc-per-node=K``, also across machines with a shared ``FEATADV_CACHE``). The only things that
know about ranks are the cached runs (:func:`featadv_core.repro.cached_chunks` shares out chunks,
:func:`featadv_core.repro.cached` lets rank 0 compute) and the trainers (DistributedDataParallel);
the collectives they need are a barrier, here. One process (``WORLD_SIZE`` unset or 1) behaves
exactly as without torchrun and never initialises ``torch.distributed``.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["world", "rank", "world_size", "is_main", "barrier", "solo", "init", "data_parallel"]

_SOLO = contextvars.ContextVar("featadv_solo", default=False)
_GROUP = None


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: torchrun's ``RANK``/``WORLD_SIZE``; ``(0, 1)`` alone.

    Inside :func:`solo` (one rank computing something the others will read) it is ``(0, 1)``, so
    nested cached runs do not wait for ranks that are not running them.
    """
    if _SOLO.get():
        return 0, 1
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {size}")
    r = int(os.environ.get("RANK", "0") or 0)
    if not 0 <= r < size:
        raise ValueError(f"RANK must be in 0..{size - 1}, got {r}")
    return r, size


def rank() -> int:
    """This process's rank (0 alone)."""
    return world()[0]


def world_size() -> int:
    """The number of processes in the job (1 alone)."""
    return world()[1]


def is_main() -> bool:
    """Rank 0 (or a single process): the one whose notebook is the book's page and whose bars show."""
    return rank() == 0


def init(backend: str | None = None, *, timeout_s: float = 3600) -> None:
    """Initialise ``torch.distributed`` from torchrun's environment, once (no-op for one process).

    ``backend`` defaults to NCCL when this process has a CUDA device, else gloo. Barriers use a
    gloo group either way (they carry no tensors), so a CPU-only rank never needs NCCL.
    """
    global _GROUP
    if world_size() == 1 or _GROUP is not None:
        return
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    _GROUP = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD


def barrier() -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if world_size() == 1:
        return
    init()
    dist.barrier(group=_GROUP)


def data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` under ``torchrun``
    (rank 0's weights broadcast to every rank, gradients averaged after each backward), else
    ``model`` itself. Input-gradient attacks inside a loss (adversarial training's inner PGD,
    TRADES' two forward passes) run through the wrapper: DDP syncs only the parameter backward."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    init()
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@contextlib.contextmanager
def solo():
    """Run the body as if this process were alone (no sharding, no barriers inside)."""
    token = _SOLO.set(True)
    try:
        yield
    finally:
        _SOLO.reset(token)
