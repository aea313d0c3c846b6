"""OLMo 2 (``Olmo2ForCausalLM``): norms after attention and after the MLP, and RMSNorms over the
whole of q and k.

``model.embed_tokens``, ``model.layers.i``, ``model.norm``, ``lm_head`` (untied unless
``tie_word_embeddings``). A block has no norm before its sub-layers: ``self_attn`` (q, k, v,
o, ``q_norm`` of q_dim and ``k_norm`` of kv_dim) holds ``post_attention_layernorm`` after it,
``mlp`` holds ``post_feedforward_layernorm``. ``head_dim`` defaults to hidden_size /
num_attention_heads; ``attention_bias`` adds the biases of q, k, v and o.

Training saves the Llama family's terms (:mod:`.saved`, calibrated on Llama), with OLMo 2's
own RMSNorm, which multiplies by its weight in fp32 before casting (:func:`.decoder.fp32_norm`,
T·(8w + 4) for T tokens): attention SDPA's tensors (:func:`.decoder.attention_core`) and three
norms, of q_dim (q), kv_dim (k) and h (after it); the MLP the projections' input, gate, up,
SiLU(gate) and their product, T·e·(h + 4·I), and its norm of h. Checked against
``from_hf_model``'s measurement (tests/test_hf_families.py).

KV cache: full attention, s positions a layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .decoder import attention_core, decoder, fp32_norm, kv_bytes, linear, read_heads
from .shape import BlockWidths, Built, Part, Shape

__all__ = ["olmo2"]


def olmo2(shape: Shape, split: str, raw: Mapping[str, Any]) -> Built:
    """Olmo2ForCausalLM."""
    f = shape.fields
    heads = read_heads(f)
    h, q_dim, kv_dim, blocks = heads.h, heads.q_dim, heads.kv_dim, f.int("num_hidden_layers")
    inter = f.int("intermediate_size")
    bias = f.flag("attention_bias", False)
    attention = (linear(h, q_dim, bias) + 2 * linear(h, kv_dim, bias) + linear(q_dim, h, bias)
                 + q_dim + kv_dim + h)  # q, k, v, o, q_norm, k_norm and the post-attention RMSNorm
    mlp = 3 * h * inter + h  # gate, up, down and the post-feedforward RMSNorm
    s, e = shape.s, shape.e
    tokens = shape.b * s
    attention_saved = (attention_core(tokens, s, e, heads) + fp32_norm(tokens, q_dim) + fp32_norm(tokens, kv_dim)
                       + fp32_norm(tokens, h))
    mlp_saved = int(round(tokens * e * (h + 4 * inter))) + fp32_norm(tokens, h)
    kv = kv_bytes(shape, kv_dim, None)
    parts = [Part(("self_attn", "post_attention_layernorm"), attention, attention_saved, kv, main="self_attn"),
             Part(("mlp", "post_feedforward_layernorm"), mlp, mlp_saved, main="mlp")]
    return decoder(shape, split, [parts] * blocks, h, q_dim, tied_default=False,
                   widths=[BlockWidths.of(q_dim, kv_dim, inter)] * blocks, norm_saved=fp32_norm(tokens, h))
