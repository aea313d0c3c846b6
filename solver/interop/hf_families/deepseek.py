"""DeepSeek-V2 and DeepSeek-V3 (``DeepseekV2ForCausalLM``, ``DeepseekV3ForCausalLM``):
multi-head latent attention (MLA) and a mixture of experts with shared experts.

``model.embed_tokens``, ``model.layers.i`` (``input_layernorm``, ``self_attn``,
``post_attention_layernorm``, ``mlp``), ``model.norm``, ``lm_head`` (not tied unless
``tie_word_embeddings``).

Parameters, as transformers 5 builds them (h hidden, H heads, d_nope/d_rope/d_v the
``qk_nope_head_dim``/``qk_rope_head_dim``/``v_head_dim``, r_q/r_kv the ``q_lora_rank``/
``kv_lora_rank``):

* ``self_attn``: ``q_proj`` h·H·(d_nope + d_rope) when ``q_lora_rank`` is null, else
  ``q_a_proj`` h·r_q, ``q_a_layernorm`` r_q and ``q_b_proj`` r_q·H·(d_nope + d_rope);
  ``kv_a_proj_with_mqa`` h·(r_kv + d_rope), ``kv_a_layernorm`` r_kv, ``kv_b_proj``
  r_kv·H·(d_nope + d_v), ``o_proj`` H·d_v·h; with ``attention_bias`` ``q_a_proj``,
  ``kv_a_proj_with_mqa`` and ``o_proj`` carry biases.
* ``mlp``: the first ``first_k_dense_replace`` blocks a gated MLP of ``intermediate_size``
  (3·h·I; V2's ``mlp_bias`` adds biases); every later block a MoE: ``experts`` (fused
  ``gate_up_proj`` and ``down_proj``, 3·h·I_moe each of ``n_routed_experts``), the router
  ``gate`` (``n_routed_experts``·h) and ``shared_experts``, one gated MLP of width
  ``n_shared_experts``·I_moe. V3's router also keeps ``e_score_correction_bias``, a buffer
  (in the checkpoint, not a parameter: not counted, ``n_routed_experts`` fp32 values a
  block). transformers keeps the router's weight in fp32; it is counted at the model's dtype.
* ``moe_layer_freq``: DeepSeek's own code puts a MoE only where ``i % moe_layer_freq == 0``;
  transformers ignores the field (a MoE in every block from ``first_k_dense_replace`` on), so
  only 1, every published checkpoint's value, is read.
* V3's multi-token-prediction module (``num_nextn_predict_layers``) is in the checkpoint but
  transformers does not build it: not counted (DeepSeek-V3's 671B, not 685B).

KV cache: transformers 5's ``DynamicCache`` keeps the latent, not the heads: per block and
token the normalised ``kv_a`` latent (r_kv) and the rotated shared key (d_rope), one "head"
each — b·s·(r_kv + d_rope)·e, the same as vLLM's MLA cache. (transformers 4.x cached the
decompressed keys and values of every head, b·s·H·(d_nope + d_rope + d_v)·e.)

Inference: each layer holds its output, b·s·h·e (the head: the logits, b·s·vocab·e).

Training saves, per token in bytes (e an activation element's; T = b·s tokens;
E = ``n_routed_experts``, k = ``num_experts_per_tok``), as
transformers 5.24 runs it by default (``sdpa`` attention, grouped expert products), with the
shared terms of :mod:`~layerfit.interop.hf_families.saved` (an RMSNorm of width w:
(4 + e)·w + 4, its fp32 input copy, normalised values and 1/rms; the embedding's token ids;
the head with the causal-LM loss):

* attention: ``input_layernorm`` and its output e·h (the input of ``q_proj`` or ``q_a_proj``
  and of ``kv_a_proj_with_mqa``); with ``q_lora_rank`` ``q_a_layernorm`` and its output
  e·r_q; ``kv_a_layernorm`` and its output e·r_kv (in fp32, e = 4, that norm's input is a view
  that keeps the rotary part of the latent too, 4·d_rope more); the query and key of every
  head, e·2·H·(d_nope + d_rope), the values, a view that keeps all of ``kv_b_proj``'s output,
  e·H·(d_nope + d_v), the attention output e·H·d_v and the fp32 log-sum-exp 4·H. A GPU's
  memory-efficient kernel takes the value head narrower than the key's; on a CPU ``sdpa``
  falls back to its math path, which keeps fp32 copies and the probabilities: not counted;
* dense MLP: as Llama's (:func:`~.saved.saved_by_gated_mlp`);
* MoE: ``post_attention_layernorm`` and its output e·h (the shared experts' input; in fp32 the
  router's too); the router, which computes in fp32: its input's fp32 copy 4h (e ≠ 4), its
  logits and scores 8·E; V3's group-limited choice 4 + 16·``n_group`` + 8·``topk_group`` + E
  (group indices, the mask, the normaliser); each token's work in each of its k experts,
  e·(2h + 4·I_moe) + 40 — its input and weighted output rows, gate-up's output, SiLU's and
  the product, and routing indices and weights, as Mixtral's
  (:func:`~.saved.saved_by_experts`); the shared experts e·4·n_shared·I_moe; 4·E bytes of
  group offsets a micro-batch.

Rotary tables (per position, not per token) are not counted. ``tests/test_hf_families_moe.py``
compares each block with what autograd saves in a small model (fp32 and bf16, value heads as
wide as the keys so that a CPU runs fused attention).

Attention FLOPs: the scores take H·(d_nope + d_rope) and the weighted sum H·d_v multiply-adds
per pair of positions, so ``q_dim`` is their mean, H·(d_nope + d_rope + d_v)/2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InstanceError
from .saved import saved_by_gated_mlp, saved_by_rms_norm
from .decoder import decoder
from .shape import BlockWidths, Built, Fields, Part, Shape

__all__ = ["deepseek"]


def _count(f: Fields, key: str, default: int) -> int:
    """A non-negative integer field (0 allowed: no dense blocks, no shared experts); null is
    refused, as transformers cannot build it."""
    value = f.config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InstanceError(f"config.{key}: must be a non-negative integer, got {value!r}")
    return value


def _optional(f: Fields, key: str) -> int | None:
    """A positive integer or null (``q_lora_rank``: null is a plain ``q_proj``)."""
    if f.config.get(key) is None:
        return None
    return f.int(key)


def deepseek(shape: Shape, split: str, raw: Mapping[str, Any]) -> Built:
    """DeepSeek-V2 (``deepseek_v2``) and DeepSeek-V3 (``deepseek_v3``)."""
    f = shape.fields
    v3 = raw["model_type"] == "deepseek_v3"
    h, blocks = f.int("hidden_size"), f.int("num_hidden_layers")
    heads = f.int("num_attention_heads")
    d_nope, d_rope, d_v = f.int("qk_nope_head_dim"), f.int("qk_rope_head_dim"), f.int("v_head_dim")
    r_kv, r_q = f.int("kv_lora_rank"), _optional(f, "q_lora_rank")
    inter, moe_inter = f.int("intermediate_size"), f.int("moe_intermediate_size")
    experts, active = f.int("n_routed_experts"), f.int("num_experts_per_tok")
    shared = _count(f, "n_shared_experts", 1 if v3 else 2)
    dense_blocks = _count(f, "first_k_dense_replace", 3 if v3 else 0)
    if active > experts:
        raise InstanceError(f"config.num_experts_per_tok: {active} is more than n_routed_experts {experts}")
    freq = raw.get("moe_layer_freq", 1)
    if freq != 1 or isinstance(freq, bool):
        raise InstanceError(f"config.moe_layer_freq: {freq!r}; transformers builds a MoE in every block from "
                            "first_k_dense_replace on (it ignores this field), so only 1 is read")
    attention_bias = f.flag("attention_bias", False)
    mlp_bias = f.flag("mlp_bias", False) and not v3  # V3's MLPs have no bias option
    qk_dim = d_nope + d_rope

    if r_q is None:
        query = h * heads * qk_dim
    else:
        query = h * r_q + (r_q if attention_bias else 0) + r_q + r_q * heads * qk_dim
    attention = (h  # input_layernorm
                 + query
                 + h * (r_kv + d_rope) + ((r_kv + d_rope) if attention_bias else 0)  # kv_a_proj_with_mqa
                 + r_kv  # kv_a_layernorm
                 + r_kv * heads * (d_nope + d_v)  # kv_b_proj
                 + heads * d_v * h + (h if attention_bias else 0))  # o_proj

    def gated(width: int) -> int:
        return 3 * h * width + ((2 * width + h) if mlp_bias else 0)

    dense = h + gated(inter)  # post_attention_layernorm, gate/up/down
    moe = h + experts * 3 * h * moe_inter + experts * h + gated(shared * moe_inter)

    b, s, e = shape.b, shape.s, shape.e
    tokens = b * s
    q_path = saved_by_rms_norm(tokens, e, r_q) + round(tokens * e * r_q) if r_q is not None else 0
    kv_path = saved_by_rms_norm(tokens, e, r_kv) + round(tokens * (e * r_kv + (4 * d_rope if e == 4 else 0)))
    attention_saved = (saved_by_rms_norm(tokens, e, h) + q_path + kv_path
                       + round(tokens * (e * h + e * heads * (2 * qk_dim + (d_nope + d_v) + d_v) + 4 * heads)))
    dense_saved = saved_by_gated_mlp(tokens, e, h, inter)
    router = 8 * experts + (4 * h if e != 4 else 0)
    if v3:
        router += 4 + 16 * f.int("n_group", 8) + 8 * f.int("topk_group", 4) + experts
    norm_out = e * h if shared or e == 4 else 0  # read by the shared experts (and, in fp32, the router)
    moe_saved = (saved_by_rms_norm(tokens, e, h) + 4 * experts
                 + round(tokens * (norm_out + router + active * (e * (2 * h + 4 * moe_inter) + 40)
                                   + e * 4 * shared * moe_inter)))
    kv = shape.bytes(b * s * (r_kv + d_rope))

    parts = [[Part(("input_layernorm", "self_attn"), attention, attention_saved, kv),
              Part(("post_attention_layernorm", "mlp"), dense if i < dense_blocks else moe,
                   dense_saved if i < dense_blocks else moe_saved)] for i in range(blocks)]
    # Serving (vLLM's MLA): the cache holds the latent and the shared rotary key, one "head"; a
    # prefill decompresses queries, keys and values for every head. A MoE block's MLP: a token's
    # k routed experts and the shared ones.
    widths = [BlockWidths(r_kv + d_rope, heads * (2 * qk_dim + d_v),
                          3 * (inter if i < dense_blocks else (active + shared) * moe_inter)) for i in range(blocks)]
    return decoder(shape, split, parts, h, heads * (qk_dim + d_v) // 2, tied_default=False, widths=widths)
