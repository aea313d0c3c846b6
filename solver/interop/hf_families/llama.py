"""The Llama layout (``LlamaForCausalLM`` and its kin): Llama 1–3.x, Mistral, Mixtral, Qwen2/2.5.

``model.embed_tokens``, ``model.layers.i`` (``input_layernorm``, ``self_attn``,
``post_attention_layernorm``, ``mlp``), ``model.norm``, ``lm_head``. Mixtral's sparse MLP is
``mlp`` too (transformers 5: a router ``mlp.gate`` and fused experts). Llama's
``attention_bias`` adds the biases of q, k, v and o, its ``mlp_bias`` those of gate, up and
down (Mistral's and Mixtral's modules have none, whatever the config says; Qwen2's q, k and v
always have). KV cache: s positions a layer after a forward of s tokens, as transformers'
default cache keeps them; with a static cache (``cache_implementation``), Mistral's or
Mixtral's ``sliding_window`` layers, or Qwen2's with ``use_sliding_window`` (from
``max_window_layers`` on), keep min(s, W) (:mod:`.decoder`).

Training saves what torch saves for the backward pass (no dropout; fused attention, the
``sdpa`` default, keeps no s×s scores), term by term in :mod:`.saved`, calibrated within 5 %
per layer against ``layerfit.runtime.from_hf_model``'s measurement: each RMSNorm an fp32 copy
of its input, its normalized values and 1/rms; attention the projections' input, rotary's
cos and sin, q, k, v, the output and the log-sum-exp (with a sliding window no longer than the
sequence, a mask, and k and v repeated to every head); the gated MLP the projections' input,
gate, up, SiLU(gate) and their product; Mixtral's experts the rows of each token's k experts
and the routing; the embedding the token ids; the head its input and the loss's fp32
log-probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InstanceError
from .saved import saved_by_attention, saved_by_experts, saved_by_gated_mlp
from .decoder import decoder, kv_bytes, sliding_windows
from .shape import BlockWidths, Built, Part, Shape

__all__ = ["llama"]


def llama(shape: Shape, split: str, raw: Mapping[str, Any]) -> Built:
    """Llama, Mistral, Qwen2 and Mixtral."""
    f = shape.fields
    family = raw["model_type"]
    h, blocks = f.int("hidden_size"), f.int("num_hidden_layers")
    inter, heads = f.int("intermediate_size"), f.int("num_attention_heads")
    kv_heads = f.int("num_key_value_heads", heads)
    if h % heads and "head_dim" not in raw:
        raise InstanceError(f"config.head_dim: missing, and hidden_size {h} is not a multiple of num_attention_heads {heads}")
    head_dim = f.int("head_dim", h // heads)
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    if family == "qwen2":  # Qwen2's q, k, v carry biases
        bias = q_dim + 2 * kv_dim
    elif family == "llama" and f.flag("attention_bias", False):  # q, k, v and o (Mistral's, Mixtral's: never)
        bias = q_dim + 2 * kv_dim + h
    else:
        bias = 0
    attention = h * q_dim + 2 * h * kv_dim + q_dim * h + bias + h  # q, k, v, o and the input RMSNorm
    b, s = shape.b, shape.s
    rule, window = {"mistral": ("all", 4096), "mixtral": ("all", None), "qwen2": ("qwen", 4096)}.get(family, ("none", None))
    windows = sliding_windows(f, blocks, rule, window)  # the config classes' default windows
    e, tokens = shape.e, b * s
    # A window no longer than the sequence needs a mask: SDPA then takes k and v on every head.
    attention_saved = [saved_by_attention(tokens, s, e, h, heads, kv_heads, head_dim, masked=w is not None and s >= w)
                       for w in windows]
    kv = [kv_bytes(shape, kv_dim, w) for w in windows]  # s positions, or min(s, W) in a static cache: decoder.py
    if family == "mixtral":
        experts, active = f.int("num_local_experts"), f.int("num_experts_per_tok")
        mlp = experts * 3 * h * inter + h * experts + h  # experts, router, post-attention RMSNorm
        mlp_saved = saved_by_experts(tokens, e, h, inter, experts, active)
        width = BlockWidths.of(q_dim, kv_dim, active * inter)  # a token's k experts
    else:
        mlp = 3 * h * inter + h  # gate, up, down and the post-attention RMSNorm
        if family == "llama" and f.flag("mlp_bias", False):
            mlp += 2 * inter + h  # gate's, up's and down's biases
        mlp_saved = saved_by_gated_mlp(tokens, e, h, inter)
        width = BlockWidths.of(q_dim, kv_dim, inter)
    parts = [[Part(("input_layernorm", "self_attn"), attention, attention_saved[i], kv[i]),
              Part(("post_attention_layernorm", "mlp"), mlp, mlp_saved)] for i in range(blocks)]
    return decoder(shape, split, parts, h, q_dim, tied_default=False, widths=[width] * blocks)  # untied: these families' config default
