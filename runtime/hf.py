"""Hugging Face causal LMs, as ``save_pretrained`` writes them, run as pipeline stages.

A directory with ``config.json`` and ``*.safetensors`` (sharded or not) is a model: the
runtime builds transformers' own model from the config (parameters on ``meta``), keeps a
rank's layers and reads only their tensors. The layers are those of
``from_hf_config(DIR/config.json, split="block")``, named after the model's modules:

* the Llama layout (``model.embed_tokens``, ``model.layers.i``, ``model.norm``, ``lm_head``):
  Llama, Mistral, Mixtral, Qwen2/3, Phi-3, OLMo 2, Gemma 2/3 and their kin;
* GPT-2's (``transformer.wte+wpe``, ``transformer.h.i``, ``transformer.ln_f``, ``lm_head``).

Token ids go in ([batch, sequence]), logits come out. A stage runs its layers as the model's
own forward runs them: it calls that forward with the decoder layers replaced by recorders,
which note the arguments each layer is given — the causal (or sliding-window) mask of the
model's attention implementation, positions from the sequence, rotary embeddings — and the
stage then calls its own layers with them. The head is the model's own too (transformers'
forward from the final hidden state: ``lm_head`` and, for Gemma, logit soft-capping). The
training loss is transformers' causal-LM loss, its labels shifted as transformers shifts them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import Checkpoint, refuse_unexpected
from .errors import ModelError
from .loading import Initialiser, layer_tensors, parameters_on_meta, tied_aliases
from .source import ModelSource, random_weights
from .stage import Stage, layer_modules

__all__ = ["CONFIG_FILE", "CausalLMStage", "HFSource", "Layout", "build_causal_lm", "causal_lm_loss", "hf_initialiser",
           "ignored_keys", "is_hf_directory", "layer_names", "layout_of", "load_config", "random_token_ids"]

CONFIG_FILE = "config.json"


def is_hf_directory(spec: Any) -> bool:
    """Whether ``spec`` names a folder holding a ``config.json``."""
    return isinstance(spec, (str, Path)) and Path(spec).is_dir() and (Path(spec) / CONFIG_FILE).is_file()


TRANSFORMERS = (5, 24)  # its loader's API (weight conversions, the loading report) as the runtime calls it


def _check_transformers() -> None:
    try:
        import transformers
    except ImportError:
        raise ModelError("model: a Hugging Face directory needs transformers >= 5.24 "
                         "(pip install 'layerfit[hf]')") from None
    found = tuple(int(part) for part in re.findall(r"\d+", transformers.__version__)[:2])
    if found < TRANSFORMERS:
        raise ModelError(f"model: a Hugging Face directory needs transformers >= 5.24, found {transformers.__version__}")


def load_config(directory: str | Path) -> Any:
    """transformers' config of the model in ``directory``; ModelError if it cannot be read."""
    _check_transformers()
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # transformers' own message, in one line
        raise ModelError(f"model: cannot read {Path(directory) / CONFIG_FILE} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def build_dtype(config: Any) -> torch.dtype:
    """The dtype the model runs in: its config's (as ``from_pretrained`` loads it), else fp32."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def build_causal_lm(config: Any) -> nn.Module:
    """transformers' causal LM for ``config``, parameters on ``meta``, in the config's dtype."""
    from transformers import AutoModelForCausalLM

    try:
        with parameters_on_meta():
            return AutoModelForCausalLM.from_config(config, dtype=build_dtype(config))
    except ValueError as exc:  # no causal-LM class for this model_type
        raise ModelError(f"model: transformers has no causal LM for model_type {config.model_type!r} "
                         f"({str(exc).splitlines()[0]})") from None


@dataclass(frozen=True)
class Layout:
    """Where a causal LM keeps its layers: the base model's attribute in the LM, its
    embeddings, the list of decoder layers and the final norm (then the LM's head)."""

    base: str
    embeddings: tuple[str, ...]
    blocks: str
    norm: str
    head: str = "lm_head"
    learned_positions: bool = False  # an embedding per position (GPT-2's wpe): no sequence longer than it

    @property
    def embedding(self) -> str:
        """The embedding layer's name: ``model.embed_tokens``, ``transformer.wte+wpe``."""
        return f"{self.base}." + "+".join(self.embeddings)

    def names(self, num_blocks: int) -> list[str]:
        return [self.embedding, *(f"{self.base}.{self.blocks}.{i}" for i in range(num_blocks)),
                f"{self.base}.{self.norm}", self.head]


LAYOUTS = (Layout("model", ("embed_tokens",), "layers", "norm"),
           Layout("transformer", ("wte", "wpe"), "h", "ln_f", learned_positions=True))


def layout_of(model: nn.Module) -> Layout:
    """The model's layout; ModelError when it has none of :data:`LAYOUTS`."""
    for layout in LAYOUTS:
        base = getattr(model, layout.base, None)
        if isinstance(base, nn.Module) and isinstance(getattr(model, layout.head, None), nn.Module) \
                and isinstance(getattr(base, layout.blocks, None), nn.ModuleList) \
                and all(isinstance(getattr(base, name, None), nn.Module) for name in (*layout.embeddings, layout.norm)):
            return layout
    raise ModelError(f"model: {type(model).__name__} has neither the Llama layout (model.embed_tokens, model.layers, "
                     "model.norm, lm_head) nor GPT-2's (transformer.wte, transformer.wpe, transformer.h, "
                     "transformer.ln_f, lm_head)")


def layer_names(model: nn.Module) -> list[str]:
    layout = layout_of(model)
    return layout.names(len(getattr(model.get_submodule(layout.base), layout.blocks)))


def hf_initialiser(model: nn.Module) -> Initialiser:
    """transformers' own initialisation of the model's modules (``_init_weights``)."""
    return model._init_weights  # type: ignore[no-any-return]


def ignored_keys(model: nn.Module) -> Any:
    """The checkpoint keys transformers itself ignores when loading this model (old
    checkpoints' rotary ``inv_freq``), as a predicate."""
    patterns = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ()]
    return (lambda key: any(p.search(key) for p in patterns)) if patterns else None


def causal_lm_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """transformers' causal-LM loss: cross-entropy of each position's logits against the next
    token of ``target`` (labels; -100 is ignored), averaged over the tokens."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    return ForCausalLMLoss(logits, target, vocab_size=logits.shape[-1])


def random_token_ids(config: Any, batch: int, seq_len: int, seed: int) -> torch.Tensor:
    """Seeded token ids, uniform over the vocabulary: [batch, seq_len]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, seq_len), generator=generator)


