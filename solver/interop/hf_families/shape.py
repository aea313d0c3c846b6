"""What every family's importer shares: a config's fields read with errors that name them,
the batch/sequence/element size that turn widths into bytes, and a block as one layer or
its sub-layers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import InstanceError
from ...model.instance import Layer, TiedGroup

__all__ = ["BlockWidths", "Built", "Fields", "Part", "Shape", "Widths", "join", "positive", "within_positions"]


class Fields:
    """Reads a config's integer fields with errors that name them."""

    def __init__(self, config: Mapping[str, Any]):
        self.config = config

    def int(self, key: str, default: int | None = None) -> int:
        value = self.config.get(key)
        if value is None:
            if default is None:
                raise InstanceError(f"config.{key}: missing")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InstanceError(f"config.{key}: must be a positive integer, got {value!r}")
        return value

    def probability(self, key: str, default: float) -> float:
        """A probability (a dropout's ``p``), between 0 and 1."""
        value = self.config.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise InstanceError(f"config.{key}: must be a probability between 0 and 1, got {value!r}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.config.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise InstanceError(f"config.{key}: must be true or false, got {value!r}")
        return value


def positive(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InstanceError(f"{where}: must be a positive integer, got {value!r}")
    return value


class Shape:
    """Batch, sequence and element size: the activation formulas of each family's docstring."""

    def __init__(self, fields: Fields, batch: int, seq: int, element: float, training: bool, kv_cache: bool):
        self.fields, self.b, self.s, self.e, self.training, self.kv_cache = fields, batch, seq, element, training, kv_cache

    def bytes(self, elements: float) -> int:
        return int(round(elements * self.e))

    def tokens(self, width: int) -> int:
        """b·s·width elements in bytes: a hidden state of that width."""
        return self.bytes(self.b * self.s * width)

    def layer(self, name: str, params: int, width: int, saved: int | None = None, kv: int = 0,
              modules: Sequence[str] = ()) -> Layer:
        """A layer whose output is b·s·width; in training it holds ``saved`` bytes instead."""
        output = self.tokens(width)
        if self.training and saved is not None:
            return Layer(name, params=params, activation_bytes=saved, output_bytes=output, modules=tuple(modules))
        return Layer(name, params=params, activation_bytes=output, kv_cache_bytes=kv if self.kv_cache else 0,
                     modules=tuple(modules))


@dataclass(frozen=True)
class Part:
    """A sub-layer of a block: the modules it holds (their names under the block, in the order
    they run; ``main``, default the last, names the sub-layer: ``("input_layernorm", "self_attn")``,
    or OLMo 2's ``("self_attn", "post_attention_layernorm")`` with ``main="self_attn"``), its
    parameters, its saved bytes in training and its KV cache."""

    modules: tuple[str, ...]
    params: int
    saved: int
    kv: int = 0
    main: str | None = None  # the module that names the sub-layer, when not the last (a post-norm follows it)


def join(shape: Shape, split: str, name: str, parts: Sequence[Part], width: int) -> list[Layer]:
    """A block as one layer, or (``split="sublayer"``) one layer per part, named after the
    part's main module and listing every module it holds (its norm too), so that an export
    covers the whole model."""
    if split == "sublayer":
        layers = []
        for part in parts:
            main = part.main or part.modules[-1]
            held = [f"{name}.{m}" for m in part.modules] if len(part.modules) > 1 else ()
            layers.append(shape.layer(f"{name}.{main}", part.params, width, part.saved, part.kv, held))
        return layers
    return [shape.layer(name, sum(p.params for p in parts), width, sum(p.saved for p in parts),
                        sum(p.kv for p in parts))]


@dataclass(frozen=True)
class BlockWidths:
    """A block's widths per token that a serving engine's memory follows, in elements
    (:mod:`layerfit.interop.serving`): ``cached`` the KV cache as vLLM keeps it (2·kv_dim, or
    MLA's latent), ``qkv`` the attention's projections' output (q_dim + 2·kv_dim), ``mlp`` the
    MLP's intermediate tensors (3·I gated — gate, up and their product —, 2·I plain; a mixture
    of experts' I is a token's: its experts' and the shared experts' widths), and ``crossing``
    what the attention sub-layer's output carries when it is not the hidden state (Falcon's
    parallel blocks)."""

    cached: int
    qkv: int
    mlp: int
    crossing: int | None = None

    @classmethod
    def of(cls, q_dim: int, kv_dim: int, inter: int, *, gated: bool = True) -> BlockWidths:
        """Multi-head (or grouped-query) attention, keys and values of ``kv_dim`` each, and an
        MLP of intermediate width ``inter``."""
        return cls(2 * kv_dim, q_dim + 2 * kv_dim, (3 if gated else 2) * inter)


@dataclass(frozen=True)
class Widths:
    """A decoder's widths for serving: the hidden size, the vocabulary and each block's."""

    hidden: int
    vocab: int
    blocks: tuple[BlockWidths, ...]


@dataclass(frozen=True)
class Built:
    """A family's layers in execution order, its tied groups, its attention's query width
    (for the FLOPs of the scores and the weighted sum) and, for a decoder a serving engine
    runs, its :class:`Widths` (None: an encoder)."""

    layers: list[Layer]
    tied: tuple[TiedGroup, ...]
    q_dim: int
    widths: Widths | None = None


def within_positions(shape: Shape, positions: int, field: str) -> None:
    """A model with learned position embeddings has none beyond ``config.<field>``."""
    if shape.s > positions:
        raise InstanceError(f"seq_len: {shape.s} tokens, beyond the model's {positions} learned positions "
                            f"(config.{field})")
