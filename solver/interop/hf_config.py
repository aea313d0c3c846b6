"""Instances from a Hugging Face ``config.json``: exact parameters per layer, no torch.

Families (one module each in :mod:`layerfit.interop.hf_families`, which has their layouts and
training formulas): Llama (1–3.x), Mistral, Mixtral (MoE), Qwen2/2.5, Qwen3 and Qwen3-MoE,
Gemma 2 and Gemma 3 (text), Phi-3, OLMo 2, DeepSeek-V2/V3 (MLA, shared and routed experts),
GPT-OSS, Falcon, GPT-2 and BERT (the ``BertModel`` backbone), and the rest of
``hf_families.FAMILIES``. Layers are named after the modules of the Hugging Face model
(``model.layers.3``, ``transformer.h.3``, ``encoder.layer.3``) so that exports can key on
them: the embedding, each block (or, with ``split="sublayer"``, its attention and its MLP),
the final norm and the head. A head tied to the embedding is a tied group
(:class:`~layerfit.model.instance.TiedGroup`, mode ``replicate``), so ``Instance.total_params``
counts it once and equals the published total of the checkpoint.

Memory per layer, e bytes an activation element, b batch, s sequence, h hidden:

* inference: ``activation_bytes`` is the layer's output, b·s·h·e (the head's: the logits
  of every position, b·s·vocab·e; BERT's pooler: b·h·e); with ``kv_cache=True`` each
  block (its attention sublayer) holds keys and values of s positions, 2·b·s·kv_heads·head_dim·e
  (transformers' default cache keeps s even in a sliding-window layer after the forward; a static
  cache, the config's ``cache_implementation``, min(s, W): :mod:`~layerfit.interop.hf_families.decoder`;
  DeepSeek's MLA caches its latent, b·s·(kv_lora_rank + qk_rope_head_dim)·e, and Falcon's new
  architecture every head: :mod:`~layerfit.interop.hf_families.deepseek`, ``falcon``).
* training: ``activation_bytes`` is what the layer saves for the backward pass
  (``output_bytes`` stays its output, what crosses a cut), and mixed-precision Adam
  state (:class:`~layerfit.model.instance.Training`); each family's module says what it saves.
* serving (``serving=``, inference): what a vLLM rank holds — the KV cache of b·s tokens in its
  own dtype, one scheduler step's transients, 16-bit embedding and head beside 8-bit weights,
  vLLM's ``gpu_memory_utilization``: :mod:`~layerfit.interop.serving`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import InstanceError
from .export import BLOCK_NAME
from ..model.instance import Constraints, Instance, Layer, Training, read_json
from ..model.units import DTYPE_BITS, normalise_dtype
from ..model.memory import partition_bytes
from .hf_families import BUILDERS, FAMILIES, REFUSED
from .hf_families.shape import Fields, Shape, positive
from .serving import Serving, as_serving, serving_layers

__all__ = ["from_hf_config", "FAMILIES", "Serving"]

MODES = ("inference", "training")
SPLITS = ("block", "sublayer")
_TORCH_DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "float8_e4m3fn": "fp8", "int8": "int8"}


def _read(config: str | Path | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if isinstance(config, Mapping):
        return config, str(config.get("_name_or_path") or config.get("model_type") or "model")
    path = Path(config)
    raw = read_json(path)
    if not isinstance(raw, Mapping):
        raise InstanceError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    # A model directory's config.json is named after its directory (save_pretrained's layout).
    return raw, path.parent.name if path.name == "config.json" and path.parent.name else path.stem


def from_hf_config(
    config: str | Path | Mapping[str, Any],
    *,
    batch_size: int,
    seq_len: int,
    dtype: str | None = None,
    activation_dtype: str | None = None,
    mode: str = "inference",
    kv_cache: bool = False,
    split: str = "block",
    capacity: int | str | None = None,
    name: str | None = None,
    flops_per_s: float | None = None,
    serving: Serving | Mapping[str, Any] | None = None,
) -> Instance:
    """An :class:`~layerfit.Instance` of the model a Hugging Face ``config.json`` describes.

    Parameters
    ----------
    config:
        A path to ``config.json`` or its contents as a dict.
    batch_size, seq_len:
        The batch (per micro-batch, with a schedule) and the sequence length.
    dtype:
        The weights (``bf16``, ``fp16``, ``fp32``, ``fp8``, ``int8``, ``int4``); default the
        config's ``dtype`` (transformers 5's spelling; ``torch_dtype`` in older configs).
    activation_dtype:
        The activations and KV cache; default ``dtype`` when it is 16 or 32 bits, else bf16
        (quantized weights compute in bf16).
    mode:
        ``"inference"`` (outputs held) or ``"training"`` (saved activations and
        mixed-precision Adam state, 16 bytes a parameter for 16-bit weights).
    kv_cache:
        Hold each block's keys and values for ``seq_len`` positions (inference).
    split:
        ``"block"`` (one layer per block) or ``"sublayer"`` (attention and MLP apart).
    capacity:
        The partition capacity; default the whole model's footprint (one partition), to
        be set by the caller (``dataclasses.replace(inst, capacity=...)``).
    flops_per_s:
        A device's sustained throughput: each layer gets ``time`` = its FLOPs / this. FLOPs:
        2 · params · tokens for the matrix products (the embedding's lookup: none; BERT's
        pooler: the first token only), plus 4 · b · s² · q_dim for attention's scores and
        weighted sum; training three times the forward (forward, and backward twice).
    serving:
        What a vLLM rank holds (:class:`~layerfit.interop.serving.Serving`, or a dict of its
        fields; inference only): the KV cache of ``batch_size`` × ``seq_len`` tokens (the
        instance's ``kv_tokens``) in ``kv_cache_dtype``, on whatever ``kv_cache`` says; one
        scheduler step's transients as each layer's workspace, reused (``buffer_reuse``); with
        weights of 8 bits or fewer the embedding and the head in ``activation_dtype``; and
        ``constraints.gpu_memory_utilization``. The default capacity is then the least whose
        share holds the whole model.

    Examples
    --------
    >>> inst = from_hf_config({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12,
    ...                        "n_positions": 1024, "vocab_size": 50257}, batch_size=1, seq_len=1024, dtype="fp32")
    >>> inst.total_params  # GPT-2 small, the published total
    124439808
    """
    raw, stem = _read(config)
    batch_size = positive(batch_size, "batch_size")
    seq_len = positive(seq_len, "seq_len")
    if mode not in MODES:
        raise InstanceError(f"mode: unknown mode {mode!r} (allowed: {', '.join(MODES)})")
    if split not in SPLITS:
        raise InstanceError(f"split: unknown split {split!r} (allowed: {', '.join(SPLITS)})")
    if not isinstance(kv_cache, bool):
        raise InstanceError(f"kv_cache: expected true or false, got {kv_cache!r}")
    if kv_cache and mode == "training":
        raise InstanceError("kv_cache: a KV cache is kept for inference, not with mode 'training'")
    if serving is not None:
        serving = as_serving(serving)
        if mode == "training":
            raise InstanceError("serving: a serving engine runs inference, not mode 'training'")
    family = raw.get("model_type")
    if family in REFUSED:
        raise InstanceError(REFUSED[family])
    if family not in FAMILIES:
        raise InstanceError(f"config.model_type: unsupported model_type {family!r} (supported: {', '.join(FAMILIES)})")
    if dtype is None:
        key = "dtype" if "dtype" in raw else "torch_dtype"
        torch_dtype = raw.get(key)
        if torch_dtype not in _TORCH_DTYPES:
            raise InstanceError(f"config.{key}: cannot tell the dtype from {torch_dtype!r}; pass dtype=")
        dtype = _TORCH_DTYPES[torch_dtype]
    else:
        dtype = normalise_dtype(dtype, "dtype")  # bf16, …, or Hugging Face's bfloat16, float16, float32
    if activation_dtype is None:
        activation_dtype = dtype if DTYPE_BITS[dtype] >= 16 else "bf16"
    else:
        activation_dtype = normalise_dtype(activation_dtype, "activation_dtype")
    # Serving counts vLLM's KV cache below, not transformers' (the family's, with kv_cache).
    shape = Shape(Fields(raw), batch_size, seq_len, DTYPE_BITS[activation_dtype] / 8, mode == "training",
                  kv_cache and serving is None)
    built = BUILDERS[family](shape, split, raw)
    layers, tied = built.layers, built.tied
    kv_tokens = None
    if serving is not None:
        if built.widths is None:
            raise InstanceError(f"serving: model_type {family!r} is an encoder; a serving engine's KV cache and "
                                "scheduler steps are a decoder's")
        kv_dtype = serving.kv_cache_dtype or activation_dtype
        kv_tokens = batch_size * seq_len
        layers = serving_layers(layers, built.widths, serving, tokens=kv_tokens, activation_dtype=activation_dtype,
                                kv_dtype=kv_dtype, sixteen_bit_ends=DTYPE_BITS[dtype] <= 8)
    if flops_per_s is not None:
        if isinstance(flops_per_s, bool) or not isinstance(flops_per_s, (int, float)) or not flops_per_s > 0 \
                or flops_per_s == float("inf"):
            raise InstanceError(f"flops_per_s: must be a positive finite number, got {flops_per_s!r}")
        layers = _timed(layers, shape, built.q_dim, flops_per_s)
    instance_name = name or stem
    constraints = Constraints(tied=tied)
    if serving is None:
        served = ", KV cache" if kv_cache else ""
    else:
        served = (f", serving (vLLM): KV cache {kv_dtype} for {kv_tokens:,} tokens, {serving.max_num_batched_tokens:,} "
                  f"tokens a step, {serving.max_num_seqs:,} sequences, gpu_memory_utilization "
                  f"{serving.gpu_memory_utilization:g}"
                  + (f", embedding and head in {activation_dtype}" if DTYPE_BITS[dtype] <= 8 else ""))
    description = (f"{family} from config.json ({stem}): batch {batch_size}, sequence {seq_len}, weights {dtype}, "
                   f"activations {activation_dtype}, {mode}{served}, split by {split} (layerfit's from_hf_config)")
    training = Training("adam") if mode == "training" else None
    reuse = serving is not None
    whole = Instance(name=instance_name, capacity=1, layers=tuple(layers), dtype=dtype, training=training,
                     constraints=constraints, buffer_reuse=reuse, kv_tokens=kv_tokens)
    if capacity is not None:
        chosen = capacity
    else:
        chosen = partition_bytes(whole, range(len(layers)), 0, 1)
        if serving is not None:  # the least capacity whose gpu_memory_utilization share holds the model
            chosen = math.ceil(chosen / Fraction(serving.gpu_memory_utilization))
    if serving is not None:
        constraints = Constraints(tied=tied, gpu_memory_utilization=serving.gpu_memory_utilization)
    return Instance(name=instance_name, capacity=chosen, layers=tuple(layers), dtype=dtype, training=training,
                    constraints=constraints, description=description, buffer_reuse=reuse, kv_tokens=kv_tokens)


_ATTENTION = ("self_attn", "attn", "attention", "self_attention")  # self_attention: Falcon's


def _timed(layers: list[Layer], shape: Shape, q_dim: int, flops_per_s: float) -> list[Layer]:
    """Each layer with ``time`` = FLOPs / throughput (see :func:`from_hf_config`)."""
    import dataclasses

    b, s = shape.b, shape.s
    out = []
    for index, layer in enumerate(layers):
        if index == 0:  # the embedding: a lookup
            flops = 0
        elif layer.name == "pooler":
            flops = 2 * layer.params * b
        else:
            flops = 2 * layer.params * b * s
            match = BLOCK_NAME.match(layer.name)
            if match and (match["sub"] is None or match["sub"] in _ATTENTION):
                flops += 4 * b * s * s * q_dim
        if shape.training:
            flops *= 3
        out.append(dataclasses.replace(layer, time=flops / flops_per_s))
    return out
