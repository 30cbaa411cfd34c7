"""Supervised training of the zoo's own models: batched augmentation, SGD, one-cycle LR."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = ["TrainConfig", "augment", "accuracy", "train_classifier"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run besides the data and the architecture."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_pad: int = 0          # random translation by up to this many pixels (reflect padding)
    flip: bool = False         # random horizontal flips
    seed: int = 0


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
    """Top-1 accuracy of ``model`` (used as is: call ``.eval()`` first) on ``(x, y)``."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        pred = model(x[i:i + batch_size].to(device)).argmax(1).cpu()
        correct += (pred == y[i:i + batch_size]).sum().item()
    return correct / len(x)


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                     *, desc: str = "training") -> nn.Module:
    """Train ``model`` in place with cross-entropy, SGD (Nesterov) and a one-cycle schedule.

    Deterministic given ``config.seed`` on a given device. Returns the model in eval mode.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # dropout masks
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=True)
    steps_per_epoch = (len(x) + config.batch_size - 1) // config.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, epochs=config.epochs,
                                                steps_per_epoch=steps_per_epoch)
    model.train()
    bar = tqdm(range(config.epochs), desc=desc, unit="epoch", leave=False)
    for _ in bar:
        perm = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * config.batch_size:(i + 1) * config.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            if config.crop_pad or config.flip:
                xb = augment(xb, crop_pad=config.crop_pad, flip=config.flip, generator=generator)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        bar.set_postfix(loss=f"{total / steps_per_epoch:.3f}")
    return model.eval()
