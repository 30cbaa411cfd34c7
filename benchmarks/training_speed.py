"""Benchmark: what makes the zoo's CIFAR-10 recipes fast on a CPU (ratios in one run).

For each CIFAR-10 zoo architecture, the time of one training step (forward, backward, SGD) on
a batch of 256 random 32×32 images, with float32 NCHW (the baseline), channels-last memory,
bfloat16 autocast, and both (the zoo's recipes); and for CaffeNet's LRN, torch's
``nn.LocalResponseNorm`` (padded ``avg_pool3d``) against ours (one 1×1 convolution with a band
matrix, :class:`featadv_core.models.architectures.LocalResponseNorm`). Prints a markdown table
of ms/step and speed-ups against the baseline of the same architecture.

    python benchmarks/training_speed.py --repeats 6 --threads 2
"""
from __future__ import annotations

import argparse
import copy
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from featadv_core.models import architectures
from report import emit, table


def step_time(model: nn.Module, *, channels_last: bool, bf16: bool, batch: int, repeats: int) -> float:
    """Median seconds of one SGD training step (after two warm-up steps)."""
    model = copy.deepcopy(model).train()
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=memory)
    y = torch.randint(0, 10, (batch,))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        with autocast():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def with_torch_lrn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose LRN layers are torch's own (same function, other kernel)."""
    model = copy.deepcopy(model)
    for name, module in list(model.net.named_children()):
        if isinstance(module, architectures.LocalResponseNorm):
            setattr(model.net, name, nn.LocalResponseNorm(module.size, module.alpha, module.beta, module.k))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = {"allconv_cifar": architectures.allconv_cifar(), "caffenet_cifar": architectures.caffenet_cifar()}
    nets["caffenet_cifar, torch LRN"] = with_torch_lrn(nets["caffenet_cifar"])
    base_of, rows = {}, []
    for name, net in nets.items():
        cells = []
        for cl, bf in ((False, False), (True, False), (False, True), (True, True)):
            t = step_time(net, channels_last=cl, bf16=bf, batch=args.batch, repeats=args.repeats)
            if (cl, bf) == (False, False) and "torch LRN" not in name:
                base_of[name] = t
            cells.append(1000 * t)
        ref = base_of[name.split(",")[0]]
        rows.append([name, *cells, *(ref / (c / 1000) for c in cells)])
    cols = ["network", "float32 NCHW (ms)", "channels-last (ms)", "bf16 autocast (ms)", "both (ms)",
            "× float32", "× channels-last", "× bf16", "× both (zoo recipe)"]
    emit("training_speed", [table(f"one training step, batch {args.batch}", cols, rows,
                                  notes="Speed-ups are against float32 NCHW of the same network with our LRN; the "
                                        "'torch LRN' row shows what torch's own LRN kernel costs.")],
         json_path=args.json, context={"batch": args.batch, "repeats": args.repeats})


if __name__ == "__main__":
    main()
