"""Gemma 2 (``Gemma2ForCausalLM``) and Gemma 3's text model (``Gemma3ForCausalLM``,
``model_type`` ``gemma3_text``): four RMSNorms a block, the embedding scaled by √h, the head
tied to it by default.

``model.embed_tokens`` (``Gemma2TextScaledWordEmbedding``: its scale is a buffer, not a
parameter), ``model.layers.i``, ``model.norm``, ``lm_head``. A block's two sub-layers hold
their norms on both sides: ``self_attn`` holds ``input_layernorm``, ``self_attn`` (Gemma 3:
with ``q_norm`` and ``k_norm`` of head_dim each) and ``post_attention_layernorm``; ``mlp``
holds ``pre_feedforward_layernorm``, ``mlp`` and ``post_feedforward_layernorm``.
A field the config leaves out takes its config class's default, as in transformers (Gemma 3's
published ``text_config`` leaves out the 4B's heads and vocabulary): hidden_size 2304,
intermediate_size 9216, 26 layers, 8 heads, 4 KV heads, ``head_dim`` 256, vocab_size 256000
(Gemma 2) or 262208 (Gemma 3). ``attention_bias`` adds the
biases of q, k, v and o; ``query_pre_attn_scalar`` and the soft-capping values scale values
and change no byte, except as below.

Training saves the Llama family's terms (:mod:`.saved`), with Gemma's own norm and, in Gemma 2,
its eager attention; T = b·s tokens, e bytes an element (checked against ``from_hf_model``'s
measurement in tests/test_hf_families.py):

* an RMSNorm of width w over r rows a token (Gemma's computes in fp32 and multiplies by
  1 + weight there, then casts): its fp32 input, the fp32 normalized values, 1/rms, and
  1 + weight once, T·r·(8w + 4) + 4w (Llama's keeps its normalized values in e);
* attention, its norms before and after: the projections' input e·h, rotary's cos and sin
  2·head_dim·e, q e·q_dim, the attention's output e·q_dim and
  - Gemma 3 (``sdpa``): k and v as SDPA takes them, e·2·kv_dim (e·2·q_dim, and the s×s mask
    e·s, when a sliding window no longer than the sequence needs a mask), its log-sum-exp
    4·heads, and the RMSNorms of q and k over each head;
  - Gemma 2 (``eager``, transformers' default: SDPA cannot soft-cap): k and v repeated to
    every head, e·2·q_dim, and the scores of every head, heads·s·(4 + e + e·[softcap]): the
    ``tanh`` of the soft-capped scores (``attn_logit_softcapping``, default 50), the fp32
    softmax and its cast back (one tensor when e = 4); dropout is 0, so no mask;
* the MLP (GELU-tanh gated), its norms before and after: the projections' input, gate, up,
  GELU(gate) and their product, T·e·(h + 4·I);
* the embedding its token ids (:func:`.saved.saved_by_embedding`) and its scale √h, one value in e;
  the final norm a Gemma RMSNorm of h; the head as Llama's (:func:`.saved.saved_by_head`), and in
  Gemma 2 the ``tanh`` of its soft-capped logits (``final_logit_softcapping``, default 30),
  T·e·vocab more.

KV cache: after a forward of s tokens transformers' default cache keeps all s positions in
every layer, the sliding ones too (a view of the last W − 1 keeps the forward's keys and values
whole until the next step; transformers 5 turns the Hub's ``cache_implementation: "hybrid"``
into that cache). With a static cache (``cache_implementation: "static"``), each sliding layer
keeps min(s, W) (W = ``sliding_window``, default 4096): Gemma 2's every other layer (the first
slides), Gemma 3's all but every ``sliding_window_pattern``-th (default 6), or as
``layer_types`` says (:mod:`.decoder`).

``gemma3`` (``Gemma3ForConditionalGeneration``, the multimodal model) is refused: its SigLIP
vision tower and projector are not a family here; import its ``text_config`` as
``gemma3_text`` (its layers are then named as ``Gemma3ForCausalLM``'s, without the
multimodal model's ``model.language_model.`` prefix).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .decoder import attention_core, decoder, fp32_norm, kv_bytes, linear, read_heads, sliding_windows
from .shape import BlockWidths, Built, Fields, Part, Shape

__all__ = ["gemma", "MULTIMODAL"]

MULTIMODAL = ("config.model_type: 'gemma3' is Gemma3ForConditionalGeneration, a SigLIP vision tower beside the "
              "text model, which from_hf_config does not read; import its text model: config['text_config'] "
              "(model_type 'gemma3_text')")
# transformers' config classes' defaults for the widths: Gemma 3's published text_config leaves
# out what its class defaults (the 4B's: vocab_size, the heads, head_dim), so a missing field is
# read as transformers reads it.
_DEFAULTS = {family: dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                          num_key_value_heads=4, head_dim=256, vocab_size=vocab)
             for family, vocab in (("gemma2", 256000), ("gemma3_text", 262208))}
_SOFTCAP = {"gemma2": (50.0, 30.0), "gemma3_text": (None, None)}  # attention's, the logits' defaults


def gemma(shape: Shape, split: str, raw: Mapping[str, Any]) -> Built:
    """Gemma 2 and Gemma 3 (text)."""
    family = raw["model_type"]
    raw = {**_DEFAULTS[family], **raw}
    shape = Shape(Fields(raw), shape.b, shape.s, shape.e, shape.training, shape.kv_cache)
    f = shape.fields
    heads = read_heads(f, 256)
    h, q_dim, kv_dim, blocks = heads.h, heads.q_dim, heads.kv_dim, f.int("num_hidden_layers")
    inter = f.int("intermediate_size")
    bias = f.flag("attention_bias", False)
    qk_norms = 2 * heads.head_dim if family == "gemma3_text" else 0
    attention = (linear(h, q_dim, bias) + 2 * linear(h, kv_dim, bias) + linear(q_dim, h, bias)
                 + qk_norms + 2 * h)  # q, k, v, o, (q_norm, k_norm), the norms before and after
    mlp = 3 * h * inter + 2 * h  # gate, up, down, the norms before and after
    s, e = shape.s, shape.e
    tokens = shape.b * s
    attention_cap, logits_cap = (raw.get(key, default) for key, default in
                                 zip(("attn_logit_softcapping", "final_logit_softcapping"), _SOFTCAP[family]))
    windows = sliding_windows(f, blocks, "gemma2" if family == "gemma2" else "gemma3", 4096)
    norms = 2 * _norm(tokens, h)  # before and after
    if family == "gemma2":  # eager: q, k and v on every head, the output, and the scores
        scores = heads.heads * s * (4 + (e if e != 4 else 0) + (e if attention_cap is not None else 0))
        per_token = e * h + 2 * heads.head_dim * e + 4 * e * q_dim + scores
        attention_saved = [norms + int(round(tokens * per_token))] * blocks
    else:
        qk_saved = _norm(tokens, heads.head_dim, heads.heads) + _norm(tokens, heads.head_dim, heads.kv_heads)
        attention_saved = [norms + qk_saved + attention_core(tokens, s, e, heads, masked=w is not None and s >= w)
                           for w in windows]
    mlp_saved = norms + int(round(tokens * e * (h + 4 * inter)))
    parts = [[Part(("input_layernorm", "self_attn", "post_attention_layernorm"), attention, attention_saved[i],
                   kv_bytes(shape, heads.kv_dim, windows[i]), main="self_attn"),
              Part(("pre_feedforward_layernorm", "mlp", "post_feedforward_layernorm"), mlp, mlp_saved, main="mlp")]
             for i in range(blocks)]
    head_extra = shape.tokens(f.int("vocab_size")) if logits_cap is not None else 0
    return decoder(shape, split, parts, h, q_dim, tied_default=True, widths=[BlockWidths.of(q_dim, kv_dim, inter)] * blocks,
                   norm_saved=_norm(tokens, h), head_extra=head_extra,
                   embed_extra=shape.bytes(1))  # the embedding's scale, cast to the weights' dtype


def _norm(tokens: int, width: int, rows: int = 1) -> int:
    """A Gemma RMSNorm's saved bytes: an fp32 norm, and 1 + weight once."""
    return fp32_norm(tokens, width, rows) + 4 * width
