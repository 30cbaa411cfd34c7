"""Networks with random orthonormal weights (§5 of Sabour et al. 2016, "Networks with Random Weights").

"We randomly initialized layers of Caffenet with orthonormal weights. We then optimized for
adversarial images as above, and looked at distance ratios." :func:`orthonormal_copy` builds
such a network from any model: same architecture, layer names and input normalisation.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["orthonormal_copy"]

_CONV_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@torch.no_grad()
def orthonormal_copy(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with random orthonormal weights, in eval mode; ``model`` is untouched.

    * every convolution and linear layer: ``torch.nn.init.orthogonal_`` on the weight viewed
      as ``out × (in·kh·kw)`` (rows orthonormal when ``out ≤ in·kh·kw``, columns otherwise),
      gain 1, bias 0;
    * batch norm (and other normalisation layers with affine parameters): weight 1, bias 0,
      running mean 0 and running variance ``1 − eps``, so that in eval mode they are exactly
      the identity;
    * parameter-free modules (ReLU, pooling, LRN, the input ``Normalize``) and buffers of other
      modules are kept.

    Weights are drawn on the CPU from a generator seeded with ``seed`` (layers in
    ``named_modules`` order), so the copy is the same on every device. A module type with
    parameters not listed above is a ``ValueError`` rather than silently left trained.
    """
    clone = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(int(seed))
    for name, module in clone.named_modules():
        own = list(module.named_parameters(recurse=False))
        if isinstance(module, _CONV_LINEAR):
            weight = module.weight
            flat = torch.empty(weight.shape[0], weight[0].numel(), dtype=torch.float64)
            nn.init.orthogonal_(flat, generator=gen)
            weight.copy_(flat.reshape(weight.shape))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, _NORMS):
            if getattr(module, "weight", None) is not None:
                module.weight.fill_(1.0)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
            if getattr(module, "running_mean", None) is not None:
                module.running_mean.zero_()
            if getattr(module, "running_var", None) is not None:
                module.running_var.fill_(1.0 - module.eps)
            if getattr(module, "num_batches_tracked", None) is not None:
                module.num_batches_tracked.zero_()
        elif own:
            raise ValueError(
                f"orthonormal_copy does not know how to re-initialise {name!r} "
                f"({type(module).__name__}, parameters {[p for p, _ in own]})")
    return clone.eval()
