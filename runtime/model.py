"""The model side of a run: one contract for what ``model`` may be, and its checks.

``model`` is one of

* an ``nn.Module``: its weights are the ones that run (each rank copies its own layers);
* a factory — a picklable callable, or ``"package.module:function"`` — that each rank calls
  for real (after ``torch.manual_seed(seed)``, so that every rank builds the same model): the
  weights it builds or loads are the weights that run; the rank keeps its own layers and frees
  the rest;
* a factory with ``checkpoint=``: built with its parameters on ``meta``, each rank reading
  only its own layers' tensors from the checkpoint (:mod:`layerfit.runtime.checkpoint`); every
  parameter and persistent buffer of the model must be there, with its shape, and nothing
  else — checked before any rank starts;
* a Hugging Face model directory (``config.json`` and ``*.safetensors``): transformers' causal
  LM, each rank reading its layers through transformers' own loader (:mod:`layerfit.runtime.hf`).

``init="random"`` (factories and Hugging Face directories) asks instead for seeded random
weights: ``torch.manual_seed(seed + layer index)`` and each module's ``reset_parameters()``
(for transformers models, their own ``_init_weights``); a module holding parameters with no
way to set them is an error naming it. Nothing ever runs on uninitialised memory.

Layers are named as the plan's instance names them: module paths (``model.layers.3``; see
:mod:`layerfit.runtime.stage`). Without an instance they are the model's children (a Hugging Face
model's: the importer's names, which an instance must then use too).
"""

from __future__ import annotations

import importlib
import pickle
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerfit import Instance

from .checkpoint import Checkpoint, check_keys
from .errors import ModelError
from .loading import (check_covered, keep_layers, layer_tensors, materialise, parameters_on_meta, reset_parameters,
                      tied_aliases)
from .source import Aliases, ModelSource, layers_of, random_weights
from .stage import layer_modules

__all__ = ["INITS", "ModelError", "ModelSource", "PreparedModel", "build_model", "check_layers", "layers_of",
           "param_count", "prepare_model", "resolve_factory", "resolve_model"]

INITS = ("random",)


