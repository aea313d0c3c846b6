"""What the decoder-only families share: their attention's widths, the positions each block's
KV cache keeps (sliding windows), and the chain ``model.embed_tokens``, ``model.layers.i``,
``model.norm``, ``lm_head``.

KV cache per block: 2 · b · p · kv_heads · head_dim values, p the positions it keeps after a
forward of s tokens (the moment the instance's activations describe):

* transformers 5's default cache (``DynamicCache(config=...)``, and the Hub's
  ``cache_implementation: "hybrid"``, which transformers 5 turns into it) keeps p = s in every
  layer, sliding ones too: a sliding layer's ``DynamicSlidingWindowLayer`` keeps the last W − 1
  positions as a view of the forward's s keys and values, so their storage stays whole until
  the next step (then W positions);
* a static cache (``cache_implementation`` ``"static"``, or the deprecated ``"sliding_window"``,
  ``"hybrid_chunked"``, …) gives a sliding layer a ``StaticSlidingWindowLayer`` of
  p = min(s, W) positions.

Which layers slide, and W, is transformers' rule for each family (:func:`sliding_windows`); the
windows also decide the training formulas' attention mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...errors import InstanceError
from ...model.instance import TiedGroup
from .saved import (saved_by_attention, saved_by_embedding, saved_by_head,
                    saved_by_rms_norm)
from .shape import BlockWidths, Built, Fields, Part, Shape, Widths, join

__all__ = ["Heads", "attention_core", "decoder", "fp32_norm", "kv_bytes", "linear", "read_heads", "sliding_windows"]


@dataclass(frozen=True)
class Heads:
    """The attention's widths: h the hidden size, q_dim = heads · head_dim, kv_dim = kv_heads · head_dim."""

    h: int
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def read_heads(f: Fields, head_dim: int | None = None) -> Heads:
    """``hidden_size``, ``num_attention_heads``, ``num_key_value_heads`` (default: the heads) and
    ``head_dim`` (default ``head_dim`` when the family's config class has one, else
    hidden_size / num_attention_heads)."""
    h, heads = f.int("hidden_size"), f.int("num_attention_heads")
    kv_heads = f.int("num_key_value_heads", heads)
    if heads % kv_heads:
        raise InstanceError(f"config.num_key_value_heads: {kv_heads} does not divide num_attention_heads {heads}")
    if head_dim is None:
        if h % heads and f.config.get("head_dim") is None:
            raise InstanceError(f"config.head_dim: missing, and hidden_size {h} is not a multiple of "
                                f"num_attention_heads {heads}")
        head_dim = h // heads
    return Heads(h, heads, kv_heads, f.int("head_dim", head_dim))


def linear(fan_in: int, fan_out: int, bias: bool) -> int:
    """An ``nn.Linear``'s parameters."""
    return fan_in * fan_out + (fan_out if bias else 0)


def sliding_windows(f: Fields, blocks: int, rule: str, default: int | None = None) -> list[int | None]:
    """Each block's attention window (None: full attention), by transformers' rule for the family
    (``default``: the family's config class's ``sliding_window`` when the config has none):

    * ``"none"``: full attention everywhere (Llama, OLMo 2);
    * ``"all"``: every layer slides when ``sliding_window`` is set (Mistral, Mixtral, Phi-3,
      whose configs have no ``layer_types``); ``"qwen_moe"``: the same, with ``use_sliding_window``;
    * ``"qwen"``: with ``use_sliding_window``, the layers from ``max_window_layers`` on (Qwen2, Qwen3);
    * ``"gemma2"``: every other layer, the first sliding; ``"gemma3"``: all but every
      ``sliding_window_pattern``-th (default 6).

    An explicit ``layer_types`` list (families whose config class has one) overrides the rule.
    """
    raw = f.config
    if rule == "none":
        return [None] * blocks
    window = raw.get("sliding_window", default)
    if rule in ("qwen", "qwen_moe") and not f.flag("use_sliding_window", False):
        window = None  # Qwen's config drops the window unless use_sliding_window
    if window is None:
        return [None] * blocks
    window = f.int("sliding_window", default)
    if rule == "gemma3" and f.flag("use_bidirectional_attention", False):
        window = window // 2 + 1  # transformers' Gemma3TextConfig: exclusive bounds both ways
    types = raw.get("layer_types") if rule in ("qwen", "gemma2", "gemma3") else None
    if types is not None:
        if not isinstance(types, list) or len(types) != blocks or not all(isinstance(t, str) for t in types):
            raise InstanceError(f"config.layer_types: must be a list of {blocks} strings (one a layer), got {types!r}")
        unknown = sorted(set(types) - {"full_attention", "sliding_attention"})
        if unknown:
            raise InstanceError(f"config.layer_types: unsupported layer type {unknown[0]!r} "
                                "(allowed: full_attention, sliding_attention)")
        return [window if t == "sliding_attention" else None for t in types]
    if rule in ("all", "qwen_moe"):
        return [window] * blocks
    if rule == "qwen":
        first = f.int("max_window_layers", 28)
        return [window if i >= first else None for i in range(blocks)]
    pattern = 2 if rule == "gemma2" else f.int("sliding_window_pattern", 6)
    return [window if (i + 1) % pattern else None for i in range(blocks)]


