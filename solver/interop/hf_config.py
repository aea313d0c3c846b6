"""Instances from a Hugging Face ``config.json``: exact parameters per layer, no torch.

Families: Llama (1–3.x), Mistral, Mixtral (MoE), Qwen2/2.5, GPT-2 and BERT (the
``BertModel`` backbone). Layers are named after the modules of the Hugging Face model
(``model.layers.3``, ``transformer.h.3``, ``encoder.layer.3``) so that exports can key on
them: the embedding, each block (or, with ``split="sublayer"``, its attention and its MLP),
the final norm and the head. A head tied to the embedding is a tied group
(:class:`~layerfit.model.instance.TiedGroup`, mode ``replicate``), so ``Instance.total_params``
counts it once and equals the published total of the checkpoint.

Memory per layer, e bytes an activation element, b batch, s sequence, h hidden:

* inference: ``activation_bytes`` is the layer's output, b·s·h·e (the head's: the logits
  of every position, b·s·vocab·e; BERT's pooler: b·h·e); with ``kv_cache=True`` each
  block (its attention sublayer) holds keys and values of s positions, 2·b·s·kv_heads·head_dim·e.
* training: ``activation_bytes`` is what the layer saves for the backward pass
  (``output_bytes`` stays its output, what crosses a cut), and mixed-precision Adam
  state (:class:`~layerfit.model.instance.Training`).

  - GPT-2, BERT (dropout, attention scores kept): Korthikanti et al. 2022 ("Reducing
    Activation Recomputation in Large Transformer Models", eq. 1) with e-byte values
    and 1-byte dropout masks: b·s·h·(16e + 2) + a·s²·b·(2e + 1), i.e. 34·sbh + 5·as²b
    in 16-bit. Attention (with its LayerNorm) takes sbh·(6e + 1) + as²b·(2e + 1),
    the MLP (with its LayerNorm) sbh·(10e + 1).
  - Llama, Mistral, Qwen2 (no dropout; fused attention keeps no s×s scores, the
    ``sdpa`` default): attention saves its norm's input, the projections' input, q, k,
    v and the attention output, sb·e·(2h + 2·q_dim + 2·kv_dim); the gated MLP its
    norm's input, the projections' input, gate, up, SiLU(gate) and their product,
    sb·e·(2h + 4·I). Mixtral: each token's MLP work for its k experts, sb·e·(2h + 4·I·k),
    plus the router's logits sb·experts·e. Per-row statistics (norms' rstd, softmax
    logsumexp) are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InstanceError
from .export import BLOCK_NAME
from ..model.instance import Constraints, Instance, Layer, TiedGroup, Training, read_json
from ..model.units import DTYPE_BITS
from ..model.memory import partition_bytes

__all__ = ["from_hf_config", "FAMILIES"]

FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "gpt2", "bert")
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


class _Fields:
    """Reads a config's integer fields with errors that name them."""

    def __init__(self, config: Mapping[str, Any]):
        self.config = config

    def int(self, key: str, default: int | None = None) -> int:
        value = self.config.get(key)
        if value is None:
            if default is None:
                raise InstanceError(f"config.{key}: missing")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InstanceError(f"config.{key}: must be a positive integer, got {value!r}")
        return value


