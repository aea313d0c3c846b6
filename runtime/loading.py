"""How a rank gets its layers' weights, and nothing else.

The model is built whole, cheaply: with :func:`parameters_on_meta` every parameter lives on
the ``meta`` device (no storage) while buffers are built for real, so that what a module
computes in its constructor (rotary ``inv_freq``, Gemma's embedding scale) is computed, not
left empty. :func:`keep_layers` then replaces every other rank's layer by an
:class:`~layerfit.runtime.stage.Absent`, and :func:`materialise` gives this rank's parameters and
persistent buffers their values — read from a checkpoint, copied from a model, or set by a
seeded initialisation (:func:`initialise`), whose every parameter is checked afterwards, so
that nothing ever runs on uninitialised memory. A parameter that two layers share (a head
tied to the embedding) stays one tensor on a rank that holds both.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from .errors import ModelError
from .stage import Absent, layer_paths, layer_modules

__all__ = ["Initialiser", "check_covered", "check_resettable", "initialise", "keep_layers", "layer_tensors",
           "materialise", "parameters_on_meta", "reset_parameters", "tied_aliases"]

Initialiser = Callable[[nn.Module], None]


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on ``meta``; buffers stay real (accelerate's
    ``init_empty_weights(include_buffers=False)``)."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:
            if type(param) is nn.Parameter:
                meta = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
                meta.__dict__.update(param.__dict__)
            else:  # a Parameter subclass takes its attributes in its constructor (as accelerate passes them)
                meta = type(param)(param.to("meta"), **{**param.__dict__, "requires_grad": param.requires_grad})
            module._parameters[name] = meta

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def _owned(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module, str, torch.Tensor, bool]]:
    """(key, owner, attribute, tensor, is parameter) for every parameter and persistent buffer
    under ``module``, shared ones under each of their names (as ``state_dict`` lists them)."""
    for path, sub in module.named_modules(prefix=prefix, remove_duplicate=False):
        for attr, param in sub._parameters.items():
            if param is not None:
                yield f"{path}.{attr}" if path else attr, sub, attr, param, True
        for attr, buffer in sub._buffers.items():
            if buffer is not None and attr not in sub._non_persistent_buffers_set:
                yield f"{path}.{attr}" if path else attr, sub, attr, buffer, False


def layer_tensors(root: nn.Module, names: Sequence[str]) -> dict[str, tuple[str, nn.Module, str, torch.Tensor, bool]]:
    """Key → (layer, owner module, attribute, tensor, is parameter) for ``names``' layers."""
    out = {}
    for name in names:
        for path, module in zip(layer_paths(name), layer_modules(root, name)):
            for key, owner, attr, tensor, is_param in _owned(module, path):
                out[key] = (name, owner, attr, tensor, is_param)
    return out


