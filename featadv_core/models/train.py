"""Supervised training of the zoo's own models: batched augmentation, SGD, one-cycle LR.

CPU-efficient by measurement (``benchmarks/training_speed.py``, 2-core EPYC): bfloat16 autocast
and channels-last memory make a CIFAR-10 training step 2.5–3× faster than float32/NCHW; the
weights stay float32 (autocast computes convolutions and matrix products in bfloat16 only).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..labels import predict_labels

__all__ = ["TrainConfig", "LossFn", "augment", "accuracy", "cross_entropy_loss", "train_classifier", "BUDGET_ENV",
           "train_budget", "budgeted"]

BUDGET_ENV = "FEATADV_TRAIN_BUDGET"
SMOKE_IMAGES = 256  # training images of a smoke-budget run; evaluations use at most a quarter of that


def train_budget() -> str:
    """``"full"`` (the default) or ``"smoke"``, from ``FEATADV_TRAIN_BUDGET``.

    ``smoke`` trains the zoo's paper-scale recipes (those that do not ship) for one epoch on
    ``SMOKE_IMAGES`` images, or a few decoder steps, so that the paper presets' smoke run executes
    their training code on a CPU in seconds. Such a model is labelled in its card and cached under
    its own key: it never serves a real run.
    """
    budget = os.environ.get(BUDGET_ENV, "full") or "full"
    if budget not in ("full", "smoke"):
        raise ValueError(f"{BUDGET_ENV} must be 'full' or 'smoke', got {budget!r}")
    return budget


def budgeted(n: int) -> int:
    """``n`` evaluation images, or at most a quarter of ``SMOKE_IMAGES`` under the smoke budget."""
    return min(n, SMOKE_IMAGES // 4) if train_budget() == "smoke" else n


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run besides the data, the architecture and the loss."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.05           # peak of the one-cycle schedule
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_pad: int = 0          # random translation by up to this many pixels (reflect padding)
    flip: bool = False         # random horizontal flips
    label_smoothing: float = 0.0
    bf16: bool = False         # bfloat16 autocast for the forward/backward pass (where native: see _autocast)
    channels_last: bool = False
    seed: int = 0


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, TrainConfig], torch.Tensor]


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """Plain training: cross-entropy (with the config's label smoothing) on the batch itself."""
    return F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)


def _autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    """The training step's precision: bfloat16 autocast where ``bf16`` asks for it and ``device``
    computes it natively (the CPU; CUDA from compute capability 8, Ampere), else float32.

    Elsewhere (an older GPU, where torch would emulate bf16 or refuse it; MPS; ``meta``) it warns
    and trains in float32: float16 would need a gradient scaler. Disabled, no autocast is built
    (``torch.autocast`` refuses device types it does not know, such as ``meta``).
    """
    if not bf16:
        return nullcontext()
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    warnings.warn(f"bf16 autocast is not native on {device}; training in float32", stacklevel=3)
    return nullcontext()


def augment(x: torch.Tensor, *, crop_pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crops (reflect-padded by ``crop_pad``) and horizontal flips, for a whole batch.

    One gather for the crops and one ``where`` for the flips: no per-sample Python loop. The
    offsets and flips are drawn on ``generator``'s device.
    """
    n, _, h, w = x.shape
    g = generator.device
    if crop_pad:
        padded = F.pad(x, (crop_pad,) * 4, mode="reflect")
        oy = torch.randint(0, 2 * crop_pad + 1, (n,), generator=generator, device=g).to(x.device)
        ox = torch.randint(0, 2 * crop_pad + 1, (n,), generator=generator, device=g).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # n×h×1
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # n×1×w
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=generator, device=g) < 0.5).to(x.device).view(n, 1, 1, 1)
        x = torch.where(mask, x.flip(3), x)
    return x.contiguous()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (used as is: call ``.eval()`` first) on ``(x, y)``, in the model's dtype."""
    pred = predict_labels(model, x, batch_size=batch_size, device=next(model.parameters()).device).cpu()
    return (pred == y).sum().item() / len(x)


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *,
                     loss_fn: LossFn = cross_entropy_loss, desc: str = "training") -> nn.Module:
    """Train ``model`` in place: SGD (Nesterov), one-cycle schedule, ``loss_fn`` per batch.

    ``loss_fn(model, x_batch, y_batch, config)`` returns the batch loss (cross-entropy by
    default; adversarial training passes its own, which may craft attacks on the batch). The
    progress bar counts batches (so it shows the time left) with the epoch and running loss.
    Deterministic given ``config.seed`` on a given device and thread count. Returns the model
    in eval mode, with contiguous (NCHW) parameters.

    Under ``torchrun`` with K processes it trains with DistributedDataParallel
    (:func:`featadv_core.distributed.data_parallel`): every rank starts from rank 0's weights,
    draws the same shuffled and augmented global batch, computes the loss on its K-th of it (rows
    r, r+K, ...), weighted by its share of the batch, and DDP averages the gradients, so each step
    is the single process's step on the batch mean and the replicas stay identical.
    """
    device = next(model.parameters()).device
    rank, size = distributed.world()
    generator = torch.Generator().manual_seed(config.seed)  # on the CPU on every device: the same batches
    torch.manual_seed(config.seed)  # dropout masks, random starts of adversarial losses
    memory = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(memory_format=memory)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=True)
    steps_per_epoch = (len(x) + config.batch_size - 1) // config.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, epochs=config.epochs,
                                                steps_per_epoch=steps_per_epoch)
    autocast = _autocast(device, config.bf16)
    model.train()
    net = distributed.data_parallel(model)  # the model itself in one process
    bar = tqdm(total=config.epochs * steps_per_epoch, desc=desc, unit="batch", leave=False,
               disable=not distributed.is_main())
    for epoch in range(config.epochs):
        perm = torch.randperm(len(x), generator=generator, device="cpu")
        total, pending = 0.0, []
        for i in range(steps_per_epoch):
            idx = perm[i * config.batch_size:(i + 1) * config.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            if config.crop_pad or config.flip:
                xb = augment(xb, crop_pad=config.crop_pad, flip=config.flip, generator=generator)
            if size > 1:  # this rank's share of the global batch (augmented identically on every rank)
                share = len(xb[rank::size]) * size / len(xb)
                xb, yb = xb[rank::size], yb[rank::size]
            with autocast:
                loss = loss_fn(net, xb.contiguous(memory_format=memory), yb, config)
            opt.zero_grad(set_to_none=True)
            (loss * share if size > 1 else loss).backward()
            opt.step()
            sched.step()
            pending.append(loss.detach())
            bar.update()
            if i % 20 == 0 or i == steps_per_epoch - 1:  # one host sync per 20 batches, not per batch
                for value in torch.stack(pending).tolist():  # in order, as adding each .item() did
                    total += value
                pending.clear()
                bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{total / (i + 1):.3f}")
    bar.close()
    return model.to(memory_format=torch.contiguous_format).eval()
