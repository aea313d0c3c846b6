"""What torch saves for the backward pass in the Llama-type families (Llama, Mistral, Mixtral,
Qwen2, Qwen3), as transformers 5 runs them with ``attn_implementation="sdpa"``: calibrated
against ``layerfit.runtime.from_hf_model``, which measures it (``saved_tensors_hooks``, each
storage once, parameters excluded), within 5 % per layer in fp32 and bf16
(``tests/test_hf_activations.py``; the table in docs/importers.md).

Bytes for T = b·s tokens, e the activation's bytes per element (4 fp32, 2 bf16/fp16); the
"4"s are fp32 whatever the activation dtype:

* an RMSNorm of width w (transformers' ``LlamaRMSNorm``: it computes in fp32):
  T·((4 + e)·w + 4) — the fp32 copy of its input (the input itself in fp32), the normalized
  values in e (what its weight multiplies), and the fp32 1/rms of each row;
* attention (:func:`saved_by_attention`): its RMSNorm; the projections' input e·h; rotary's cos and
  sin, 2·head_dim·e; q, k and v as SDPA takes them, e·(q_dim + 2·kv_dim) (k and v repeated to
  every head, e·3·q_dim, when a mask is passed: a sliding window shorter than the sequence);
  the attention's output e·q_dim (o_proj's input); SDPA's fp32 log-sum-exp, 4·heads; with a
  mask, the b·s·s mask in e; Qwen3's RMSNorms of q and k over each head,
  (4 + e)·(q_dim + kv_dim) + 4·(heads + kv_heads);
* the gated MLP (:func:`saved_by_gated_mlp`): its RMSNorm; the projections' input e·h; gate's output
  (SiLU's input), SiLU's output, up's output and their product (down's input), 4·I·e;
* a mixture of experts with k of E experts a token (:func:`saved_by_experts`, transformers' fused
  experts with grouped products): its RMSNorm; the router's input e·h and fp32
  probabilities 4·E; per token and expert chosen, its input and output rows 2·h·e, gate-up's
  output, SiLU's output and the product 4·I·e, and 40 bytes of routing indices and weights
  (int64 and fp32); 4·E bytes of group offsets a micro-batch;
* the embedding: the token ids, 8 bytes a token (int64);
* the final norm: an RMSNorm of h;
* the head with transformers' causal-LM loss: its input e·h, the loss's fp32
  log-probabilities 4·vocab (the logits are upcast first), the labels 8.

Shared with GPT-2, BERT and Falcon (their modules' docstrings): a LayerNorm of width w
(:func:`saved_by_layer_norm`), T·e·(w + 2) — its input and its row mean and 1/std; a dropout with
p > 0 (:func:`saved_by_dropout`), a 1-byte mask a value (a GPU's; a CPU keeps e-byte noise).

Per-layer totals: a Llama-3-8B block saves 1.10× (fp32) and 1.20× (bf16) the formula this
replaces (which left out the norms' fp32 copies, rotary and the log-sum-exp), its final norm
2× and 3×, its head (with the loss) 1.00× and 1.97×.

The functions are named ``saved_by_*`` so that a family's own variables (``attention``: its
parameters, ``experts``: their number) do not shadow them; import them by name
(``from .saved import saved_by_attention``): ``from . import saved`` would make the package's
``__init__`` a dependency of the family modules it imports, an import cycle
(tests/test_architecture.py).
"""

from __future__ import annotations

__all__ = ["saved_by_attention", "saved_by_dropout", "saved_by_embedding", "saved_by_experts", "saved_by_gated_mlp",
           "saved_by_head", "saved_by_layer_norm", "saved_by_rms_norm"]


def _round(value: float) -> int:
    return int(round(value))


def saved_by_rms_norm(tokens: int, e: float, width: int, rows_per_token: int = 1) -> int:
    """An RMSNorm of ``width`` over ``rows_per_token`` rows a token (q/k norms: one a head)."""
    return _round(tokens * ((4 + e) * width * rows_per_token + 4 * rows_per_token))


def saved_by_attention(tokens: int, seq: int, e: float, h: int, heads: int, kv_heads: int, head_dim: int, *,
              masked: bool = False, qk_norm: bool = False) -> int:
    """The attention sub-layer with its input RMSNorm (see the module docstring)."""
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    sdpa_kv = q_dim if masked else kv_dim
    per_token = e * h + 2 * head_dim * e + e * (q_dim + 2 * sdpa_kv) + e * q_dim + 4 * heads
    if masked:
        per_token += seq * e
    saved = saved_by_rms_norm(tokens, e, h) + _round(tokens * per_token)
    if qk_norm:
        saved += saved_by_rms_norm(tokens, e, head_dim, heads) + saved_by_rms_norm(tokens, e, head_dim, kv_heads)
    return saved


def saved_by_gated_mlp(tokens: int, e: float, h: int, inter: int) -> int:
    """The gated MLP with its RMSNorm."""
    return saved_by_rms_norm(tokens, e, h) + _round(tokens * (e * h + 4 * inter * e))


def saved_by_experts(tokens: int, e: float, h: int, inter: int, num_experts: int, active: int) -> int:
    """A mixture of ``num_experts`` experts of width ``inter``, ``active`` a token, with its RMSNorm."""
    per_token = e * h + 4 * num_experts + active * (2 * h * e + 4 * inter * e + 40) + 4
    return saved_by_rms_norm(tokens, e, h) + _round(tokens * per_token) + 4 * num_experts


def saved_by_layer_norm(tokens: int, e: float, width: int) -> int:
    """A LayerNorm of ``width`` (GPT-2's, BERT's): its input and its mean and 1/std a row,
    T·e·(w + 2) (torch's CPU kernel keeps the row statistics in the input's dtype; a GPU's in
    fp32, 6 bytes a row more in 16-bit: noise beside the row)."""
    return _round(tokens * e * (width + 2))


def saved_by_dropout(tokens: int, width: int, p: float) -> int:
    """A dropout's mask over ``width`` values a token: 1 byte a value (the ``bool`` mask
    ``native_dropout`` keeps on a GPU), none when ``p`` is 0 (transformers' modules then skip it).
    A CPU keeps a scaled noise in the activation's dtype instead (e bytes a value)."""
    return tokens * width if p > 0 else 0


def saved_by_embedding(tokens: int) -> int:
    """The token ids an embedding keeps for its weight's gradient."""
    return 8 * tokens


def saved_by_head(tokens: int, e: float, h: int, vocab: int) -> int:
    """The LM head's input and the causal-LM loss's fp32 log-probabilities and labels."""
    return _round(tokens * (e * h + 4 * vocab + 8))
