"""Supervised training of the zoo's own models: batched augmentation, SGD, one-cycle LR.

CPU-efficient by measurement (``benchmarks/training_speed.py``, 2-core EPYC): bfloat16 autocast
and channels-last memory make a CIFAR-10 training step 2.5–3× faster than float32/NCHW; the
weights stay float32 (autocast computes convolutions and matrix products in bfloat16 only).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = ["TrainConfig", "LossFn", "augment", "accuracy", "cross_entropy_loss", "train_classifier"]


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
    bf16: bool = False         # bfloat16 autocast for the forward/backward pass
    channels_last: bool = False
    seed: int = 0


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, TrainConfig], torch.Tensor]


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """Plain training: cross-entropy (with the config's label smoothing) on the batch itself."""
    return F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)


def augment(x: torch.Tensor, *, crop_pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crops (reflect-padded by ``crop_pad``) and horizontal flips, for a whole batch.

    One gather for the crops and one ``where`` for the flips: no per-sample Python loop.
    """
    n, _, h, w = x.shape
    if crop_pad:
        padded = F.pad(x, (crop_pad,) * 4, mode="reflect")
        oy = torch.randint(0, 2 * crop_pad + 1, (n,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * crop_pad + 1, (n,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # n×h×1
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # n×1×w
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(n, 1, 1, 1)
        x = torch.where(mask, x.flip(3), x)
    return x.contiguous()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (used as is: call ``.eval()`` first) on ``(x, y)``, in float32."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        pred = model(x[i:i + batch_size].to(device)).argmax(1).cpu()
        correct += (pred == y[i:i + batch_size]).sum().item()
    return correct / len(x)


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *,
                     loss_fn: LossFn = cross_entropy_loss, desc: str = "training") -> nn.Module:
    """Train ``model`` in place: SGD (Nesterov), one-cycle schedule, ``loss_fn`` per batch.

    ``loss_fn(model, x_batch, y_batch, config)`` returns the batch loss (cross-entropy by
    default; adversarial training passes its own, which may craft attacks on the batch). The
    progress bar counts batches (so it shows the time left) with the epoch and running loss.
    Deterministic given ``config.seed`` on a given device and thread count. Returns the model
    in eval mode, with contiguous (NCHW) parameters.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # dropout masks, random starts of adversarial losses
    memory = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(memory_format=memory)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=True)
    steps_per_epoch = (len(x) + config.batch_size - 1) // config.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, epochs=config.epochs,
                                                steps_per_epoch=steps_per_epoch)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if config.bf16 else nullcontext
    model.train()
    bar = tqdm(total=config.epochs * steps_per_epoch, desc=desc, unit="batch", leave=False)
    for epoch in range(config.epochs):
        perm = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * config.batch_size:(i + 1) * config.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            if config.crop_pad or config.flip:
                xb = augment(xb, crop_pad=config.crop_pad, flip=config.flip, generator=generator)
            with autocast():
                loss = loss_fn(model, xb.contiguous(memory_format=memory), yb, config)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            bar.update()
            if i % 20 == 0 or i == steps_per_epoch - 1:
                bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{total / (i + 1):.3f}")
    bar.close()
    return model.to(memory_format=torch.contiguous_format).eval()
