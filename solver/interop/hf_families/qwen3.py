"""Qwen3 (``Qwen3ForCausalLM``) and Qwen3-MoE (``Qwen3MoeForCausalLM``): the Llama layout with
an RMSNorm over each head of q and k.

``model.embed_tokens``, ``model.layers.i`` (``input_layernorm``, ``self_attn`` with ``q_norm``
and ``k_norm`` of head_dim each, ``post_attention_layernorm``, ``mlp``), ``model.norm``,
``lm_head`` (untied unless ``tie_word_embeddings``). ``head_dim`` defaults to 128 in Qwen3
(its config class's default), to hidden_size / num_attention_heads in Qwen3-MoE;
``attention_bias`` adds the biases of q, k, v and o.

Qwen3-MoE: block i's ``mlp`` is sparse when ``num_experts`` > 0, i is not in
``mlp_only_layers`` and (i + 1) is a multiple of ``decoder_sparse_step``: a router
``mlp.gate`` (num_experts × h) and ``mlp.experts`` (fused ``gate_up_proj`` and ``down_proj``
of ``moe_intermediate_size`` I_m for each expert, 3·h·I_m); otherwise a dense gated MLP of
``intermediate_size``. Qwen3-MoE has no shared experts.

Training saves the Llama family's terms (:mod:`.saved`, calibrated against
``layerfit.runtime.from_hf_model``), plus what the RMSNorms of q and k keep over each head
(an fp32 copy of q and k, their normalized values and each head's 1/rms); the sparse MLP's
experts as Mixtral's, of width I_m and k = ``num_experts_per_tok``.

KV cache: s positions a layer, as transformers' default cache keeps them after a forward; with a
static cache (``cache_implementation``) and ``use_sliding_window``, Qwen3's layers from
``max_window_layers`` on (or those ``layer_types`` names ``sliding_attention``) and every
Qwen3-MoE layer keep min(s, W) positions of W = ``sliding_window`` (:mod:`.decoder`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InstanceError
from .saved import saved_by_attention, saved_by_experts, saved_by_gated_mlp
from .decoder import decoder, kv_bytes, linear, read_heads, sliding_windows
from .shape import BlockWidths, Built, Fields, Part, Shape

__all__ = ["qwen3"]


def qwen3(shape: Shape, split: str, raw: Mapping[str, Any]) -> Built:
    """Qwen3 and Qwen3-MoE."""
    f = shape.fields
    moe = raw["model_type"] == "qwen3_moe"
    heads = read_heads(f, None if moe else 128)
    h, q_dim, kv_dim, blocks = heads.h, heads.q_dim, heads.kv_dim, f.int("num_hidden_layers")
    bias = f.flag("attention_bias", False)
    attention = (linear(h, q_dim, bias) + 2 * linear(h, kv_dim, bias) + linear(q_dim, h, bias)
                 + 2 * heads.head_dim + h)  # q, k, v, o, q_norm, k_norm and the input RMSNorm
    b, s = shape.b, shape.s
    windows = sliding_windows(f, blocks, "qwen_moe" if moe else "qwen", 4096)
    e, tokens = shape.e, b * s
    # A window no longer than the sequence needs a mask: SDPA then takes k and v on every head.
    attention_saved = [saved_by_attention(tokens, s, e, h, heads.heads, heads.kv_heads, heads.head_dim,
                                       masked=w is not None and s >= w, qk_norm=True) for w in windows]
    inter = f.int("intermediate_size")
    dense = Part(("post_attention_layernorm", "mlp"), 3 * h * inter + h, saved_by_gated_mlp(tokens, e, h, inter))
    sparse_at = _sparse_blocks(f, blocks) if moe else set()
    widths = [BlockWidths.of(q_dim, kv_dim, inter)] * blocks
    if sparse_at:
        experts, active, moe_inter = f.int(_experts_key(raw)), f.int("num_experts_per_tok"), f.int("moe_intermediate_size")
        if active > experts:
            raise InstanceError(f"config.num_experts_per_tok: {active}, more than num_experts {experts}")
        sparse = Part(("post_attention_layernorm", "mlp"), experts * 3 * h * moe_inter + experts * h + h,
                      saved_by_experts(tokens, e, h, moe_inter, experts, active))
        widths = [BlockWidths.of(q_dim, kv_dim, active * moe_inter) if i in sparse_at else widths[i]
                  for i in range(blocks)]  # a token's k experts
    parts = [[Part(("input_layernorm", "self_attn"), attention, attention_saved[i], kv_bytes(shape, heads.kv_dim, windows[i])),
              sparse if i in sparse_at else dense] for i in range(blocks)]
    return decoder(shape, split, parts, h, q_dim, tied_default=False, widths=widths)


def _sparse_blocks(f: Fields, blocks: int) -> set[int]:
    """The blocks whose MLP is a mixture of experts (transformers' ``Qwen3MoeDecoderLayer`` rule)."""
    raw = f.config
    key = _experts_key(raw)
    experts = raw[key]
    if isinstance(experts, bool) or not isinstance(experts, int) or experts < 0:
        raise InstanceError(f"config.{key}: must be a non-negative integer, got {experts!r}")
    if experts == 0:
        return set()
    step = f.int("decoder_sparse_step", 1)
    dense_only = raw.get("mlp_only_layers") or []
    if not isinstance(dense_only, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < blocks for i in dense_only):
        raise InstanceError(f"config.mlp_only_layers: must be a list of block indices below num_hidden_layers "
                            f"{blocks}, got {dense_only!r}")
    return {i for i in range(blocks) if i not in dense_only and (i + 1) % step == 0}


def _experts_key(raw: Mapping[str, Any]) -> str:
    """The experts' count: ``num_experts`` in the published configs, ``num_local_experts`` as
    transformers 5 writes it (its ``attribute_map`` makes them one)."""
    present = [key for key in ("num_experts", "num_local_experts") if raw.get(key) is not None]
    if not present:
        raise InstanceError("config.num_experts: missing")
    if len(present) == 2 and raw["num_experts"] != raw["num_local_experts"]:
        raise InstanceError(f"config.num_experts: {raw['num_experts']!r}, but num_local_experts is "
                            f"{raw['num_local_experts']!r}")
    return present[0]
