"""GPT-OSS (``GptOssForCausalLM``): grouped-query attention with biases and attention sinks,
alternating sliding-window and full layers, a mixture of experts with biases.

``model.embed_tokens``, ``model.layers.i`` (``input_layernorm``, ``self_attn``,
``post_attention_layernorm``, ``mlp``), ``model.norm``, ``lm_head`` (not tied unless
``tie_word_embeddings``).

Parameters (h hidden, H heads, g KV heads, d ``head_dim``, E ``num_local_experts``, I
``intermediate_size``, an expert's width):

* ``self_attn``: ``q_proj`` h·H·d, ``k_proj`` and ``v_proj`` h·g·d, ``o_proj`` H·d·h, each
  with a bias when ``attention_bias`` (the default), and ``sinks``, one logit per head;
* ``mlp``: ``router`` (weight E·h and bias E) and ``experts``, fused: ``gate_up_proj``
  E·h·2I with ``gate_up_proj_bias`` E·2I, ``down_proj`` E·I·h with ``down_proj_bias`` E·h.

transformers keeps the norms in fp32 (``_keep_in_fp32_modules``); they are counted at the
model's dtype (3·h values a block). The published checkpoints store the experts in MXFP4:
pass ``dtype=`` for the weights you load.

KV cache: the rule of the other decoders (:func:`~.decoder.kv_bytes`, 2·b·p·g·d·e a block).
GPT-OSS builds transformers' default cache (``DynamicCache(config=...)``), whose sliding layers
(``layer_types``, default alternating from a sliding block 0) keep the last window − 1
positions as a view of the forward's keys and values: right after a prefill of s tokens their
storage holds all p = s positions, as the full layers' does (the moment the instance
describes; the next step trims them to the window). A static cache (``cache_implementation``
``"static"``, …) keeps p = min(s, ``sliding_window``) in a sliding layer.

Inference: each layer holds its output, b·s·h·e (the head: the logits, b·s·vocab·e).

Training saves, per token in bytes (e an activation element's; T = b·s tokens), as
transformers 5.24 runs it by default. It has no fused (``sdpa``) attention for sinks: the
default is the eager one, which keeps every head's probabilities, the sink's column included,
b·H·s·(s + 1)·e a block (a flash-attention kernel, ``attn_implementation=``, keeps none). The
norms compute in fp32 (:func:`~.decoder.fp32_norm`: fp32 input, normalised values and 1/rms,
8w + 4), the final one too; the embedding and the head (with the causal-LM loss) as
:mod:`~layerfit.interop.hf_families.saved` counts them:

* attention: ``input_layernorm`` and its output e·h (the projections' input); the query, the
  keys and values repeated to every head and the attention output, e·4·H·d; the row maxima's
  int64 indices, 8·H; the probabilities above;
* MoE: ``post_attention_layernorm`` and its output e·h (the router's input; its logits are not
  kept); each token's work in each of its k experts (grouped products, the default),
  e·(2h + 7I) + 40 + 2e: its input and weighted output rows, the fused projection's output
  (2I), the clamped SwiGLU's clamped gate, sigmoid, gated value, up + 1 and product (5I), the
  routing indices (int64) and weights; 4·E bytes of group offsets a micro-batch.

Rotary tables (per position) are not counted. ``tests/test_hf_families_moe.py`` compares each
block with what autograd saves in a small model, fp32 and bf16.

Attention FLOPs: ``q_dim`` = H·d; the eager attention computes every pair of positions,
sliding or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InstanceError
from .decoder import decoder, fp32_norm, kv_bytes
from .shape import BlockWidths, Built, Part, Shape

__all__ = ["gpt_oss", "layer_types"]

LAYER_TYPES = ("sliding_attention", "full_attention")


def layer_types(raw: Mapping[str, Any], blocks: int) -> list[str]:
    """Each block's attention: ``config.layer_types``, or transformers' default (sliding on
    even blocks, full on odd ones)."""
    types = raw.get("layer_types")
    if types is None:
        return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(blocks)]
    if not isinstance(types, list) or len(types) != blocks:
        raise InstanceError(f"config.layer_types: expected a list of {blocks} entries (num_hidden_layers), "
                            f"got {types!r}")
    for i, kind in enumerate(types):
        if kind not in LAYER_TYPES:
            raise InstanceError(f"config.layer_types[{i}]: unknown layer type {kind!r} "
                                f"(allowed: {', '.join(LAYER_TYPES)})")
    return list(types)


def gpt_oss(shape: Shape, split: str, raw: Mapping[str, Any]) -> Built:
    """GptOssForCausalLM."""
    f = shape.fields
    h, blocks = f.int("hidden_size"), f.int("num_hidden_layers")
    inter, heads = f.int("intermediate_size"), f.int("num_attention_heads")
    kv_heads = f.int("num_key_value_heads", 8)  # GptOssConfig's defaults
    head_dim = f.int("head_dim", 64)
    experts, active = f.int("num_local_experts"), f.int("num_experts_per_tok")
    if active > experts:
        raise InstanceError(f"config.num_experts_per_tok: {active} is more than num_local_experts {experts}")
    if heads % kv_heads:
        raise InstanceError(f"config.num_key_value_heads: {kv_heads} does not divide num_attention_heads {heads}")
    types = layer_types(raw, blocks)
    window = f.int("sliding_window") if "sliding_attention" in types else None
    bias = f.flag("attention_bias", True)
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    attention = (h  # input_layernorm
                 + h * q_dim + 2 * h * kv_dim + q_dim * h  # q, k, v, o
                 + ((q_dim + 2 * kv_dim + h) if bias else 0)
                 + heads)  # sinks
    mlp = (h  # post_attention_layernorm
           + experts * h + experts  # router
           + experts * (h * 2 * inter + 2 * inter + inter * h + h))  # experts and their biases
    b, s, e = shape.b, shape.s, shape.e
    tokens = b * s
    attention_saved = (fp32_norm(tokens, h) + round(tokens * (e * h + e * 4 * q_dim + 8 * heads))
                       + round(e * b * heads * s * (s + 1)))
    mlp_saved = (fp32_norm(tokens, h) + 4 * experts
                 + round(tokens * (e * h + active * (e * (2 * h + 7 * inter) + 40 + 2 * e))))

    parts = [[Part(("input_layernorm", "self_attn"), attention, attention_saved,
                   kv_bytes(shape, kv_dim, window if types[i] == "sliding_attention" else None)),
              Part(("post_attention_layernorm", "mlp"), mlp, mlp_saved)] for i in range(blocks)]
    return decoder(shape, split, parts, h, q_dim, tied_default=False, norm_saved=fp32_norm(tokens, h),
                   widths=[BlockWidths.of(q_dim, kv_dim, active * inter)] * blocks)  # a token's k experts