class _Recorded(Exception):
    """Raised by the final norm's stand-in: the model's forward has called every layer."""


class _Recorder(nn.Module):
    """Stands in for decoder layer ``index``: notes its arguments, passes the hidden state on."""

    def __init__(self, index: int, notes: dict[int, tuple[tuple, dict]]) -> None:
        super().__init__()
        self.index, self.notes = index, notes

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.notes[self.index] = (args, kwargs)
        return args[0]


class _Stop(nn.Module):
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise _Recorded


class _Zeros(nn.Module):
    """An embedding held by another rank, as the forward sees it: adds nothing."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=ids.device)


class _Hidden:
    """The base model's outputs as the head reads them: the final hidden state, nothing else
    (a cache, router logits or cross-attentions: None)."""

    def __init__(self, hidden: torch.Tensor) -> None:
        self.last_hidden_state = hidden

    def __getattr__(self, name: str) -> None:  # only for the attributes it lacks
        return None

    def __getitem__(self, index: int) -> torch.Tensor:
        return (self.last_hidden_state,)[index]


class _Given(nn.Module):
    """The base model, for the head: the final hidden state is given."""

    def forward(self, *args: Any, inputs_embeds: torch.Tensor, **kwargs: Any) -> _Hidden:
        return _Hidden(inputs_embeds)


def _with_modules(module: nn.Module, replaced: dict[str, nn.Module]) -> nn.Module:
    """A shallow copy of ``module`` (the same parameters, buffers and forward) whose
    submodules ``replaced`` are others; the original is untouched."""
    twin = copy.copy(module)
    twin._modules = {**module._modules, **replaced}
    return twin


class CausalLMStage(Stage):
    """A stage of a transformers causal LM: some of its embedding, decoder layers, final norm
    and head (see the module docstring)."""

    def __init__(self, root: nn.Module, names: Sequence[str]) -> None:
        super().__init__(root, names)
        layout = layout_of(root)
        base = root.get_submodule(layout.base)
        blocks = getattr(base, layout.blocks)
        own = set(names)
        self._embedding = layout.embedding if layout.embedding in own else None
        prefix = f"{layout.base}.{layout.blocks}."
        self._blocks = [(name, int(name[len(prefix):]), layer_modules(root, name)[0])
                        for name in names if name.startswith(prefix)]
        norm = f"{layout.base}.{layout.norm}"
        self._norm = (norm, layer_modules(root, norm)[0]) if norm in own else None
        self._head = layout.head if layout.head in own else None
        self._notes: dict[int, tuple[tuple, dict]] = {}
        recorders = nn.ModuleList(_Recorder(i, self._notes) for i in range(len(blocks)))
        absent = {} if self._embedding else {name: _Zeros() for name in layout.embeddings}
        # Plain attributes, not submodules: their parameters are the stage's own, counted once.
        self.__dict__["_recorder"] = _with_modules(base, {layout.blocks: recorders, layout.norm: _Stop(), **absent})
        self.__dict__["_head_model"] = _with_modules(root, {layout.base: _Given()})

    def train(self, mode: bool = True) -> "CausalLMStage":
        super().train(mode)
        for twin in (self._recorder, self._head_model):  # their own flags; their modules are the stage's
            twin.train(mode)
        return self

    def _record(self, x: torch.Tensor) -> dict[int, tuple[tuple, dict]]:
        """The arguments the model's forward gives each decoder layer for this input."""
        self._notes.clear()
        inputs = {"input_ids": x} if self._embedding else {"inputs_embeds": x.detach()}
        try:
            self._recorder(**inputs, use_cache=False)
        except _Recorded:
            pass
        else:
            raise ModelError("model: the forward never reached the final norm")
        calls = dict(self._notes)
        self._notes.clear()  # not kept past this micro-batch: they hold its embeddings (and their graph)
        return calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self._embedding or self._blocks:
            calls = self._record(x)
            if self._embedding:
                h = calls[0][0][0]  # what the first decoder layer is given: the embeddings' output
                self.observe(self._embedding, h)
            for name, index, block in self._blocks:
                args, kwargs = calls[index]
                h = block(h, *args[1:], **kwargs)
                self.observe(name, h)
        if self._norm:
            h = self._norm[1](h)
            self.observe(self._norm[0], h)
        if self._head:
            h = self._head_model(inputs_embeds=h, use_cache=False).logits
            self.observe(self._head, h)
        return h