def resolve_factory(spec: str) -> Callable[[], nn.Module]:
    """``"package.module:function"`` → the function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelError(f"model: expected 'package.module:function' or a Hugging Face model directory, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"model: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"model: {module_name!r} has no function {attr!r}")
    return factory


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class ModuleSource(ModelSource):
    module: nn.Module

    def skeleton(self) -> nn.Module:
        return self.module

    def load(self, root: nn.Module, names: Sequence[str], own: Sequence[int], aliases: Aliases, seed: int,
             device: torch.device) -> dict[str, Any]:
        # The module's tensors are the caller's (torch.multiprocessing shares them): copied, so
        # that training here never writes into the caller's model.
        materialise(root, [names[i] for i in own], lambda _, t: t.detach().clone(), device)
        return {}


@dataclass
class FactorySource(ModelSource):
    factory: Callable[[], nn.Module] | str
    checkpoint: str | None = None
    init: str | None = None

    def _call(self) -> nn.Module:
        factory = resolve_factory(self.factory) if isinstance(self.factory, str) else self.factory
        built = factory()
        if not isinstance(built, nn.Module):
            raise ModelError(f"model: the factory returned {type(built).__name__}, not an nn.Module")
        return built

    def skeleton(self) -> nn.Module:
        with parameters_on_meta(), warnings.catch_warnings():
            # A factory that loads its weights loads nothing into meta parameters: expected here,
            # where only the structure is read (each rank calls it for real).
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
            return self._call()

    def build(self, seed: int) -> nn.Module:
        if self.checkpoint is not None or self.init is not None:
            return self.skeleton()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # every rank builds the same model
            return self._call()

    @staticmethod
    def _wanted(root: nn.Module, names: Sequence[str], aliases: Aliases) -> dict:
        return {key: (aliases[key], tuple(t.shape), layer) for key, (layer, _, _, t, _) in layer_tensors(root, names).items()}

    def check(self, root: nn.Module, names: Sequence[str]) -> None:
        super().check(root, names)
        if self.checkpoint is not None:
            check_keys(Checkpoint(self.checkpoint), self._wanted(root, names, tied_aliases(root, names)))

    def load(self, root: nn.Module, names: Sequence[str], own: Sequence[int], aliases: Aliases, seed: int,
             device: torch.device) -> dict[str, Any]:
        mine = [names[i] for i in own]
        if self.init == "random":
            return random_weights(root, names, own, seed, device, reset_parameters)
        if self.checkpoint is None:  # built for real: the factory's own weights
            root.to(device)
            return {}
        checkpoint = Checkpoint(self.checkpoint)
        # The other layers' keys are the other ranks' (the whole file was checked before any rank started).
        chosen = check_keys(checkpoint, self._wanted(root, mine, aliases), ignored=lambda _: True)
        materialise(root, mine, lambda key, t: checkpoint.read(chosen[key]).to(dtype=t.dtype), device)
        return {"keys": checkpoint.read_keys, "bytes": checkpoint.read_bytes}


def resolve_model(model: Any, *, checkpoint: str | Path | None = None, init: str | None = None) -> ModelSource:
    """The source a model spec stands for (see the module docstring); ModelError if none."""
    from .hf import HFSource, is_hf_directory

    if init is not None and init not in INITS:
        raise ModelError(f"init: unknown initialisation {init!r} (allowed: {', '.join(INITS)})")
    if init is not None and checkpoint is not None:
        raise ModelError("init: random initialisation and a checkpoint exclude each other; give one")
    if isinstance(model, nn.Module):
        if checkpoint is not None or init is not None:
            which = "checkpoint" if checkpoint is not None else "init"
            raise ModelError(f"{which}: an nn.Module brings its own weights; give a factory to load or initialise them")
        return ModuleSource(model)
    if is_hf_directory(model):
        return HFSource(str(model), None if checkpoint is None else str(checkpoint), init)
    if isinstance(model, (str, Path)) and Path(model).is_dir():
        raise ModelError(f"model: {model} is a folder without a config.json (a Hugging Face model directory has one)")
    if callable(model) and not isinstance(model, str):
        try:  # each rank receives the factory itself
            pickle.dumps(model)
        except Exception as exc:
            raise ModelError(f"model: the factory cannot be sent to the ranks ({type(exc).__name__}: {exc}); define it "
                             "at module level, or give 'package.module:function'") from None
    if isinstance(model, str) or callable(model):
        return FactorySource(model, None if checkpoint is None else str(checkpoint), init)
    raise ModelError(f"model: expected an nn.Module, a factory or a Hugging Face model directory, got "
                     f"{type(model).__name__}")


@dataclass
class PreparedModel:
    """A model checked against its plan: what the ranks receive."""

    source: ModelSource
    names: list[str]
    shared: list[dict[str, int]] = field(default_factory=list)  # per tensor that layers share: its names → their layers

    def build_stage(self, own: Sequence[int], seed: int, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
        """The model pruned to the layers ``own``, with their weights on ``device``, and what
        was read to load them."""
        root = self.source.build(seed)
        aliases = tied_aliases(root, self.names)  # every name of a shared tensor, other ranks' layers included
        keep_layers(root, self.names, [self.names[i] for i in own])
        loaded = self.source.load(root, self.names, own, aliases, seed, device)
        return root, loaded


def check_layers(root: nn.Module, names: Sequence[str], num_layers: int | None, instance: Instance | None,
                 hint: str = "") -> None:
    """Raise ModelError unless the model's layers match the plan (and the instance, if given).

    Checked: the count; that each name is a module of the model, every parameter lies in a
    layer and no layer inside another; with an instance, the names and, where the instance
    gives ``params``, the parameter counts.
    """
    if instance is not None and num_layers is not None and instance.num_layers != num_layers:
        raise ModelError(f"instance: {instance.name!r} has {instance.num_layers} layers, the plan {num_layers}")
    if num_layers is not None and len(names) != num_layers:
        raise ModelError(f"model has {len(names)} layers, the plan {num_layers}{hint}")
    if instance is not None:
        if instance.num_layers != len(names):
            raise ModelError(f"instance: {instance.name!r} has {instance.num_layers} layers, the model {len(names)}")
        for i, (name, layer) in enumerate(zip(names, instance.layers)):
            if name != layer.name:
                raise ModelError(f"layer {i}: the model calls it {name!r}, the instance {layer.name!r}")
    counts = [sum(param_count(m) for m in layer_modules(root, name)) for name in names]
    check_covered(root, names)
    for i, (name, layer) in enumerate(zip(names, instance.layers if instance is not None else ())):
        if layer.params and counts[i] != layer.params:
            raise ModelError(f"layer {i} ({name}): the model has {counts[i]:,} parameters, the instance {layer.params:,}")


def prepare_model(model: Any, num_layers: int | None = None, instance: Instance | None = None, *,
                  checkpoint: str | Path | None = None, init: str | None = None) -> PreparedModel:
    """Resolve ``model`` and check it, before any process starts: against the plan's
    ``num_layers`` (and ``instance``), and its checkpoint or initialisation."""
    source = resolve_model(model, checkpoint=checkpoint, init=init)
    try:
        root = source.skeleton()
    except ModelError:
        raise
    except Exception as exc:  # the user's code: said in one line, before any rank starts
        raise ModelError(f"model: the factory failed on the meta device ({type(exc).__name__}: {exc})") from None
    names = source.layer_names(root, instance)
    check_layers(root, names, num_layers, instance, source.layers_hint)
    source.check(root, names)
    index = {name: i for i, name in enumerate(names)}
    layer_of = {key: index[layer] for key, (layer, *_) in layer_tensors(root, names).items()}
    groups = sorted({aliases for aliases in tied_aliases(root, names).values() if len(aliases) > 1})
    return PreparedModel(source, names, [{key: layer_of[key] for key in group} for group in groups])


def build_model(model: Any, *, checkpoint: str | Path | None = None, init: str | None = None, seed: int = 0,
                instance: Instance | None = None, device: str = "cpu") -> nn.Module:
    """The whole model with the weights the ranks hold for their layers, in one process: the
    reference that a pipelined run of it equals (a factory, with or without its checkpoint or
    ``init``, or a Hugging Face directory)."""
    if isinstance(model, nn.Module):
        raise ModelError("model: build_model builds from a factory or a Hugging Face directory; an nn.Module is built")
    prepared = prepare_model(model, None, instance, checkpoint=checkpoint, init=init)
    root, _ = prepared.build_stage(range(len(prepared.names)), seed, torch.device(device))
    return root
