"""What a model source is: where a rank's layers and their weights come from.

The contract every kind of ``model`` fulfils (:mod:`layerfit.runtime.model` lists the kinds;
:mod:`layerfit.runtime.hf` is the Hugging Face one), and the pieces they share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from layerfit import Instance

from .errors import ModelError
from .loading import Initialiser, check_resettable, initialise, materialise
from .stage import ChainStage, Stage

__all__ = ["Aliases", "ModelSource", "layers_of", "random_weights"]

Aliases = dict[str, tuple[str, ...]]


def layers_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers of a model in execution order, when no instance names them: its children."""
    children = list(model.named_children())
    if not children:
        raise ModelError(f"model: {type(model).__name__} has no child modules to use as layers")
    return children



class ModelSource:
    """Where a rank's layers and their weights come from (picklable: it travels to the ranks)."""

    init: str | None = None
    layers_hint = ""  # said when the plan's layer count is not the model's

    def skeleton(self) -> nn.Module:
        """The whole model, cheaply (parameters on meta), for the checks before any rank starts."""
        raise NotImplementedError

    def build(self, seed: int) -> nn.Module:
        """The whole model as a rank builds it, before it keeps its own layers."""
        return self.skeleton()

    def layer_names(self, root: nn.Module, instance: Instance | None) -> list[str]:
        return [layer.name for layer in instance.layers] if instance is not None else [n for n, _ in layers_of(root)]

    def check(self, root: nn.Module, names: Sequence[str]) -> None:
        """Refuse, before any rank starts, weights that cannot be loaded or set."""
        if self.init == "random":
            check_resettable(root, names)

    def load(self, root: nn.Module, names: Sequence[str], own: Sequence[int], aliases: Aliases, seed: int,
             device: torch.device) -> dict[str, Any]:
        """Give the layers ``own`` (indices into ``names``; the only ones ``root`` still holds)
        their weights on ``device``. Returns what was read from a checkpoint (``keys``, ``bytes``)."""
        raise NotImplementedError

    def stage(self, root: nn.Module, names: Sequence[str]) -> Stage:
        return ChainStage(root, names)

    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """The training loss when the caller gives none (None: mean squared error)."""
        return None

    def check_batch(self, inputs: torch.Tensor, target: torch.Tensor | None) -> None:
        """Refuse inputs (or a target) the model cannot take, naming which."""

    def run_instance(self, micro_batch: int, inputs: torch.Tensor, train: bool) -> Instance | None:
        """The model's instance at the run's own shapes, where the source can say (None: it cannot)."""
        return None


def random_weights(root: nn.Module, names: Sequence[str], own: Sequence[int], seed: int, device: torch.device,
                   initialiser: Initialiser) -> dict[str, Any]:
    """Seeded random weights for the layers ``own`` (see :func:`layerfit.runtime.loading.initialise`)."""
    mine = [names[i] for i in own]
    materialise(root, mine, lambda _, t: torch.empty_like(t, device="cpu"), torch.device("cpu"))
    initialise(root, mine, own, seed, initialiser)
    root.to(device)
    return {}