def _positive(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InstanceError(f"{where}: must be a positive integer, got {value!r}")
    return value


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

    Examples
    --------
    >>> inst = from_hf_config({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12,
    ...                        "n_positions": 1024, "vocab_size": 50257}, batch_size=1, seq_len=1024, dtype="fp32")
    >>> inst.total_params  # GPT-2 small, the published total
    124439808
    """
    raw, stem = _read(config)
    batch_size = _positive(batch_size, "batch_size")
    seq_len = _positive(seq_len, "seq_len")
    if mode not in MODES:
        raise InstanceError(f"mode: unknown mode {mode!r} (allowed: {', '.join(MODES)})")
    if split not in SPLITS:
        raise InstanceError(f"split: unknown split {split!r} (allowed: {', '.join(SPLITS)})")
    if not isinstance(kv_cache, bool):
        raise InstanceError(f"kv_cache: expected true or false, got {kv_cache!r}")
    if kv_cache and mode == "training":
        raise InstanceError("kv_cache: a KV cache is kept for inference, not with mode 'training'")
    family = raw.get("model_type")
    if family not in FAMILIES:
        raise InstanceError(f"config.model_type: unsupported model_type {family!r} (supported: {', '.join(FAMILIES)})")
    if dtype is None:
        key = "dtype" if "dtype" in raw else "torch_dtype"
        torch_dtype = raw.get(key)
        if torch_dtype not in _TORCH_DTYPES:
            raise InstanceError(f"config.{key}: cannot tell the dtype from {torch_dtype!r}; pass dtype=")
        dtype = _TORCH_DTYPES[torch_dtype]
    elif dtype not in DTYPE_BITS:
        raise InstanceError(f"dtype: unknown dtype {dtype!r} (allowed: {', '.join(DTYPE_BITS)})")
    if activation_dtype is None:
        activation_dtype = dtype if DTYPE_BITS[dtype] >= 16 else "bf16"
    elif activation_dtype not in DTYPE_BITS:
        raise InstanceError(f"activation_dtype: unknown dtype {activation_dtype!r} (allowed: {', '.join(DTYPE_BITS)})")
    shape = _Shape(_Fields(raw), batch_size, seq_len, DTYPE_BITS[activation_dtype] / 8, mode == "training", kv_cache)
    if family == "gpt2":
        layers, tied = _gpt2(shape, split, raw)
    elif family == "bert":
        if kv_cache:
            raise InstanceError("kv_cache: BERT is an encoder; it keeps no KV cache")
        layers, tied = _bert(shape, split)
    else:
        layers, tied = _decoder(shape, split, raw, family)
    if flops_per_s is not None:
        if isinstance(flops_per_s, bool) or not isinstance(flops_per_s, (int, float)) or not flops_per_s > 0 \
                or flops_per_s == float("inf"):
            raise InstanceError(f"flops_per_s: must be a positive finite number, got {flops_per_s!r}")
        layers = _timed(layers, shape, raw, family, flops_per_s)
    instance_name = name or stem
    constraints = Constraints(tied=tied)
    description = (f"{family} from config.json ({stem}): batch {batch_size}, sequence {seq_len}, weights {dtype}, "
                   f"activations {activation_dtype}, {mode}"
                   + (", KV cache" if kv_cache else "") + f", split by {split} (layerfit's from_hf_config)")
    training = Training("adam") if mode == "training" else None
    whole = Instance(name=instance_name, capacity=1, layers=tuple(layers), dtype=dtype, training=training,
                     constraints=constraints)
    chosen = capacity if capacity is not None else partition_bytes(whole, range(len(layers)), 0, 1)
    return Instance(name=instance_name, capacity=chosen, layers=tuple(layers), dtype=dtype, training=training,
                    constraints=constraints, description=description)


class _Shape:
    """Batch, sequence and element size: the activation formulas of the module docstring."""

    def __init__(self, fields: _Fields, batch: int, seq: int, element: float, training: bool, kv_cache: bool):
        self.fields, self.b, self.s, self.e, self.training, self.kv_cache = fields, batch, seq, element, training, kv_cache

    def bytes(self, elements: float) -> int:
        return int(round(elements * self.e))

    def tokens(self, width: int) -> int:
        """b·s·width elements in bytes: a hidden state of that width."""
        return self.bytes(self.b * self.s * width)

    def layer(self, name: str, params: int, width: int, saved: int | None = None, kv: int = 0) -> Layer:
        """A layer whose output is b·s·width; in training it holds ``saved`` bytes instead."""
        output = self.tokens(width)
        if self.training and saved is not None:
            return Layer(name, params=params, activation_bytes=saved, output_bytes=output)
        return Layer(name, params=params, activation_bytes=output, kv_cache_bytes=kv if self.kv_cache else 0)


def _join(shape: _Shape, split: str, name: str, parts: list[tuple[str, int, int, int]], width: int) -> list[Layer]:
    """A block as one layer, or its sublayers: parts are (suffix, params, saved bytes, KV bytes)."""
    if split == "sublayer":
        return [shape.layer(f"{name}.{suffix}", p, width, saved, kv) for suffix, p, saved, kv in parts]
    return [shape.layer(name, sum(p[1] for p in parts), width, sum(p[2] for p in parts), sum(p[3] for p in parts))]


def _decoder(shape: _Shape, split: str, raw: Mapping[str, Any], family: str) -> tuple[list[Layer], tuple[TiedGroup, ...]]:
    """Llama, Mistral, Qwen2 and Mixtral (LlamaForCausalLM and its kin)."""
    f = shape.fields
    h, blocks, vocab = f.int("hidden_size"), f.int("num_hidden_layers"), f.int("vocab_size")
    inter, heads = f.int("intermediate_size"), f.int("num_attention_heads")
    kv_heads = f.int("num_key_value_heads", heads)
    if h % heads and "head_dim" not in raw:
        raise InstanceError(f"config.head_dim: missing, and hidden_size {h} is not a multiple of num_attention_heads {heads}")
    head_dim = f.int("head_dim", h // heads)
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    bias = q_dim + 2 * kv_dim if family == "qwen2" else 0  # Qwen2's q, k, v carry biases
    attention = h * q_dim + 2 * h * kv_dim + q_dim * h + bias + h  # q, k, v, o and the input RMSNorm
    b, s = shape.b, shape.s
    attention_saved = shape.bytes(b * s * (2 * h + 2 * q_dim + 2 * kv_dim))
    kv = shape.bytes(2 * b * s * kv_dim)
    if family == "mixtral":
        experts, active = f.int("num_local_experts"), f.int("num_experts_per_tok")
        mlp = experts * 3 * h * inter + h * experts + h  # experts, router, post-attention RMSNorm
        mlp_saved = shape.bytes(b * s * (2 * h + 4 * inter * active + experts))
        mlp_name = "block_sparse_moe"
    else:
        mlp = 3 * h * inter + h  # gate, up, down and the post-attention RMSNorm
        mlp_saved = shape.bytes(b * s * (2 * h + 4 * inter))
        mlp_name = "mlp"
    layers = [shape.layer("model.embed_tokens", vocab * h, h, shape.tokens(h))]
    for i in range(blocks):
        layers += _join(shape, split, f"model.layers.{i}",
                        [("self_attn", attention, attention_saved, kv), (mlp_name, mlp, mlp_saved, 0)], h)
    layers.append(shape.layer("model.norm", h, h, shape.tokens(h)))
    head = shape.layer("lm_head", vocab * h, vocab, shape.tokens(h) + shape.tokens(vocab))
    layers.append(head)
    tied = raw.get("tie_word_embeddings", False)  # False is the default of these families' configs
    groups = (TiedGroup(("model.embed_tokens", "lm_head"), vocab * h),) if tied else ()
    return layers, groups


def _gpt2(shape: _Shape, split: str, raw: Mapping[str, Any]) -> tuple[list[Layer], tuple[TiedGroup, ...]]:
    """GPT2LMHeadModel: learned positions, biases everywhere, the head tied to wte."""
    f = shape.fields
    h, blocks, vocab = f.int("n_embd"), f.int("n_layer"), f.int("vocab_size")
    positions, heads = f.int("n_positions"), f.int("n_head")
    _within_positions(shape, positions, "n_positions")
    inner = f.int("n_inner", 4 * h)
    attention = 2 * h + h * 3 * h + 3 * h + h * h + h  # ln_1, c_attn, c_proj
    mlp = 2 * h + h * inner + inner + inner * h + h  # ln_2, c_fc, c_proj
    attention_saved, mlp_saved = _korthikanti(shape, h, heads, inner)
    layers = [shape.layer("transformer.wte+wpe", vocab * h + positions * h, h, shape.tokens(h))]
    for i in range(blocks):
        layers += _join(shape, split, f"transformer.h.{i}",
                        [("attn", attention, attention_saved, shape.bytes(2 * shape.b * shape.s * h)),
                         ("mlp", mlp, mlp_saved, 0)], h)
    layers.append(shape.layer("transformer.ln_f", 2 * h, h, shape.tokens(h)))
    layers.append(shape.layer("lm_head", vocab * h, vocab, shape.tokens(h) + shape.tokens(vocab)))
    tied = raw.get("tie_word_embeddings", True)  # GPT-2 ties its head to wte
    groups = (TiedGroup(("transformer.wte+wpe", "lm_head"), vocab * h),) if tied else ()
    return layers, groups


def _bert(shape: _Shape, split: str) -> tuple[list[Layer], tuple[TiedGroup, ...]]:
    """BertModel (the backbone): three embeddings and a LayerNorm, blocks with biases, a pooler."""
    f = shape.fields
    h, blocks, vocab = f.int("hidden_size"), f.int("num_hidden_layers"), f.int("vocab_size")
    inter, heads = f.int("intermediate_size"), f.int("num_attention_heads")
    positions, types = f.int("max_position_embeddings"), f.int("type_vocab_size", 2)
    _within_positions(shape, positions, "max_position_embeddings")
    attention = 4 * (h * h + h) + 2 * h  # q, k, v, output dense and its LayerNorm
    mlp = h * inter + inter + inter * h + h + 2 * h  # intermediate, output dense and its LayerNorm
    attention_saved, mlp_saved = _korthikanti(shape, h, heads, inter)
    layers = [shape.layer("embeddings", (vocab + positions + types) * h + 2 * h, h, shape.tokens(h))]
    for i in range(blocks):
        layers += _join(shape, split, f"encoder.layer.{i}",
                        [("attention", attention, attention_saved, 0), ("intermediate+output", mlp, mlp_saved, 0)], h)
    pooled = shape.bytes(shape.b * h)
    pooler = Layer("pooler", params=h * h + h, activation_bytes=2 * pooled if shape.training else pooled,
                   output_bytes=pooled if shape.training else None)
    layers.append(pooler)
    return layers, ()


_ATTENTION = ("self_attn", "attn", "attention")


def _timed(layers: list[Layer], shape: _Shape, raw: Mapping[str, Any], family: str, flops_per_s: float) -> list[Layer]:
    """Each layer with ``time`` = FLOPs / throughput (see :func:`from_hf_config`)."""
    import dataclasses

    f = shape.fields
    if family == "gpt2":
        q_dim = f.int("n_embd")
    else:
        heads = f.int("num_attention_heads")
        q_dim = heads * f.int("head_dim", f.int("hidden_size") // heads) if family != "bert" else f.int("hidden_size")
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


def _within_positions(shape: _Shape, positions: int, field: str) -> None:
    """A model with learned position embeddings has none beyond ``config.<field>``."""
    if shape.s > positions:
        raise InstanceError(f"seq_len: {shape.s} tokens, beyond the model's {positions} learned positions "
                            f"(config.{field})")


def _korthikanti(shape: _Shape, h: int, heads: int, inner: int) -> tuple[int, int]:
    """Saved bytes of a GPT/BERT block's attention and MLP (each with its LayerNorm), e-byte
    values and 1-byte dropout masks; the MLP term scales with its width (4h in the paper)."""
    b, s, e = shape.b, shape.s, shape.e
    attention = b * s * h * (6 * e + 1) + heads * s * s * b * (2 * e + 1)
    mlp = b * s * h * (2 * e + 1) + b * s * inner * 2 * e
    return int(round(attention)), int(round(mlp))
