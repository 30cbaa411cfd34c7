"""Named-layer features: list, extract and truncate.

A model's layers are named by strings (``"conv3"``, ``"pool5"``, ``"fc7"``, ``"ip1"``). Zoo
models carry an ordered ``layer_map`` (name → sub-module path); any other ``nn.Module`` is
addressed by its ``named_modules`` paths. Extraction hooks the named modules and stops the
forward pass as soon as every requested layer has been seen, so an attack on ``conv3`` never
pays for ``fc8``. Gradients flow through the returned tensors.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["layer_names", "extract", "forward_to", "feature_shapes", "model_dtype"]


def model_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The floating dtype ``model`` computes in: its first floating parameter's or buffer's
    (``default`` if it has none). Attacks cast their inputs to it (a half-precision model gets
    half-precision images) and their results back to the caller's dtype."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return default


def _layer_map(model: nn.Module) -> dict[str, str]:
    mapping = getattr(model, "layer_map", None)
    if mapping is not None:
        return dict(mapping)
    return {name: name for name, _ in model.named_modules() if name}


def layer_names(model: nn.Module) -> list[str]:
    """The layer names ``extract`` accepts for ``model``, in forward order for zoo models."""
    return list(_layer_map(model))


def _resolve(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    mapping = _layer_map(model)
    unknown = [name for name in layers if name not in mapping]
    if unknown:
        raise ValueError(
            f"unknown layer(s) {', '.join(map(repr, unknown))} for {type(model).__name__}; "
            f"valid layers: {', '.join(mapping)}"
        )
    return {name: model.get_submodule(mapping[name]) for name in layers}


class _Stop(Exception):
    """Raised by a hook once every requested layer has been captured."""


def extract(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` up to the deepest of ``layers`` and return ``{name: output}``.

    ``layers`` may be one name or a sequence; an unknown name raises ``ValueError`` listing
    the valid ones. The model's mode and parameters are untouched.
    """
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise ValueError("layers must name at least one layer")
    modules = _resolve(model, names)
    out: dict[str, torch.Tensor] = {}
    by_module: dict[int, list[str]] = {}
    for name, module in modules.items():
        by_module.setdefault(id(module), []).append(name)

    def hook(module, _inputs, output):
        for name in by_module[id(module)]:
            out[name] = output
        if len(out) == len(names):
            raise _Stop

    handles = [m.register_forward_hook(hook) for m in {id(m): m for m in modules.values()}.values()]
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in names if name not in out]
    if missing:  # a module that forward() never calls
        raise RuntimeError(f"layer(s) {missing} were not reached by {type(model).__name__}.forward")
    return {name: out[name] for name in names}


def forward_to(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of ``layer`` on ``x``, computing nothing past it (see :func:`extract`)."""
    return extract(model, x, [layer])[layer]


@torch.no_grad()
def feature_shapes(model: nn.Module, input_shape: Sequence[int], device: torch.device | str | None = None) -> dict[str, tuple[int, ...]]:
    """Shape (without the batch axis) of every named layer for one input of ``input_shape``."""
    if device is None:
        device = next(model.parameters()).device
    x = torch.zeros(1, *input_shape, device=device)
    feats = extract(model, x, layer_names(model))
    return {name: tuple(t.shape[1:]) for name, t in feats.items()}