def tied_aliases(root: nn.Module, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Key → every key of the same tensor among the layers (one key unless it is shared)."""
    by_tensor: dict[int, list[str]] = {}
    for key, (_, _, _, tensor, _) in layer_tensors(root, names).items():
        by_tensor.setdefault(id(tensor), []).append(key)
    return {key: tuple(keys) for keys in by_tensor.values() for key in keys}


def check_covered(root: nn.Module, names: Sequence[str]) -> None:
    """ModelError unless every parameter of ``root`` lies in one of the layers and no layer
    lies inside another."""
    owner: dict[str, str] = {}  # module path -> the layer it belongs to
    for name in names:
        for path in layer_paths(name):
            if path in owner:
                raise ModelError(f"layers: {name!r} and {owner[path]!r} both hold module {path!r}; a module belongs to "
                                 "one layer")
            owner[path] = name
    for path, name in owner.items():
        parts = path.split(".")
        outer = next((".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in owner), None)
        if outer is not None:
            raise ModelError(f"layers: {name!r} lies inside {owner[outer]!r}; a module belongs to one layer")
    held = {id(tensor) for _, _, _, tensor, is_param in layer_tensors(root, names).values() if is_param}
    orphans = [key for key, _, _, tensor, is_param in _owned(root, "") if is_param and id(tensor) not in held]
    if orphans:
        raise ModelError(f"layers: parameter {orphans[0]!r} belongs to none of the layers")


def keep_layers(root: nn.Module, names: Sequence[str], keep: Sequence[str]) -> None:
    """Replace every layer of ``names`` not in ``keep`` by an :class:`Absent` (freeing it)."""
    kept = set(keep)
    for name in names:
        if name in kept:
            continue
        for path in layer_paths(name):
            parent_path, _, attr = path.rpartition(".")
            parent = root.get_submodule(parent_path)
            parent._modules[attr] = Absent(name)


def materialise(root: nn.Module, names: Sequence[str], value: Callable[[str, torch.Tensor], torch.Tensor],
                device: torch.device) -> None:
    """Give the parameters and persistent buffers of ``names``' layers ``value(key, tensor)``,
    then move the whole (pruned) model to ``device``. A shared tensor gets one value."""
    done: dict[int, torch.Tensor] = {}
    for key, (_, owner, attr, tensor, is_param) in layer_tensors(root, names).items():
        if id(tensor) not in done:
            new = value(key, tensor)
            done[id(tensor)] = nn.Parameter(new, requires_grad=tensor.requires_grad) if is_param else new
        if is_param:
            owner._parameters[attr] = done[id(tensor)]  # type: ignore[assignment]
        else:
            owner._buffers[attr] = done[id(tensor)]
    root.to(device)


def initialise(root: nn.Module, names: Sequence[str], indices: Sequence[int], seed: int,
               initialiser: Initialiser) -> None:
    """Seeded random weights for the layers ``names`` (at positions ``indices`` of the model):
    ``torch.manual_seed(seed + index)``, then ``initialiser`` on each module holding
    parameters. A parameter shared with an earlier layer keeps that layer's values. Every
    parameter is set to NaN first and checked after: one left unset is a ModelError naming it."""
    tensors = layer_tensors(root, names)
    with torch.no_grad():
        for _, _, _, tensor, is_param in tensors.values():
            if is_param and tensor.is_floating_point():
                tensor.fill_(math.nan)
        done: set[int] = set()
        for name, index in zip(names, indices):
            mine = {key: t for key, (layer, _, _, t, is_param) in tensors.items() if layer == name and is_param}
            earlier = {id(t): t.detach().clone() for t in mine.values() if id(t) in done}
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + index)
                for module in _holders(layer_modules(root, name)):
                    initialiser(module)
            for t in mine.values():
                if id(t) in earlier:
                    t.copy_(earlier[id(t)])
                done.add(id(t))
        for key, (_, owner, _, tensor, is_param) in tensors.items():
            if is_param and tensor.is_floating_point() and torch.isnan(tensor).any():
                raise ModelError(f"init: {key!r} was left unset by the initialisation of its module "
                                 f"({type(owner).__name__}); load its weights from a checkpoint instead")


def _holds_parameters(module: nn.Module) -> bool:
    """Whether ``module`` itself (not its submodules) holds a parameter: what an initialiser sets."""
    return any(p is not None for p in module._parameters.values())


def _holders(modules: Sequence[nn.Module]) -> list[nn.Module]:
    """The modules (in ``modules`` and below) that hold parameters directly, each once."""
    seen: dict[int, nn.Module] = {}
    for module in modules:
        for sub in module.modules():
            if _holds_parameters(sub):
                seen.setdefault(id(sub), sub)
    return list(seen.values())


def reset_parameters(module: nn.Module) -> None:
    """torch's initialisation: the module's own ``reset_parameters()``."""
    module.reset_parameters()  # type: ignore[operator]


def check_resettable(root: nn.Module, names: Sequence[str]) -> None:
    """ModelError naming the first module of the layers that holds parameters but has no
    ``reset_parameters()`` (so ``init="random"`` could not set it)."""
    for name in names:
        for path, module in zip(layer_paths(name), layer_modules(root, name)):
            for sub_path, sub in module.named_modules(prefix=path):
                if _holds_parameters(sub) and not callable(getattr(sub, "reset_parameters", None)):
                    raise ModelError(f"init: module {sub_path!r} ({type(sub).__name__}) has parameters and no "
                                     "reset_parameters(), so random initialisation cannot set them; load its "
                                     "weights (a checkpoint, or a factory that builds them)")