# transformers 5's cache_implementation values (generation/configuration_utils.py)
STATIC_CACHES = ("static", "sliding_window", "hybrid_chunked")
DYNAMIC_CACHES = ("dynamic", "hybrid")


def static_cache(f: Fields) -> bool:
    """Whether the config asks for a static cache (see the module docstring); the offloaded and
    quantized caches keep other bytes on the device, and are refused."""
    value = f.config.get("cache_implementation")
    if value is None or value in DYNAMIC_CACHES:
        return False
    if value in STATIC_CACHES:
        return True
    raise InstanceError(f"config.cache_implementation: {value!r} is not modelled "
                        f"(allowed: {', '.join(DYNAMIC_CACHES + STATIC_CACHES)})")


def kv_bytes(shape: Shape, kv_dim: int, window: int | None) -> int:
    """A block's keys and values after a forward of s tokens, 2 · b · p · kv_dim elements: p = s,
    or min(s, window) in a sliding layer of a static cache (see the module docstring)."""
    if not shape.kv_cache:
        return 0
    positions = shape.s
    if window is not None and static_cache(shape.fields):
        positions = min(shape.s, window)
    return shape.bytes(2 * shape.b * positions * kv_dim)


def attention_core(tokens: int, seq: int, e: float, heads: Heads, *, masked: bool = False) -> int:
    """What SDPA attention saves without its input norm: :func:`.saved.saved_by_attention` less its RMSNorm
    (for the families whose norms stand elsewhere or compute otherwise)."""
    return (saved_by_attention(tokens, seq, e, heads.h, heads.heads, heads.kv_heads, heads.head_dim, masked=masked)
            - saved_by_rms_norm(tokens, e, heads.h))


def fp32_norm(tokens: int, width: int, rows: int = 1) -> int:
    """An RMSNorm that multiplies by its weight in fp32 before casting (Gemma's, OLMo 2's): its fp32
    input, the fp32 normalized values and 1/rms, T·r·(8w + 4) bytes for T tokens of r rows of width w
    (Llama's keeps its normalized values in the activation's dtype: :func:`.saved.saved_by_rms_norm`)."""
    return tokens * rows * (8 * width + 4)


def decoder(shape: Shape, split: str, blocks: Sequence[Sequence[Part]], h: int, q_dim: int, *,
            tied_default: bool, widths: Sequence[BlockWidths], norm_saved: int | None = None, head_extra: int = 0,
            embed_extra: int = 0) -> Built:
    """``model.embed_tokens``, the blocks ``model.layers.i`` (each its parts), ``model.norm`` and
    ``lm_head``, tied to the embedding when ``config.tie_word_embeddings`` (default
    ``tied_default``, the family's config class's). In training the embedding, the final norm
    and the head save what :mod:`.saved` says (``norm_saved``: a family's own norm;
    ``head_extra``, ``embed_extra``: what its head, its embedding keep beyond those).
    ``widths``: each block's, for serving (:class:`~.shape.Widths`)."""
    f = shape.fields
    vocab = f.int("vocab_size")
    tokens, e = shape.b * shape.s, shape.e
    if norm_saved is None:
        norm_saved = saved_by_rms_norm(tokens, e, h)
    layers = [shape.layer("model.embed_tokens", vocab * h, h, saved_by_embedding(tokens) + embed_extra)]
    for i, parts in enumerate(blocks):
        layers += join(shape, split, f"model.layers.{i}", parts, h)
    layers.append(shape.layer("model.norm", h, h, norm_saved))
    layers.append(shape.layer("lm_head", vocab * h, vocab, saved_by_head(tokens, e, h, vocab) + head_extra))
    tied = f.flag("tie_word_embeddings", tied_default)
    groups = (TiedGroup(("model.embed_tokens", "lm_head"), vocab * h),) if tied else ()
    return Built(layers, groups, q_dim, Widths(h, vocab, tuple(widths)))
