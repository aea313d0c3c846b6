"""Falcon (``FalconForCausalLM``) in its three block layouts.

``transformer.word_embeddings``, ``transformer.h.i``, ``transformer.ln_f``, ``lm_head`` — tied
to the word embeddings unless ``tie_word_embeddings`` is false (``FalconConfig``'s default is
true, and the published configs leave it so). Inside a block, ``self_attention``
(``query_key_value`` fused, ``dense``) and ``mlp`` (``dense_h_to_4h``, ``dense_4h_to_h``), with
``bias`` on every linear or none; the LayerNorms (weight and bias) depend on the layout:

* **sequential** (``parallel_attn`` false, e.g. Falcon-RW): ``input_layernorm`` → attention,
  ``post_attention_layernorm`` → MLP, as in Llama. Sub-layers ``self_attention`` (holding
  ``input_layernorm``) and ``mlp`` (holding ``post_attention_layernorm``).
* **parallel, one norm** (``parallel_attn`` true and not the new architecture — Falcon-7B —,
  or the new architecture with ``num_ln_in_parallel_attn`` 1): attention and MLP both read
  ``input_layernorm``'s output. That norm goes to the ``self_attention`` sub-layer (each
  parameter in exactly one layer), so ``mlp`` holds the MLP alone, and a cut between them
  carries three tensors: the block's input, the norm's output and the attention's output,
  3·b·s·h·e.
* **parallel, two norms** (``new_decoder_architecture`` — Falcon-40B/180B —, with
  ``num_ln_in_parallel_attn`` 2, its default): ``ln_attn`` → attention and ``ln_mlp`` → MLP,
  both off the block's input. Sub-layers ``self_attention`` (holding ``ln_attn``) and
  ``mlp`` (holding ``ln_mlp``); a cut between them carries the block's input and the
  attention's output, 2·b·s·h·e.

``query_key_value``'s output: (H + 2g)·d with the new architecture (H heads,
g = ``num_kv_heads`` key/value groups, d = h/H), h + 2d with ``multi_query`` (one key/value
head), else 3h. The new architecture with ``parallel_attn`` false, or ``num_ln_in_parallel_attn``
2 without it, build modules transformers' forward does not use: refused.

KV cache (transformers' ``DynamicCache``): 2·b·s·c·d·e a block, c the heads it caches — 1
with ``multi_query``; H with the new architecture, which broadcasts its g groups to every
head *before* caching (so Falcon-40B caches 128 heads, not 8, in transformers; vLLM caches
the 8); H otherwise.

``alibi`` (Falcon-RW) replaces the rotary embedding: no parameters either way. Its additive
bias, b·H·s·s values built once per forward for every block, is not assigned to a layer
(not counted).

Inference: each layer holds its output, b·s·h·e (a one-norm attention sub-layer 3·b·s·h·e,
a two-norm one 2·b·s·h·e, as above; the head: the logits, b·s·vocab·e).

Training saves, per token in bytes (e an activation element's; T = b·s tokens), as
transformers 5.24 runs it by default (``sdpa``); dropout (0 in the published configs) and the
model-wide causal or ALiBi mask are not counted; each block's rotary cos and sin (s × d each,
2·s·d·e a micro-batch, what its products keep) are. A LayerNorm keeps its
input and its mean and 1/std, e·(w + 2) (:func:`~.saved.saved_by_layer_norm`), its consumer its output; the embedding's token ids
and the head with the causal-LM loss as :mod:`~layerfit.interop.hf_families.saved` counts them:

* attention: its norm and its output e·h; the attention output e·h (``dense``'s input, the
  same storage ``sdpa`` keeps) and ``sdpa``'s fp32 log-sum-exp 4·H; and query, keys and values
  as ``sdpa`` reads them — with the new architecture a copy each, keys and values broadcast
  to every head (e·3h); without it and without ``multi_query``, the rotated query and keys
  (e·2h) and the values, a view that keeps the whole fused ``query_key_value`` output alive
  (e·3h), or with ``alibi``, where nothing is rotated, three views of that output (e·3h in all).
  With ``multi_query`` (one key head for all) ``sdpa``'s fused kernels refuse the shapes and
  its math path runs, in fp32: the query, 4·h, the keys and values expanded to every head —
  with one sequence (b = 1) views of the one head, 4·2d, with more the batched products'
  copies, 4·2h —, and the probabilities, 4·H·s a token (4·b·H·s·s a block), and no
  log-sum-exp;
* MLP: the GELU's input and output, e·2F (F = ``ffn_hidden_size``, default 4h), plus,
  sequential, its norm and its output, or with two norms ``ln_mlp``'s statistics and output,
  e·(h + 2) (its input is the block's input, kept by ``ln_attn``). A norm shared by attention
  and MLP is counted once, with the attention.

``tests/test_hf_families_moe.py`` compares each block with what autograd saves in a small
model of each layout, fp32 and bf16; ``tests/test_hf_activations.py`` every layer with
``from_hf_model``'s measurement at Falcon-7B's and Falcon-40B's widths (within 5 %).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InstanceError
from ...model.instance import Layer, TiedGroup
from .saved import saved_by_embedding, saved_by_head
from .shape import BlockWidths, Built, Shape, Widths

__all__ = ["falcon", "falcon_layout"]


def falcon_layout(raw: Mapping[str, Any], new: bool, parallel: bool) -> str:
    """``"sequential"``, ``"one_norm"`` or ``"two_norms"``: which LayerNorms a block has."""
    norms = raw.get("num_ln_in_parallel_attn")
    if norms is not None and (isinstance(norms, bool) or norms not in (1, 2)):
        raise InstanceError(f"config.num_ln_in_parallel_attn: must be 1, 2 or null, got {norms!r}")
    if new and not parallel:
        raise InstanceError("config.parallel_attn: false with new_decoder_architecture true; transformers' Falcon "
                            "builds the sequential norms but its forward runs the parallel block")
    if not parallel:
        return "sequential"
    if norms is None:
        norms = 2 if new else 1
    if norms == 2 and not new:
        raise InstanceError("config.num_ln_in_parallel_attn: 2 needs new_decoder_architecture true; transformers' "
                            "Falcon builds ln_attn and ln_mlp but its forward reads input_layernorm")
    return "two_norms" if norms == 2 else "one_norm"


def falcon(shape: Shape, split: str, raw: Mapping[str, Any]) -> Built:
    """FalconForCausalLM."""
    f = shape.fields
    h = f.int("n_embed") if "n_embed" in raw else f.int("hidden_size")  # FalconConfig's old alias
    blocks, vocab, heads = f.int("num_hidden_layers"), f.int("vocab_size"), f.int("num_attention_heads")
    if h % heads:
        raise InstanceError(f"config.hidden_size: {h} is not a multiple of num_attention_heads {heads}")
    d = h // heads
    new = f.flag("new_decoder_architecture", False)
    multi_query = f.flag("multi_query", True)
    parallel = f.flag("parallel_attn", True)
    bias = f.flag("bias", False)
    alibi = f.flag("alibi", False)  # no parameters either way; what attention saves differs
    groups = f.int("num_kv_heads", heads)
    ffn = f.int("ffn_hidden_size", 4 * h)
    layout = falcon_layout(raw, new, parallel)
    if new:
        if heads % groups:
            raise InstanceError(f"config.num_kv_heads: {groups} does not divide num_attention_heads {heads}")
        qkv_out, cached = (heads + 2 * groups) * d, heads
    elif multi_query:
        qkv_out, cached = h + 2 * d, 1
    else:
        if groups != heads:
            raise InstanceError(f"config.num_kv_heads: {groups}; without multi_query or new_decoder_architecture "
                                f"Falcon has one key and value per head ({heads}, num_attention_heads)")
        qkv_out, cached = 3 * h, heads
    norm = 2 * h  # LayerNorm: weight and bias
    attention = h * qkv_out + h * h + ((qkv_out + h) if bias else 0) + norm
    mlp = h * ffn + ffn * h + ((ffn + h) if bias else 0) + (0 if layout == "one_norm" else norm)

    b, s = shape.b, shape.s
    tokens, e = b * s, shape.e
    layer_norm = e * (h + 2)  # a LayerNorm's input and its mean and 1/std (saved.layer_norm)
    rotary = 0 if alibi else round(2 * s * d * e)  # the rotary's cos and sin (s × d each), kept by its products
    if multi_query and not new:  # sdpa's math path, in fp32: query, keys and values, probabilities
        kv_width = d if b == 1 else h  # the one head expanded: a view with one sequence, copies with more
        core = 4 * h + 2 * 4 * kv_width + 4 * heads * s
    else:
        core = e * (3 * h if new or alibi else 5 * h) + 4 * heads  # query, keys, values; log-sum-exp
    attention_saved = round(tokens * (layer_norm + e * h + core + e * h)) + rotary
    mlp_norm = {"sequential": layer_norm + e * h, "one_norm": 0, "two_norms": 2 * e + e * h}[layout]
    mlp_saved = round(tokens * (e * 2 * ffn + mlp_norm))
    kv = shape.bytes(2 * b * s * cached * d)
    crossing = {"sequential": h, "one_norm": 3 * h, "two_norms": 2 * h}[layout]
    attention_norm, mlp_norm_name = {"sequential": ("input_layernorm", "post_attention_layernorm"),
                                     "one_norm": ("input_layernorm", None),
                                     "two_norms": ("ln_attn", "ln_mlp")}[layout]

    layers: list[Layer] = [shape.layer("transformer.word_embeddings", vocab * h, h, saved_by_embedding(tokens))]
    for i in range(blocks):
        name = f"transformer.h.{i}"
        if split == "sublayer":
            mlp_modules = [f"{name}.{mlp_norm_name}", f"{name}.mlp"] if mlp_norm_name else []
            layers.append(shape.layer(f"{name}.self_attention", attention, crossing, attention_saved, kv,
                                      [f"{name}.{attention_norm}", f"{name}.self_attention"]))
            layers.append(shape.layer(f"{name}.mlp", mlp, h, mlp_saved, 0, mlp_modules))
        else:
            layers.append(shape.layer(name, attention + mlp, h, attention_saved + mlp_saved, kv))
    layers.append(shape.layer("transformer.ln_f", norm, h, round(tokens * layer_norm)))
    layers.append(shape.layer("lm_head", vocab * h, vocab, saved_by_head(tokens, e, h, vocab)))
    tied = f.flag("tie_word_embeddings", True)  # FalconConfig's default
    tied_groups = (TiedGroup(("transformer.word_embeddings", "lm_head"), vocab * h),) if tied else ()
    # Serving: vLLM caches the key/value groups (num_kv_heads with the new architecture, one
    # with multi_query), not transformers' broadcast heads; the MLP is plain (GELU): 2·F.
    vllm_cached = groups if new else 1 if multi_query else heads
    widths = BlockWidths(2 * vllm_cached * d, qkv_out, 2 * ffn, crossing if crossing != h else None)
    return Built(layers, tied_groups, h, Widths(h, vocab, (widths,) * blocks))
