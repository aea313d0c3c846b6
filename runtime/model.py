"""The model side of a run: resolving a model spec, its layers, and checking it against a plan.

A model is an ``nn.Sequential``, a module whose ordered children are the layers, or a
factory (a picklable callable, or ``"package.module:function"``) that builds one.
Factories are built on the ``meta`` device, so checking a 70B model costs nothing; each
rank then materialises only its own layers with :func:`materialise_layer`:
``torch.manual_seed(seed + index)`` followed by the layer's ``reset_parameters()``.
:func:`build_model` does the same for every layer in one process, giving the weights
the ranks will hold (the reference for tests and notebooks).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from solver import Instance, LayerfitError

__all__ = ["ModelError", "resolve_factory", "layers_of", "check_layers", "build_model", "materialise_layer", "param_count"]


class ModelError(LayerfitError, ValueError):
    """A model that does not match its plan, or a model spec that cannot be resolved."""


def resolve_factory(spec: str) -> Callable[[], nn.Module]:
    """``"package.module:function"`` → the function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelError(f"model: expected 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"model: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"model: {module_name!r} has no function {attr!r}")
    return factory


def layers_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers of a model in execution order: its named children."""
    children = list(model.named_children())
    if not children:
        raise ModelError(f"model: {type(model).__name__} has no child modules to use as layers")
    return children


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_layers(layers: Sequence[tuple[str, nn.Module]], num_layers: int, instance: Instance | None) -> None:
    """Raise ModelError unless the model's layers match the plan (and the instance, if given).

    Checked: the count; with an instance, each layer's name (by position) and, where the
    instance gives ``params``, the parameter count.
    """
    if len(layers) != num_layers:
        raise ModelError(f"model has {len(layers)} layers, the plan {num_layers}")
    if instance is None:
        return
    if instance.num_layers != num_layers:
        raise ModelError(f"instance: {instance.name!r} has {instance.num_layers} layers, the plan {num_layers}")
    for i, ((name, module), layer) in enumerate(zip(layers, instance.layers)):
        if name != layer.name:
            raise ModelError(f"layer {i}: the model calls it {name!r}, the instance {layer.name!r}")
        if layer.params and param_count(module) != layer.params:
            raise ModelError(
                f"layer {i} ({name}): the model has {param_count(module):,} parameters, the instance {layer.params:,}"
            )


def _reset(module: nn.Module) -> None:
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


def materialise_layer(layer: nn.Module, index: int, seed: int, device: torch.device) -> nn.Module:
    """Give a meta-device layer real storage on ``device`` and its seeded initial weights."""
    layer = layer.to_empty(device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + index)
        _reset(layer)
    return layer


def build_model(factory: Callable[[], nn.Module] | str, seed: int = 0, device: str = "cpu") -> nn.Module:
    """The whole model with the weights each rank materialises for its layers."""
    if isinstance(factory, str):
        factory = resolve_factory(factory)
    with torch.device("meta"):
        model = factory()
    for index, (name, layer) in enumerate(layers_of(model)):
        setattr(model, name, materialise_layer(layer, index, seed, torch.device(device)))
    return model


def meta_layers(model: nn.Module | Callable[[], nn.Module] | str) -> tuple[list[tuple[str, nn.Module]], Any]:
    """The layers to check before any process starts, and what the ranks receive."""
    if isinstance(model, nn.Module):
        return layers_of(model), model
    factory = resolve_factory(model) if isinstance(model, str) else model
    if not callable(factory):
        raise ModelError(f"model: expected an nn.Module or a factory, got {type(model).__name__}")
    try:
        with torch.device("meta"):
            built = factory()
    except Exception as exc:  # the user's code: said in one line, before any rank starts
        raise ModelError(f"model: the factory failed on the meta device ({type(exc).__name__}: {exc})") from None
    if not isinstance(built, nn.Module):
        raise ModelError(f"model: the factory returned {type(built).__name__}, not an nn.Module")
    return layers_of(built), model
