"""An instance of any transformers architecture, read from the model itself: :func:`from_hf_model`.

``from_hf_config`` (no torch) knows a few families' layouts and formulas; ``from_hf_model``
builds transformers' own model from the config, with its parameters on the ``meta`` device
(nothing allocated), and reads everything else from it:

* **layers** from its module tree: every block of a ``ModuleList`` of repeated blocks
  (``model.layers.3``), and the modules around them that hold parameters, each the largest
  such module outside the blocks (``model.embed_tokens``, ``model.norm``, ``lm_head``);
  modules of one parent that run one after another before a block are one layer, named with
  ``+`` (GPT-2's ``transformer.wte+wpe``). So a causal LM gets exactly ``from_hf_config``'s
  layers. Layers are in execution order (a module whose weight the forward reads without
  calling it, as Whisper's positions, is placed where it is read).
* **parameters** exact: each layer's module's parameters; a parameter two layers hold (a head
  tied to its embedding) is a tied group, counted once.
* **edges** (a DAG) from the data flow, when it is not a chain: a layer depends on another
  when an operation inside it reads a tensor computed from the other's outputs (T5's and
  Whisper's decoder blocks read the encoder's output in their cross-attention).
* **bytes** from one forward in which nothing is allocated (``FakeTensorMode``, the weights
  fake CPU tensors, attention ``sdpa``), per layer: its output (what later layers read of it,
  each storage once; the last layer's, its own output); in training what autograd saves for
  the backward pass inside it (each storage once, parameters and their views excluded;
  tensors saved between two layers, as a dropout's mask or the loss's log-probabilities
  after the head, count to the layer before); with ``kv_cache=True`` the cache entries the
  layer writes, as transformers' cache holds them after a prefill of ``seq_len`` tokens (a
  sliding-window layer keeps all of them until the next step trims it to its window; an
  encoder–decoder's blocks their cross-attention's keys and values too); and its workspace
  (``buffer_bytes``): the peak of the tensor storages its operators (and those run after it,
  before the next layer) allocate beyond what is still held when it ends (its outputs and
  saved tensors). Training runs the model's own loss (labels: the input ids; a causal LM's, a
  seq2seq LM's, a classifier's).

Fake tensors have no values, and transformers reads values in two places; each is set as real
data decides it (:func:`_as_on_real_data`): no packed sequences (so no mask is built, and SDPA
runs causal), and fused experts in fp32 or fp16 through transformers' own grouped-product
fallback. The measurement equals a real CPU forward's (``tests/test_hf_activations.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import weakref
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from layerfit import Constraints, Instance, Layer, TiedGroup, Training
from layerfit.model.memory import partition_bytes

from .errors import ModelError
from .hf import CONFIG_FILE, TRANSFORMERS
from .loading import parameters_on_meta

__all__ = ["from_hf_model"]

MODES = ("inference", "training")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_CONFIG_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def from_hf_model(
    config_or_dir: Any,
    *,
    batch_size: int,
    seq_len: int,
    dtype: str | None = None,
    mode: str = "inference",
    kv_cache: bool = False,
    split: str = "block",
    capacity: int | str | None = None,
    name: str | None = None,
) -> Instance:
    """An :class:`~layerfit.Instance` of the transformers model ``config_or_dir`` describes,
    measured from the model itself (see the module docstring).

    Parameters
    ----------
    config_or_dir:
        A ``config.json`` path, a directory holding one, its contents as a dict, or a
        transformers ``PretrainedConfig``.
    batch_size, seq_len:
        The batch and the sequence length (the decoder's, for an encoder–decoder, whose encoder
        reads ``seq_len`` tokens too; Whisper's encoder its config's fixed frames; a vision model
        sees its image's patches, and ``seq_len`` must be their number).
    dtype:
        ``fp32``, ``bf16`` or ``fp16``: the weights and activations; default the config's.
    mode:
        ``"inference"`` (outputs held) or ``"training"`` (saved activations, with the model's
        loss, and mixed-precision Adam state).
    kv_cache:
        Hold the keys and values each block caches for ``seq_len`` positions (inference).
    split:
        ``"block"`` only: sub-layers (attention, MLP) are ``from_hf_config``'s
        ``split="sublayer"``; here they are refused: which norm belongs to which sub-layer, and
        where the residual sums fall, is each family's layout (Llama's norm before its MLP is
        Gemma's after its attention), which the module tree does not say.
    capacity:
        The partition capacity; default the whole model's footprint (one partition).

    Raises
    ------
    ModelError
        For an option or config that cannot be used (naming it), or without transformers.
    """
    _check_transformers()
    batch_size = _positive(batch_size, "batch_size")
    seq_len = _positive(seq_len, "seq_len")
    if mode not in MODES:
        raise ModelError(f"mode: unknown mode {mode!r} (allowed: {', '.join(MODES)})")
    if split != "block":
        from layerfit.interop.hf_families import FAMILIES

        raise ModelError(f"split: from_hf_model reads whole blocks, got {split!r}; for attention and MLP apart use "
                         f"from_hf_config(..., split='sublayer') (model_type {', '.join(FAMILIES)})")
    if not isinstance(kv_cache, bool):
        raise ModelError(f"kv_cache: expected true or false, got {kv_cache!r}")
    if kv_cache and mode == "training":
        raise ModelError("kv_cache: a KV cache is kept for inference, not with mode 'training'")
    config, stem = _config(config_or_dir)
    if dtype is None:
        found = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        found = str(found).removeprefix("torch.") if found is not None else None
        if found not in _CONFIG_DTYPES:
            raise ModelError(f"config.dtype: cannot tell the dtype from {found!r}; pass dtype=")
        dtype = _CONFIG_DTYPES[found]
    else:
        spelled = _CONFIG_DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype  # layerfit's or HF's
        if spelled not in _DTYPES:
            raise ModelError(f"dtype: from_hf_model measures fp32, bf16 or fp16, got {dtype!r} (quantized weights: "
                             "from_hf_config)")
        dtype = spelled
    training = mode == "training"
    model, kind = _build(config, _DTYPES[dtype])
    model.train(training)
    blocks = _blocks(model)
    units = _units(model, blocks)
    inputs = _inputs(model, config, kind, batch_size, seq_len, training, kv_cache)
    flow = _forward(model, units, inputs, training, kv_cache)
    layers, edges, tied = _layers(model, units, blocks, flow)
    if edges is not None and tied:
        # A DAG instance takes no tied groups yet: each holder counts the shared weight.
        tied_note = ", tied weights counted in each layer that holds them (a DAG takes no tied groups yet)"
        tied = ()
    else:
        tied_note = ""
    instance_name = name or stem
    attention = getattr(model.config, "_attn_implementation", None) or "default"
    description = (f"{config.model_type} built by transformers ({type(model).__name__}, {attention} attention) from "
                   f"its config ({stem}): batch {batch_size}, sequence {seq_len}, {dtype}, {mode}" + (", KV cache" if kv_cache else "")
                   + ", measured on fake tensors (layerfit.runtime.from_hf_model)" + tied_note)
    kwargs: dict[str, Any] = dict(name=instance_name, layers=tuple(layers), dtype=dtype,
                                  training=Training("adam") if training else None,
                                  constraints=Constraints(tied=tuple(tied)),
                                  edges=tuple(edges) if edges is not None else None)
    whole = Instance(capacity=1, **kwargs)
    chosen = capacity if capacity is not None else partition_bytes(whole, range(len(layers)), 0, 1)
    return Instance(capacity=chosen, description=description, **kwargs)


def _check_transformers() -> None:
    try:
        import transformers
    except ImportError:
        raise ModelError("from_hf_model: needs transformers >= 5.24 (pip install 'layerfit[hf]')") from None
    found = tuple(int(part) for part in re.findall(r"\d+", transformers.__version__)[:2])
    if found < TRANSFORMERS:
        raise ModelError(f"from_hf_model: needs transformers >= 5.24, found {transformers.__version__} "
                         "(pip install 'layerfit[hf]')")


def _positive(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{where}: must be a positive integer, got {value!r}")
    return value


def _config(spec: Any) -> tuple[Any, str]:
    """transformers' config of ``spec``, and the instance's default name."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(spec, PretrainedConfig):  # named after the folder it was read from, if any
        return spec, Path(str(getattr(spec, "_name_or_path", "") or "")).name or spec.model_type
    if isinstance(spec, Mapping):
        raw, stem = dict(spec), str(spec.get("_name_or_path") or spec.get("model_type") or "model")
    elif isinstance(spec, (str, Path)):
        path = Path(spec)
        if path.is_dir():
            path = path / CONFIG_FILE
        if not path.is_file():
            raise ModelError(f"config: no such file {str(path)!r}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"config: cannot read {path} ({exc})") from None
        if not isinstance(raw, dict):
            raise ModelError(f"config: {path}: expected a JSON object, got {type(raw).__name__}")
        stem = path.parent.name if path.name == CONFIG_FILE and path.parent.name else path.stem
    else:
        raise ModelError(f"config: expected a config.json path, a directory, a dict or a PretrainedConfig, "
                         f"got {type(spec).__name__}")
    model_type = raw.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ModelError(f"config.model_type: missing or not a string ({model_type!r})")
    try:
        return AutoConfig.for_model(model_type, **raw), stem
    except (ValueError, KeyError) as exc:
        raise ModelError(f"config.model_type: transformers does not know {model_type!r} "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


# Which model a config is built as: the first auto class that has it. BERT-like encoders are
# built as their backbone (from_hf_config's BertModel), not as a causal LM.
_BACKBONE_TYPES = {"bert"}
_AUTO = ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModelForSpeechSeq2Seq", "AutoModelForImageClassification",
         "AutoModel")


def _build(config: Any, dtype: torch.dtype) -> tuple[nn.Module, str]:
    """transformers' model for ``config`` and the auto class that built it, parameters on
    ``meta``; sdpa attention and grouped matrix products for fused experts (shapes known
    without the data) where the model takes them, else its own defaults."""
    import transformers

    if config.model_type in _BACKBONE_TYPES:
        classes: tuple[str, ...] = ("AutoModel",)
    elif getattr(config, "is_encoder_decoder", False):  # not its decoder alone (WhisperForCausalLM)
        classes = tuple(c for c in _AUTO if c != "AutoModelForCausalLM")
    else:
        classes = _AUTO
    for cls_name in classes:
        auto = getattr(transformers, cls_name)
        if type(config) not in auto._model_mapping:
            continue
        attempts = ({"attn_implementation": "sdpa", "experts_implementation": "grouped_mm"},
                    {"attn_implementation": "sdpa"}, {})  # what the model supports, best first
        for extra in attempts:
            fresh = config.__class__.from_dict(config.to_dict())  # the caller's config stays as it was
            try:
                with parameters_on_meta():
                    return auto.from_config(fresh, dtype=dtype, **extra), cls_name
            except ValueError as exc:  # an implementation it does not take: the next attempt
                failure: Exception = exc
            except Exception as exc:  # the config itself: transformers' own words
                failure = exc
                break
        text = str(failure).splitlines()[0] if str(failure) else ""
        raise ModelError(f"config: transformers cannot build {cls_name} from it ({type(failure).__name__}: {text})")
    raise ModelError(f"config.model_type: transformers has no model for {config.model_type!r}")


def _blocks(model: nn.Module) -> dict[str, list[str]]:
    """The lists of repeated blocks (outermost ``ModuleList`` of modules of one class that hold
    parameters): their path, and their blocks' paths."""
    found: dict[str, list[str]] = {}
    for path, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(path.startswith(f"{prefix}.") for names in found.values() for prefix in names):
            continue  # inside a block
        kinds = {type(child) for child in module}
        if len(kinds) == 1 and any(True for _ in module.parameters()):
            found[path] = [f"{path}.{i}" for i in range(len(module))]
    if not found:
        raise ModelError(f"model: {type(model).__name__} has no list of repeated blocks (a ModuleList of one class)")
    return found


def _units(model: nn.Module, blocks: dict[str, list[str]]) -> dict[str, nn.Module]:
    """The blocks, and outside them the largest modules that hold parameters and no block."""
    block_names = {name for names in blocks.values() for name in names}
    holding = set()  # modules that contain a block: never a unit themselves
    for name in block_names:
        parts = name.split(".")
        holding.update(".".join(parts[:i]) for i in range(len(parts)))
    units: dict[str, nn.Module] = {}
    for path, module in model.named_modules():
        if not path or path in holding:
            continue
        parent = path.rpartition(".")[0]
        if parent not in holding:
            continue  # inside a unit (or a block)
        if path in block_names or any(True for _ in module.parameters()):
            units[path] = module
    owned = {id(p) for module in units.values() for p in module.parameters()}
    orphans = [n for n, p in model.named_parameters() if id(p) not in owned]
    if orphans:
        raise ModelError(f"model: parameter {orphans[0]!r} belongs to no layer (held by a module that also holds blocks)")
    return units


def _inputs(model: nn.Module, config: Any, kind: str, b: int, s: int, training: bool, kv_cache: bool) -> dict[str, Any]:
    """The keyword arguments of one forward: token ids (and labels when training), the decoder's
    for an encoder–decoder, Whisper's mel frames, a vision model's pixels."""
    main = getattr(model, "main_input_name", "input_ids")
    inputs: dict[str, Any] = {}
    vocab = getattr(config, "vocab_size", None)
    if main == "input_ids":
        positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        field = "n_positions" if getattr(config, "n_positions", None) else "max_position_embeddings"
        learned = config.model_type in ("gpt2", "bert", "roberta", "opt", "whisper")
        if learned and positions and s > positions:
            raise ModelError(f"seq_len: {s} tokens, beyond the model's {positions} learned positions (config.{field})")
        inputs["input_ids"] = torch.zeros(b, s, dtype=torch.long)
    elif main == "input_features":
        frames = 2 * config.max_source_positions
        inputs["input_features"] = torch.zeros(b, config.num_mel_bins, frames)
    elif main == "pixel_values":
        size, patch = config.image_size, config.patch_size
        tokens = (size // patch) ** 2 + 1
        if s != tokens:
            raise ModelError(f"seq_len: {config.model_type} sees {tokens} tokens for images of {size} × {size} in "
                             f"patches of {patch} ({tokens - 1} patches and a class token), got {s}")
        inputs["pixel_values"] = torch.zeros(b, getattr(config, "num_channels", 3), size, size)
    else:
        raise ModelError(f"model: {type(model).__name__} takes {main!r}, which from_hf_model cannot make")
    if kind in ("AutoModelForSeq2SeqLM", "AutoModelForSpeechSeq2Seq"):
        if kind == "AutoModelForSpeechSeq2Seq" and s > config.max_target_positions:
            raise ModelError(f"seq_len: {s} tokens, beyond the decoder's {config.max_target_positions} learned "
                             f"positions (config.max_target_positions)")
        inputs["decoder_input_ids"] = torch.zeros(b, s, dtype=torch.long)
    if training and kind != "AutoModel":
        if kind == "AutoModelForImageClassification":
            inputs["labels"] = torch.zeros(b, dtype=torch.long)
        else:
            inputs["labels"] = torch.zeros(b, s, dtype=torch.long)
    if kind != "AutoModelForImageClassification" and vocab is not None and kind != "AutoModel":
        inputs["use_cache"] = kv_cache
    elif kv_cache:
        raise ModelError(f"kv_cache: {type(model).__name__} keeps no KV cache")
    return inputs


@dataclasses.dataclass
class _Flow:
    """What one forward measured, per unit (by its path)."""

    order: list[str]
    outputs: dict[str, int]
    sent: dict[str, dict[int, int]]  # unit → {storage: bytes} later units read of its outputs
    saved: dict[str, int]
    workspace: dict[str, int]
    cache: dict[str, int]
    edges: dict[tuple[str, str], None]


class _Tracer(TorchDispatchMode):
    """Follows where tensors come from: each operation's outputs come from the unit running it,
    or (between units) from wherever its inputs came; counts what a unit reads of another's,
    its storages' peak, and the order units first run (or have their weights read)."""

    def __init__(self, units: dict[str, nn.Module], flow: _Flow) -> None:
        super().__init__()
        self.flow = flow
        self.current: str | None = None
        self.origins: dict[int, tuple[Any, frozenset[str]]] = {}  # id → (a weak reference, its units)
        self.param_unit: dict[int, str] = {}
        for name, module in units.items():
            for p in module.parameters():
                self.param_unit.setdefault(id(p), name)  # a tied weight: its first holder's
        self.kept: list[Any] = []  # the storages read across units, alive: their keys stay theirs
        self.accounting: str | None = None  # the unit whose storages are counted: running, or the last run
        self.live = self.peak = 0
        self.live_keys: set[int] = set()

    def enter(self, unit: str) -> None:
        self.close()
        self.current = self.accounting = unit
        if unit not in self.flow.order:
            self.flow.order.append(unit)

    def leave(self) -> None:
        """The unit's call ends; what runs until the next unit's still counts to its workspace
        (a dropout after the embeddings, the loss after the head)."""
        self.current = None

    def close(self) -> None:
        """The workspace of the unit accounted so far: its storages' peak beyond those still held."""
        if self.accounting is not None:
            unit = self.accounting
            self.flow.workspace[unit] = max(self.flow.workspace.get(unit, 0), self.peak - self.live)
        self.accounting = None
        self.live = self.peak = 0
        self.live_keys = set()

    def origin(self, t: torch.Tensor) -> frozenset[str]:
        """The units ``t`` was computed from (none for inputs, weights and buffers)."""
        ref, units = self.origins.get(id(t), (None, frozenset()))
        return units if ref is not None and ref() is t else frozenset()

    def _free(self, key: int, nbytes: int) -> None:
        if key in self.live_keys:
            self.live_keys.discard(key)
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        sources: set[str] = set()
        read: set[int] = set()  # the inputs' storages: an output on one of them (a view) is not new
        for t in tree_leaves((args, kwargs)):
            if not isinstance(t, torch.Tensor):
                continue
            read.add(t.untyped_storage()._cdata)
            unit = self.param_unit.get(id(t))
            if unit is not None and self.current is None and unit not in self.flow.order:
                self.flow.order.append(unit)  # a weight read where its module is not called
            found = self.origin(t)
            if found:
                sources |= found
                if self.current is not None:
                    for producer in found - {self.current}:
                        self.flow.edges[(producer, self.current)] = None
                        storage = t.untyped_storage()
                        sent = self.flow.sent.setdefault(producer, {})
                        if storage._cdata not in sent:
                            sent[storage._cdata] = storage.nbytes()
                            self.kept.append(storage)
        tag = frozenset({self.current}) if self.current is not None else frozenset(sources)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                if tag:
                    self.origins[id(t)] = (weakref.ref(t), tag)
                if self.accounting is not None:
                    storage = t.untyped_storage()
                    key, nbytes = storage._cdata, storage.nbytes()
                    if nbytes and key not in self.live_keys and key not in read:
                        self.live_keys.add(key)
                        self.live += nbytes
                        self.peak = max(self.peak, self.live)
                        weakref.finalize(storage, self._free, key, nbytes)
        return out


def _storages_bytes(value: Any) -> int:
    seen: dict[int, int] = {}
    for t in tree_leaves(value):
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            seen[storage._cdata] = storage.nbytes()
    return sum(seen.values())


def _forward(model: nn.Module, units: dict[str, nn.Module], inputs: dict[str, Any], training: bool,
             kv_cache: bool) -> _Flow:
    """One forward on fake tensors (the weights made fake CPU tensors), measured per unit."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    flow = _Flow([], {}, {}, {}, {}, {}, {})
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        _fake_weights(model)
        fake_inputs = {k: (mode.from_tensor(v) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    params = {id(p) for p in model.parameters()}
    tracer = _Tracer(units, flow)
    saved_keys: dict[str, set[int]] = {}
    last: list[str] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        owner = tracer.current or (last[-1] if last else None)
        if owner is not None and id(base) not in params and id(t) not in params:
            storage = t.untyped_storage()
            keys = saved_keys.setdefault(owner, set())
            if storage._cdata not in keys:
                keys.add(storage._cdata)
                flow.saved[owner] = flow.saved.get(owner, 0) + storage.nbytes()
        return t

    def pre(unit: str):  # type: ignore[no-untyped-def]
        def hook(_module, _args):  # type: ignore[no-untyped-def]
            tracer.enter(unit)
        return hook

    def post(unit: str):  # type: ignore[no-untyped-def]
        def hook(_module, _args, out):  # type: ignore[no-untyped-def]
            flow.outputs[unit] = flow.outputs.get(unit, 0) + _storages_bytes(out)
            tracer.leave()
            last.append(unit)
        return hook

    handles = []
    for unit, module in units.items():
        handles.append(module.register_forward_pre_hook(pre(unit)))
        handles.append(module.register_forward_hook(post(unit)))
    try:
        with ExitStack() as stack:
            stack.enter_context(_as_on_real_data(model))
            stack.enter_context(mode)
            stack.enter_context(tracer)
            stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
            stack.enter_context(torch.set_grad_enabled(training))
            try:
                out = model(**fake_inputs)
                tracer.close()
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(f"model: the forward of {type(model).__name__} failed on fake tensors "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        for handle in handles:
            handle.remove()
    if kv_cache:
        cache = getattr(out, "past_key_values", None)
        for t in {id(t): t for t in tree_leaves(_cache_tensors(cache))}.values():
            for unit in tracer.origin(t):
                flow.cache[unit] = flow.cache.get(unit, 0) + t.untyped_storage().nbytes()
    return flow


@contextlib.contextmanager
def _as_on_real_data(model: nn.Module) -> Iterator[None]:
    """transformers decides two things from the data that fake tensors do not have; each is set
    as real token ids would decide it. A batch without an attention mask is checked for packed
    sequences (position ids restarting): ours are one sequence a row, so no mask is built and
    sdpa runs causal, as on real ids. Fused experts in fp32 or fp16 go through transformers' own
    grouped-product fallback: torch's grouped_mm has a shape kernel for bf16 only (the fallback
    saves what it saves: the input and the weight)."""
    from transformers import masking_utils

    patches: list[tuple[Any, str, Any]] = []
    if hasattr(masking_utils, "find_packed_sequence_indices"):
        patches.append((masking_utils, "find_packed_sequence_indices", lambda position_ids: None))
    try:
        from transformers.integrations import moe
    except ImportError:  # pragma: no cover - every supported transformers has it
        moe = None
    if moe is not None and hasattr(moe, "_can_use_grouped_mm") \
            and not {p.dtype for p in model.parameters()} <= {torch.bfloat16}:
        patches.append((moe, "_can_use_grouped_mm", lambda *args, **kwargs: False))
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    try:
        for owner, attr, value in patches:
            setattr(owner, attr, value)
        yield
    finally:
        for owner, attr, value in originals:
            setattr(owner, attr, value)


def _cache_tensors(cache: Any) -> list[torch.Tensor]:
    """The keys and values a transformers cache holds (DynamicCache, EncoderDecoderCache)."""
    if cache is None:
        return []
    found: list[torch.Tensor] = []
    for part in (cache, getattr(cache, "self_attention_cache", None), getattr(cache, "cross_attention_cache", None)):
        for layer in getattr(part, "layers", None) or ():
            found += [t for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                      if isinstance(t, torch.Tensor)]
    return found


def _fake_weights(model: nn.Module) -> None:
    """Replace the meta parameters (and any meta buffer) by fake CPU tensors, ties kept."""
    made: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for key, param in list(module._parameters.items()):
            if param is None or not param.is_meta:
                continue
            if id(param) not in made:
                fake = nn.Parameter(torch.empty(param.shape, dtype=param.dtype, device="cpu"),
                                    requires_grad=param.requires_grad)
                made[id(param)] = fake
            module._parameters[key] = made[id(param)]  # type: ignore[assignment]
        for key, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_meta:
                module._buffers[key] = torch.zeros(buffer.shape, dtype=buffer.dtype, device="cpu")


def _layers(model: nn.Module, units: dict[str, nn.Module], blocks: dict[str, list[str]],
            flow: _Flow) -> tuple[list[Layer], list[tuple[str, str]] | None, list[TiedGroup]]:
    """The units as layers (neighbours of one parent before a block merged), edges, ties."""
    block_names = {name for names in blocks.values() for name in names}
    ran = {id(p) for u in flow.order for p in units[u].parameters()}
    missing = [u for u in units if u not in flow.order]
    for unit in missing:
        # A module that never runs, whose weights run in others (T5's ``shared``, the encoder's
        # and the decoder's embeddings' weight), is not a layer.
        if not all(id(p) in ran for p in units[unit].parameters()):
            raise ModelError(f"model: the forward never ran {unit!r}, nor read its weights")
    units = {u: m for u, m in units.items() if u in flow.order}
    groups: list[list[str]] = []
    for unit in flow.order:
        parent = unit.rpartition(".")[0]
        if groups and unit not in block_names and groups[-1][-1] not in block_names \
                and groups[-1][-1].rpartition(".")[0] == parent:
            groups[-1].append(unit)
        else:
            groups.append([unit])
    # Merge only what runs before a block (the embeddings): after the blocks, each its own.
    merged: list[list[str]] = []
    for index, group in enumerate(groups):
        nxt = groups[index + 1][0] if index + 1 < len(groups) else None
        if len(group) > 1 and not (nxt is not None and nxt in block_names):
            merged += [[unit] for unit in group]
        else:
            merged.append(group)
    name_of: dict[str, str] = {}
    for group in merged:
        parent = group[0].rpartition(".")[0]
        leaves = "+".join(u.rpartition(".")[2] for u in group)
        label = f"{parent}.{leaves}" if parent and len(group) > 1 else leaves if len(group) > 1 else group[0]
        for unit in group:
            name_of[unit] = label
    edges: dict[tuple[str, str], None] = {}
    for a, b in flow.edges:
        if name_of[a] != name_of[b]:
            edges[(name_of[a], name_of[b])] = None
    names = [name_of[group[0]] for group in merged]
    training = bool(flow.saved) or model.training
    holders: dict[int, list[int]] = {}
    layers = []
    last = len(merged) - 1
    for index, group in enumerate(merged):
        params = {id(p): p for unit in group for p in units[unit].parameters()}
        for p in params:
            holders.setdefault(p, []).append(index)
        count = sum(p.numel() for p in params.values())
        sent = sum({k: v for u in group for k, v in flow.sent.get(u, {}).items()}.values())  # each storage once
        output = sent if sent and index != last else sum(flow.outputs.get(u, 0) for u in group)
        saved = sum(flow.saved.get(u, 0) for u in group)
        layers.append(Layer(names[index], params=count,
                            activation_bytes=saved if training else output,
                            output_bytes=output if training else None,
                            buffer_bytes=max(flow.workspace.get(u, 0) for u in group),
                            kv_cache_bytes=sum(flow.cache.get(u, 0) for u in group)))
    shared: dict[tuple[int, ...], int] = {}
    all_params = {id(p): p for p in model.parameters()}
    for key, where in holders.items():
        if len(where) > 1:
            shared[tuple(where)] = shared.get(tuple(where), 0) + all_params[key].numel()
    tied = [TiedGroup(tuple(names[i] for i in where), count) for where, count in shared.items()]
    chain = {(names[i], names[i + 1]) for i in range(len(names) - 1)}
    return layers, (None if set(edges) <= chain else list(edges)), tied
