"""Phi-3 (``Phi3ForCausalLM``): the Llama layout with fused projections.

``model.embed_tokens``, ``model.layers.i`` (``input_layernorm``, ``self_attn`` with one
``qkv_proj`` of h × (q_dim + 2·kv_dim) and ``o_proj``, ``post_attention_layernorm``, ``mlp``
with one ``gate_up_proj`` of h × 2I and ``down_proj``), ``model.norm``, ``lm_head`` (untied
unless ``tie_word_embeddings``); no biases. ``head_dim`` defaults to hidden_size /
num_attention_heads.

Training saves the Llama family's terms (:mod:`.saved`, calibrated on Llama), where the fused
projections' outputs are split into views: ``gate_up_proj``'s output is kept whole (up for
the product, gate for SiLU), as Llama's gate and up, so the MLP is ``saved.gated_mlp``.
Attention is ``saved.attention`` and T·e·(2·q_dim + kv_dim) more (T = b·s tokens): v, which
SDPA keeps, is a view of ``qkv_proj``'s output and keeps all of it alive (q_dim + kv_dim more);
and Phi-3's rotary (a ``cat``, for its partial rotary factor) leaves q contiguous heads-first,
so SDPA's output comes out heads-first too and o_proj's input is a copy of it, both kept
(q_dim more). Checked against ``from_hf_model``'s measurement (tests/test_hf_families.py). Dropout (``resid_pdrop``, ``embd_pdrop``, ``attention_dropout``) is 0 in the
published configs; masks of a nonzero one are not counted.

KV cache: s positions a layer, as transformers' default cache keeps them after a forward; with
a static cache (``cache_implementation``) and ``sliding_window`` (Phi-3-mini-4k's is 2047),
min(s, W) (:mod:`.decoder`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .saved import saved_by_attention, saved_by_gated_mlp
from .decoder import decoder, kv_bytes, read_heads, sliding_windows
from .shape import BlockWidths, Built, Part, Shape

__all__ = ["phi3"]


def phi3(shape: Shape, split: str, raw: Mapping[str, Any]) -> Built:
    """Phi3ForCausalLM."""
    f = shape.fields
    heads = read_heads(f)
    h, q_dim, kv_dim, blocks = heads.h, heads.q_dim, heads.kv_dim, f.int("num_hidden_layers")
    inter = f.int("intermediate_size")
    attention = h * (q_dim + 2 * kv_dim) + q_dim * h + h  # qkv_proj, o_proj and the input RMSNorm
    mlp = h * 2 * inter + inter * h + h  # gate_up_proj, down_proj and the post-attention RMSNorm
    s, e = shape.s, shape.e
    tokens = shape.b * s
    windows = sliding_windows(f, blocks, "all")
    # the fused output beside v, kept alive by v; SDPA's heads-first output beside o_proj's input
    qkv_rest = int(round(tokens * e * (q_dim + kv_dim + q_dim)))
    attention_saved = [saved_by_attention(tokens, s, e, h, heads.heads, heads.kv_heads, heads.head_dim,
                                       masked=w is not None and s >= w) + qkv_rest for w in windows]
    mlp_saved = saved_by_gated_mlp(tokens, e, h, inter)
    parts = [[Part(("input_layernorm", "self_attn"), attention, attention_saved[i], kv_bytes(shape, heads.kv_dim, windows[i])),
              Part(("post_attention_layernorm", "mlp"), mlp, mlp_saved)] for i in range(blocks)]
    return decoder(shape, split, parts, h, q_dim, tied_default=False,
                   widths=[BlockWidths.of(q_dim, kv_dim, inter)] * blocks)
