"""BERT (``BertModel``, the backbone): three embeddings and a LayerNorm, blocks with biases,
a pooler.

``embeddings``, ``encoder.layer.i`` (``attention`` with its output LayerNorm;
``intermediate+output``, the MLP with its LayerNorm), ``pooler``.

Training saves, for T = b·s tokens, e the activation's bytes per element, as transformers 5.24
runs ``BertModel`` by default (``attn_implementation="sdpa"``, no attention mask: SDPA's fused
kernels, which keep no attention probabilities), calibrated against
``layerfit.runtime.from_hf_model`` (``tests/test_hf_activations.py``):

* a LayerNorm of h (:func:`~.saved.saved_by_layer_norm`): its input and its row mean and 1/std,
  T·e·(h + 2);
* ``embeddings``: the token and position ids, 16 bytes a token; the token-type ids, when none
  are passed a view of the model's ``token_type_ids`` buffer, whose whole storage is kept:
  8·``max_position_embeddings`` bytes a micro-batch; the LayerNorm;
* ``attention``: the projections' input e·h; q, k and v as SDPA takes them, 3·e·h; SDPA's
  output e·h (the output dense's input, the same storage once its heads are merged); its fp32
  log-sum-exp, 4·H; the output LayerNorm;
* ``intermediate+output``: the intermediate dense's input e·h; the activation's, I·e for
  ``gelu`` (its input; 4·I·e for ``gelu_new``); the output dense's input I·e; its LayerNorm;
* ``pooler``: its dense's input, a view of the first token of the last hidden state, whose
  whole storage is kept, T·e·h; the tanh's output, b·e·h.

Dropout follows the config (BertConfig's defaults 0.1): with ``hidden_dropout_prob`` > 0 the
embeddings, the attention's output and the MLP's output keep a mask of h a token each
(:func:`~.saved.saved_by_dropout`: 1 byte a value, a GPU's ``bool`` mask);
``attention_probs_dropout_prob`` adds nothing: SDPA's fused kernels draw it from a seed. A CPU
keeps the noise in e bytes a value, and its SDPA takes the math path when dropout is on (see
:mod:`.gpt2`): ``from_hf_model``'s CPU measurement matches with dropout off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InstanceError
from ...model.instance import Layer
from .gpt2 import activation_saved
from .saved import saved_by_dropout, saved_by_layer_norm
from .shape import Built, Part, Shape, join, within_positions

__all__ = ["bert"]


def bert(shape: Shape, split: str, raw: Mapping[str, Any]) -> Built:
    """BertModel."""
    if shape.kv_cache:
        raise InstanceError("kv_cache: BERT is an encoder; it keeps no KV cache")
    f = shape.fields
    h, blocks, vocab = f.int("hidden_size"), f.int("num_hidden_layers"), f.int("vocab_size")
    inter, heads = f.int("intermediate_size"), f.int("num_attention_heads")
    positions, types = f.int("max_position_embeddings"), f.int("type_vocab_size", 2)
    within_positions(shape, positions, "max_position_embeddings")
    hidden = f.probability("hidden_dropout_prob", 0.1)
    f.probability("attention_probs_dropout_prob", 0.1)  # checked; SDPA's fused kernels keep no mask
    attention = 4 * (h * h + h) + 2 * h  # q, k, v, output dense and its LayerNorm
    mlp = h * inter + inter + inter * h + h + 2 * h  # intermediate, output dense and its LayerNorm
    tokens, e = shape.b * shape.s, shape.e
    norm, mask = saved_by_layer_norm(tokens, e, h), saved_by_dropout(tokens, h, hidden)
    attention_saved = round(tokens * (e * h + 3 * e * h + e * h + 4 * heads)) + norm + mask
    act = activation_saved(raw.get("hidden_act", "gelu"))
    mlp_saved = round(tokens * e * (h + (act + 1) * inter)) + norm + mask
    layers = [shape.layer("embeddings", (vocab + positions + types) * h + 2 * h, h,
                          16 * tokens + 8 * positions + norm + mask)]
    for i in range(blocks):
        layers += join(shape, split, f"encoder.layer.{i}",
                       [Part(("attention",), attention, attention_saved),
                        Part(("intermediate+output",), mlp, mlp_saved)], h)
    pooled = shape.bytes(shape.b * h)
    pooler = Layer("pooler", params=h * h + h, activation_bytes=shape.tokens(h) + pooled if shape.training else pooled,
                   output_bytes=pooled if shape.training else None)
    layers.append(pooler)
    return Built(layers, (), h)
