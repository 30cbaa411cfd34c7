"""Named-layer features: list, extract and truncate.

A model's layers are named by strings (``"conv3"``, ``"pool5"``, ``"fc7"``, ``"ip1"``).

* Zoo models carry an ordered ``layer_map`` (name → sub-module path). Extraction hooks the named
  modules and stops the forward pass as soon as every requested layer has been seen, so an
  attack on ``conv3`` never pays for ``fc8``.
* Any other ``nn.Module`` (a torchvision or timm model a researcher brings) is addressed by the
  node names of its traced graph (:func:`torchvision.models.feature_extraction.get_graph_node_names`:
  a module's path, ``"layer1.0.relu_1"`` for the second call of a module used twice, ``"add"``
  for a function) and extracted by :func:`~torchvision.models.feature_extraction.create_feature_extractor`,
  which also computes nothing past the deepest requested node. A model that cannot be traced
  falls back to hooks on its ``named_modules`` paths.

Both paths are guarded against the two ways hooks return wrong tensors silently: a module called
more than once in a forward pass (which call?) is an error on the hook path and a distinct node
on the traced path, and an in-place operation after a captured layer (``nn.ReLU(inplace=True)``,
``out += identity``) cannot overwrite the capture. Gradients flow through the returned tensors.
"""
from __future__ import annotations

import contextlib
import operator
import warnings
import weakref
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["layer_names", "extract", "forward_to", "feature_shapes", "model_dtype", "graph_node_names"]


def model_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The floating dtype ``model`` computes in: its first floating parameter's or buffer's
    (``default`` if it has none). Attacks cast their inputs to it (a half-precision model gets
    half-precision images) and their results back to the caller's dtype."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return default


def _own_map(model: nn.Module) -> dict[str, str] | None:
    mapping = getattr(model, "layer_map", None)
    return None if mapping is None else dict(mapping)


_TRACED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def graph_node_names(model: nn.Module) -> list[str]:
    """The node names of ``model``'s eval-mode traced graph, in execution order, its input left out
    (:func:`torchvision.models.feature_extraction.get_graph_node_names`, every submodule's train/eval
    flag restored afterwards). Raises whatever tracing raises on an untraceable model."""
    from torchvision.models.feature_extraction import get_graph_node_names

    with _modes_kept(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, eval_nodes = get_graph_node_names(model)
    return eval_nodes[1:]  # the first node is the input placeholder


def _traced(model: nn.Module) -> dict | None:
    """For a model without a ``layer_map``: its graph's node names and a cache of feature
    extractors, or ``None`` when the model cannot be traced."""
    if model not in _TRACED:
        try:
            _TRACED[model] = {"names": graph_node_names(model), "extractors": {}}
        except Exception:  # noqa: BLE001 - data-dependent control flow etc.: hooks instead
            _TRACED[model] = {"names": None}
    entry = _TRACED[model]
    return entry if entry["names"] is not None else None


def _layer_map(model: nn.Module) -> dict[str, str]:
    own = _own_map(model)
    if own is not None:
        return own
    traced = _traced(model)
    if traced is not None:
        return {name: name for name in traced["names"]}
    return {name: name for name, _ in model.named_modules() if name}


def layer_names(model: nn.Module) -> list[str]:
    """The layer names ``extract`` accepts for ``model``, in forward order (zoo and traced models)."""
    return list(_layer_map(model))


def _check_names(model: nn.Module, mapping: dict[str, str], layers: Sequence[str]) -> None:
    unknown = [name for name in layers if name not in mapping]
    if unknown:
        raise ValueError(
            f"unknown layer(s) {', '.join(map(repr, unknown))} for {type(model).__name__}; "
            f"valid layers: {', '.join(mapping)}"
        )


class _Stop(Exception):
    """Raised by a hook once every requested layer has been captured."""


_OUT_OF_PLACE = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                 operator.itruediv: operator.truediv}


def _without_inplace(graph: "torch.fx.Graph") -> None:
    """Rewrite the traced graph's in-place functions and methods (``+=``, ``F.relu(x, inplace=True)``,
    ``x.relu_()``) to their out-of-place forms, so no later node can overwrite a returned one."""
    for node in graph.nodes:
        if node.op == "call_function":
            if node.target in _OUT_OF_PLACE:
                node.target = _OUT_OF_PLACE[node.target]
            elif node.kwargs.get("inplace"):
                node.kwargs = dict(node.kwargs, inplace=False)
            elif getattr(node.target, "__name__", "").endswith("_") and hasattr(torch, node.target.__name__[:-1]):
                node.target = getattr(torch, node.target.__name__[:-1])
        elif (node.op == "call_method" and node.target.endswith("_") and not node.target.endswith("__")
              and hasattr(torch.Tensor, node.target[:-1])):
            node.target = node.target[:-1]