class _Lazy:
    """A checkpoint tensor that transformers' loader reads only if it loads it."""

    def __init__(self, checkpoint: Checkpoint, key: str) -> None:
        self.checkpoint, self.key = checkpoint, key

    @property
    def shape(self) -> tuple[int, ...]:
        return self.checkpoint.shape(self.key)

    def get_shape(self) -> list[int]:
        return list(self.shape)

    def __getitem__(self, index: Any) -> torch.Tensor:
        return self.checkpoint.read(self.key)[index]


def _transformers_load(model: nn.Module, tensors: dict[str, Any], device: str) -> Any:
    """transformers' own loader (key renames, fused experts, dtype casts) on ``tensors``; its
    report of missing, unexpected and mis-shaped keys."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import convert_and_load_state_dict_in_model
    from transformers.modeling_utils import LoadStateDictConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    config = LoadStateDictConfig(device_map={"": device}, weight_mapping=get_model_conversion_mapping(model))
    info, _ = convert_and_load_state_dict_in_model(model=model, state_dict=tensors, load_config=config)
    return info


@dataclass
class HFSource(ModelSource):
    """A Hugging Face model directory (and its weights: the directory's, or ``checkpoint``)."""

    directory: str
    checkpoint: str | None = None
    init: str | None = None
    layers_hint = "; a Hugging Face model runs plans of whole blocks (from_hf_config with split='block')"

    @property
    def weights(self) -> str:
        return self.checkpoint or self.directory

    @cached_property
    def config(self) -> Any:
        return load_config(self.directory)

    @cached_property
    def layout(self) -> Layout:
        return layout_of(self.skeleton())

    def skeleton(self) -> nn.Module:
        return build_causal_lm(self.config)

    def layer_names(self, root: nn.Module, instance: Any) -> list[str]:
        self.layout = layout_of(root)  # known now: no second model is built for it (check_batch)
        return layer_names(root)

    def loss_fn(self) -> Any:
        return causal_lm_loss

    def check_batch(self, inputs: torch.Tensor, target: torch.Tensor | None) -> None:
        """Token ids [batch, sequence] within the vocabulary and the model's positions; a target
        (labels: token ids, -100 ignored) of the same shape."""
        config = self.config
        for where, tensor in (("inputs", inputs), ("target", target)):
            if tensor is None:
                continue
            if tensor.dim() != 2 or tensor.dtype not in (torch.int64, torch.int32):
                raise ModelError(f"{where}: a Hugging Face causal LM takes token ids [batch, sequence] as a LongTensor, "
                                 f"got {str(tensor.dtype).removeprefix('torch.')} of shape {list(tensor.shape)}")
            if tensor.shape != inputs.shape:
                raise ModelError(f"{where}: shape {list(tensor.shape)}, the inputs' {list(inputs.shape)}")
            ids = tensor[tensor != -100] if where == "target" else tensor
            if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < config.vocab_size:
                bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
                raise ModelError(f"{where}: token id {bad} is outside the vocabulary (0 to {config.vocab_size - 1})")
        field = "n_positions" if hasattr(config, "n_positions") else "max_position_embeddings"
        positions = getattr(config, field, None)
        if self.layout.learned_positions and positions and inputs.shape[1] > positions:
            raise ModelError(f"inputs: sequences of {inputs.shape[1]} tokens, beyond the model's {positions} learned "
                             f"positions (config.{field})")

    def run_instance(self, micro_batch: int, inputs: torch.Tensor, train: bool) -> Any:
        """``from_hf_config`` of the directory's config at the run's micro-batch and sequence
        length, in the model's dtype (None when the importer does not read this model type)."""
        from layerfit import InstanceError, from_hf_config

        dtype = _DTYPE_NAMES.get(build_dtype(self.config))
        try:
            return from_hf_config(Path(self.directory) / CONFIG_FILE, batch_size=micro_batch, seq_len=inputs.shape[1],
                                  dtype=dtype, mode="training" if train else "inference")
        except InstanceError:
            return None

    def stage(self, root: nn.Module, names: Sequence[str]) -> Stage:
        return CausalLMStage(root, names)

    def check(self, root: nn.Module, names: Sequence[str]) -> None:
        """transformers' loader, run on ``meta`` over every tensor of the checkpoint: each of the
        model's tensors must come from it, with its shape, and nothing else be there."""
        if self.init == "random":
            return  # transformers initialises every module it builds; the ranks check each parameter
        checkpoint = Checkpoint(self.weights)
        model = self.skeleton()  # loaded into, so not the caller's
        aliases = tied_aliases(model, names)
        layer_of = {key: layer for key, (layer, *_) in layer_tensors(model, names).items()}
        info = _transformers_load(model, {k: torch.empty(checkpoint.shape(k), device="meta") for k in checkpoint.keys()},
                                  "meta")
        self._check_report(info, checkpoint, layer_of, aliases, model)

    def _check_report(self, info: Any, checkpoint: Checkpoint, layer_of: dict[str, str],
                      aliases: dict[str, tuple[str, ...]], model: nn.Module, own: Sequence[str] | None = None) -> None:
        """ModelError naming the first mis-shaped, missing (of ``own`` keys, default all; ``layer_of``
        names their layers) or unexpected key, or conversion error, in transformers' loading report
        ``info``."""
        where = checkpoint.path
        for key, found, wanted in sorted(info.mismatched_keys):
            raise ModelError(f"checkpoint: {key!r} has shape {list(found)} in {where}, the model {list(wanted)}")
        loaded = set(aliases) - set(info.missing_keys)
        missing = [key for key in (own or aliases) if key in info.missing_keys and not loaded & set(aliases[key])]
        if missing:
            raise ModelError(f"checkpoint: no tensor {missing[0]!r} (layer {layer_of[missing[0]]!r}) in {where}")
        for key, message in sorted(info.conversion_errors.items()):
            raise ModelError(f"checkpoint: {key!r} in {where} could not be converted ({message})")
        if own is None:
            ignored = ignored_keys(model)
            refuse_unexpected(sorted(key for key in info.unexpected_keys if not (ignored and ignored(key))), where)

    def load(self, root: nn.Module, names: Sequence[str], own: Sequence[int], aliases: dict[str, tuple[str, ...]],
             seed: int, device: torch.device) -> dict[str, Any]:
        if self.init == "random":
            return random_weights(root, names, own, seed, device, hf_initialiser(root))
        mine = [names[i] for i in own]
        layer_of = {key: layer for key, (layer, *_) in layer_tensors(root, mine).items()}
        keys = list(layer_of)
        checkpoint = Checkpoint(self.weights)
        tensors = {k: _Lazy(checkpoint, k) for k in checkpoint.keys()}
        # A tensor two layers share is stored once (a tied head: under the embedding's name).
        # A rank that holds it under no stored name reads it under another; a rank that holds
        # it twice makes its names one tensor again after loading.
        groups = {aliases[k] for k in keys if len(aliases[k]) > 1}
        for group in groups:
            mine_in_group = [k for k in group if k in keys]
            stored = [k for k in group if k in checkpoint]
            if stored and not set(mine_in_group) & set(stored):
                tensors[mine_in_group[0]] = _Lazy(checkpoint, stored[0])
        info = _transformers_load(root, tensors, "cpu")
        self._check_report(info, checkpoint, layer_of, aliases, root, own=keys)
        for group in groups:
            mine_in_group = [k for k in group if k in keys]
            loaded = next(k for k in mine_in_group if k not in info.missing_keys)
            tensor = root.get_parameter(loaded)
            for key in mine_in_group:
                owner, _, attr = key.rpartition(".")
                root.get_submodule(owner)._parameters[attr] = tensor
        root.to(device)
        return {"keys": checkpoint.read_keys, "bytes": checkpoint.read_bytes}
