"""A pipeline stage: the layers one rank runs, under the model's own names.

A layer's name is a module path, dotted as ``named_modules`` gives it (``blocks.3``,
``model.layers.3``), or sibling modules joined by ``+`` (``transformer.wte+wpe`` holds
``transformer.wte`` and ``transformer.wpe``: the importer's name for GPT-2's two embeddings).

A :class:`Stage` holds the model's top-level modules, pruned to its own layers (the rest are
:class:`Absent`), so its parameters keep the model's names (``model.layers.3.mlp.up_proj.weight``)
and gradients, checkpoints and reports all speak of the same tensors. After each layer a stage
tells its ``observers`` the layer's name and output (what the rank measures).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .errors import ModelError

__all__ = ["Absent", "ChainStage", "Stage", "layer_paths", "layer_modules", "run_layer"]


def layer_paths(name: str) -> list[str]:
    """The module paths a layer name stands for (``a.b+c`` → ``a.b``, ``a.c``)."""
    first, *siblings = name.split("+")
    parent = first.rpartition(".")[0]
    return [first] + [f"{parent}.{sibling}" if parent else sibling for sibling in siblings]


def layer_modules(root: nn.Module, name: str) -> list[nn.Module]:
    """The modules of layer ``name`` in ``root``; ModelError naming a path that is not there."""
    modules = []
    for path in layer_paths(name):
        try:
            modules.append(root.get_submodule(path))
        except AttributeError:
            raise ModelError(f"layer {name!r}: the model has no module {path!r}") from None
    return modules


def run_layer(modules: Sequence[nn.Module], *inputs: Any) -> Any:
    """A layer's output: its first module on ``inputs``, each further module on the one before's."""
    value = modules[0](*inputs)
    for module in modules[1:]:
        value = module(value)
    return value


class Absent(nn.Module):
    """Where a layer of another rank was: no parameters, and an error if called."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise ModelError(f"layer {self.name!r} runs on another rank")

    def extra_repr(self) -> str:
        return repr(self.name)


class Stage(nn.Module):
    """The model's top-level modules (pruned to this stage's layers), and its layer names."""

    def __init__(self, root: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        for child_name, child in root.named_children():
            self.add_module(child_name, child)
        self.layer_names = list(names)
        self.observers: list[Callable[[str, Any], None]] = []

    def observe(self, name: str, value: Any) -> None:
        for observer in self.observers:
            observer(name, value)


class ChainStage(Stage):
    """Layers called in turn, each on the previous one's output (a layer of several modules
    calls them in turn too)."""

    def __init__(self, root: nn.Module, names: Sequence[str]) -> None:
        super().__init__(root, names)
        self._steps = [(name, layer_modules(root, name)) for name in names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, modules in self._steps:
            x = run_layer(modules, x)
            self.observe(name, x)
        return x