@contextlib.contextmanager
def _modes_kept(model: nn.Module):
    """Restore every submodule's train/eval flag after torchvision's tracing, which sets them all to
    the top module's mode (a model with frozen batch-norm layers in training would lose them)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def _modules_out_of_place(model: nn.Module):
    """Turn off ``inplace`` on the model's modules for one call (restored after): an in-place module
    after a captured layer would otherwise overwrite the capture."""
    flipped = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in flipped:
        m.inplace = False
    try:
        yield
    finally:
        for m in flipped:
            m.inplace = True


def _extract_traced(model: nn.Module, traced: dict, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    from torchvision.models.feature_extraction import create_feature_extractor

    key = (tuple(names), model.training)  # train and eval graphs may differ (functional dropout...)
    if key not in traced["extractors"]:
        with _modes_kept(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extractor = create_feature_extractor(model, return_nodes=names)
        graph = extractor.graph
        _without_inplace(graph)
        extractor.graph = graph  # the setter recompiles the extractor's code
        traced["extractors"][key] = extractor
    with _modules_out_of_place(model):
        out = traced["extractors"][key](x)
    return {name: out[name] for name in names}


_SINGLE_CALL: "weakref.WeakKeyDictionary[nn.Module, set[str]]" = weakref.WeakKeyDictionary()


def _check_single_call(model: nn.Module, modules: dict[str, nn.Module]) -> None:
    """Once per model and layer, statically: trace the model (the hooked modules as leaves, nothing
    computed) and count the calls of every hooked module; a module called twice (a shared ReLU) has
    no single output, so it is an error. A model that cannot be traced is not checked."""
    todo = {name: m for name, m in modules.items() if name not in _SINGLE_CALL.get(model, set())}
    if not todo:
        return
    hooked = {id(m) for m in todo.values()}

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return id(m) in hooked or super().is_leaf_module(m, qualname)

    try:
        with _modes_kept(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = Tracer().trace(model)
    except Exception:  # noqa: BLE001 - untraceable (data-dependent control flow): cannot tell
        _SINGLE_CALL.setdefault(model, set()).update(todo)
        return
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    paths = {id(m): path for path, m in model.named_modules()}
    reused = [name for name, m in todo.items() if calls.get(paths.get(id(m), ""), 0) > 1]
    if reused:
        raise RuntimeError(
            f"layer(s) {reused} of {type(model).__name__} name a module called more than once in one forward "
            "pass, so their output is ambiguous; map the name to a module called once (a model without a "
            "layer_map is addressed by its traced graph's node names instead, e.g. 'layer1.0.relu_1')")
    _SINGLE_CALL.setdefault(model, set()).update(todo)


def _extract_hooked(model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor,
                    names: list[str]) -> dict[str, torch.Tensor]:
    _check_single_call(model, modules)
    out: dict[str, torch.Tensor] = {}
    by_module: dict[int, list[str]] = {}
    for name, module in modules.items():
        by_module.setdefault(id(module), []).append(name)

    def hook(module, _inputs, output):
        for name in by_module[id(module)]:
            out[name] = output
        if len(out) == len(names):
            raise _Stop
        for name in by_module[id(module)]:  # later in-place operations must not overwrite a capture
            out[name] = output.clone()

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


def extract(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` up to the deepest of ``layers`` and return ``{name: output}``.

    ``layers`` may be one name or a sequence; an unknown name raises ``ValueError`` listing
    the valid ones. The model's mode and parameters are untouched.
    """
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise ValueError("layers must name at least one layer")
    mapping = _layer_map(model)
    _check_names(model, mapping, names)
    if _own_map(model) is None and (traced := _traced(model)) is not None:
        return _extract_traced(model, traced, x, names)
    modules = {name: model.get_submodule(mapping[name]) for name in names}
    return _extract_hooked(model, modules, x, names)


def forward_to(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of ``layer`` on ``x``, computing nothing past it (see :func:`extract`)."""
    return extract(model, x, [layer])[layer]


@torch.no_grad()
def feature_shapes(model: nn.Module, input_shape: Sequence[int], device: torch.device | str | None = None) -> dict[str, tuple[int, ...]]:
    """Shape (without the batch axis) of every named layer for one input of ``input_shape``."""
    if device is None:
        device = next(model.parameters()).device
    x = torch.zeros(1, *input_shape, device=device, dtype=model_dtype(model, torch.get_default_dtype()))
    feats = extract(model, x, layer_names(model))
    return {name: tuple(t.shape[1:]) for name, t in feats.items()}
