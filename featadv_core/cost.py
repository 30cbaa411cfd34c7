"""What an attack costs: passes through the network and seconds, counted while it runs.

Papers compare attacks by success and distortion and rarely by price; chapter 5 puts the price
beside them. :func:`count_passes` counts, for one model, the images that go *forward* through its
first parameterised layer and the images whose gradient comes *back* through it, by hooks that
neither change the computation nor keep it alive:

* a forward pre-hook on the first layer adds each call's batch size (so an attack that stops the
  forward pass early, at the layer it targets, still counts one pass per image: the cost of a
  truncated pass is not separated out);
* a hook on that layer's output tensor, registered only when the output needs a gradient, adds the
  batch size every time a gradient is computed through it — a DeepFool step's ``K − 1`` backward
  passes of one forward count ``K − 1`` times.

Only the model handed in is counted: FSA's encoder and decoder are separate networks and are
not (the chapter says so where it reports FSA's cost).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Passes", "count_passes", "first_layer"]


@dataclass
class Passes:
    """Counts of one :func:`count_passes` block: images forward, images backward, wall seconds."""

    forward: int = 0
    backward: int = 0
    seconds: float = 0.0
    _start: float = field(default=0.0, repr=False)

    def per_image(self, n: int) -> dict[str, float]:
        """``{"forward", "backward", "seconds"}`` divided by the ``n`` attacked images."""
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        return {"forward": self.forward / n, "backward": self.backward / n, "seconds": self.seconds / n}


def first_layer(model: nn.Module) -> nn.Module:
    """The first module (in registration order) that holds parameters of its own: every pass through the
    network goes through it, whichever path (whole model, hooks that stop early, a traced extractor) runs it."""
    for module in model.modules():
        if next(module.parameters(recurse=False), None) is not None:
            return module
    raise ValueError("the model has no parameters: there is no layer to count passes through")


@contextlib.contextmanager
def count_passes(model: nn.Module):
    """Count forward and backward passes (in images) through ``model`` and the wall time of the block.

    >>> with count_passes(net) as passes:
    ...     attacks.pgd(net, x, y, eps=8 / 255, steps=10, step_size=2 / 255)
    >>> passes.per_image(len(x))          # about 11 forward and 10 backward passes per image
    """
    layer = first_layer(model)
    passes = Passes()

    def on_backward(grad: torch.Tensor) -> None:
        passes.backward += int(grad.shape[0])

    def on_forward(_module: nn.Module, args: tuple) -> None:
        passes.forward += int(args[0].shape[0])

    def on_output(_module: nn.Module, _args: tuple, output) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(on_backward)

    handles = [layer.register_forward_pre_hook(on_forward), layer.register_forward_hook(on_output)]
    passes._start = time.perf_counter()
    try:
        yield passes
    finally:
        passes.seconds = time.perf_counter() - passes._start
        for h in handles:
            h.remove()
