"""GPT-2 (``GPT2LMHeadModel``): learned positions, biases everywhere, the head tied to ``wte``.

``transformer.wte+wpe``, ``transformer.h.i`` (``ln_1``, ``attn``, ``ln_2``, ``mlp``),
``transformer.ln_f``, ``lm_head``.

Training saves, for T = b·s tokens, e the activation's bytes per element, as transformers 5.24
runs it by default (``attn_implementation="sdpa"``: SDPA's fused kernels, which keep no
attention probabilities), calibrated against ``layerfit.runtime.from_hf_model``
(``tests/test_hf_activations.py``):

* a LayerNorm of h (:func:`~.saved.saved_by_layer_norm`): its input and its row mean and 1/std,
  T·e·(h + 2);
* attention (``ln_1``, ``attn``): its LayerNorm; ``c_attn``'s input e·h; its output, 3·e·h,
  of which q, k and v are views as SDPA takes them; SDPA's output e·h (``c_proj``'s input, the
  same storage once its heads are merged); SDPA's fp32 log-sum-exp, 4·H;
* the MLP (``ln_2``, ``mlp``): its LayerNorm; ``c_fc``'s input e·h; the activation's
  intermediates, 4·I·e for ``gelu_new`` (the default: its input, the cube, the tanh's input
  and output), I·e for a one-op activation (``gelu``, ``relu``, …, its input); ``c_proj``'s
  input I·e;
* the embeddings: the token and position ids, 16 bytes a token;
* ``ln_f``: a LayerNorm of h;
* the head with transformers' causal-LM loss (:func:`~.saved.saved_by_head`): its input e·h, the fp32
  log-probabilities 4·vocab, the labels 8.

Dropout follows the config (GPT2Config's defaults 0.1): with ``embd_pdrop`` > 0 the embeddings
keep a mask of h a token, with ``resid_pdrop`` > 0 the attention and the MLP one each
(:func:`~.saved.saved_by_dropout`: 1 byte a value, the ``bool`` mask a GPU's ``native_dropout``
keeps); ``attn_pdrop`` adds nothing: SDPA's fused kernels on a GPU draw the attention's
dropout from a seed they keep. A CPU runs both otherwise — its dropout keeps the scaled noise
in e bytes a value, and its SDPA takes the math path (probabilities and masks, s² a head) when
dropout is on — so ``from_hf_model``'s CPU measurement matches with dropout off; the tests
check the masks' count with dropout on. I is ``n_inner`` (default 4h).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...model.instance import TiedGroup
from .saved import saved_by_dropout, saved_by_head, saved_by_layer_norm
from .shape import BlockWidths, Built, Part, Shape, Widths, join, within_positions

__all__ = ["activation_saved", "gpt2"]

# Tensors of the MLP's width an activation keeps for its backward, beyond its output.
_ACTIVATION_SAVED = {"gelu_new": 4}


def activation_saved(name: object) -> int:
    """How many I-wide tensors ``config.activation_function`` (or ``hidden_act``) keeps:
    4 for ``gelu_new`` (a chain of elementwise ops), else 1 (its input)."""
    return _ACTIVATION_SAVED.get(name, 1) if isinstance(name, str) else 1


def gpt2(shape: Shape, split: str, raw: Mapping[str, Any]) -> Built:
    """GPT2LMHeadModel."""
    f = shape.fields
    h, blocks, vocab = f.int("n_embd"), f.int("n_layer"), f.int("vocab_size")
    positions, heads = f.int("n_positions"), f.int("n_head")
    within_positions(shape, positions, "n_positions")
    inner = f.int("n_inner", 4 * h)
    resid, embd = f.probability("resid_pdrop", 0.1), f.probability("embd_pdrop", 0.1)
    f.probability("attn_pdrop", 0.1)  # checked; SDPA's fused kernels keep no mask
    attention = 2 * h + h * 3 * h + 3 * h + h * h + h  # ln_1, c_attn, c_proj
    mlp = 2 * h + h * inner + inner + inner * h + h  # ln_2, c_fc, c_proj
    tokens, e = shape.b * shape.s, shape.e
    norm = saved_by_layer_norm(tokens, e, h)
    attention_saved = (norm + round(tokens * (e * h + 3 * e * h + e * h + 4 * heads))  # c_attn in/out, SDPA
                       + saved_by_dropout(tokens, h, resid))
    act = activation_saved(raw.get("activation_function", "gelu_new"))
    mlp_saved = norm + round(tokens * e * (h + (act + 1) * inner)) + saved_by_dropout(tokens, h, resid)
    kv = shape.bytes(2 * shape.b * shape.s * h)
    layers = [shape.layer("transformer.wte+wpe", vocab * h + positions * h, h,
                          16 * tokens + saved_by_dropout(tokens, h, embd))]
    for i in range(blocks):
        layers += join(shape, split, f"transformer.h.{i}",
                       [Part(("ln_1", "attn"), attention, attention_saved, kv), Part(("ln_2", "mlp"), mlp, mlp_saved)],
                       h)
    layers.append(shape.layer("transformer.ln_f", 2 * h, h, norm))
    layers.append(shape.layer("lm_head", vocab * h, vocab, saved_by_head(tokens, e, h, vocab)))
    tied = raw.get("tie_word_embeddings", True)  # GPT-2 ties its head to wte
    groups = (TiedGroup(("transformer.wte+wpe", "lm_head"), vocab * h),) if tied else ()
    return Built(layers, groups, h, Widths(h, vocab, (BlockWidths.of(h, h, inner, gated=False),) * blocks))
