"""The seed's memory model: size(l) = weight + activation + buffer, S(P) = Σ size(l).

This is the model every method plans against (named ``"seed"``): a partition P fits when
S(P) ≤ C. It is additive, and on an additive chain the greedy count is optimal (see
:mod:`solver.greedy`). Richer models (schedules, buffer reuse) are separate, named options.

A layer's KV cache (``kv_cache_bytes``, inference) is held once for the whole batch,
whatever the schedule. Training state (an instance's ``training`` option) adds, per parameter, the gradient and
the optimizer's state to a layer's size: still additive, so everything above holds.

=====================  ====================================================================
``training``           bytes per parameter beyond the weights
=====================  ====================================================================
optimizer ``none``     gradient (the weight dtype)
optimizer ``sgd``      gradient + momentum (fp32, 4)
optimizer ``adam``     gradient + two moments (fp32, 4 + 4)
``master_weights``     + an fp32 copy of the weights (4); default on for 16-bit weights
                       with an optimizer
``bytes_per_param``    the whole per-parameter total, weights included (e.g. 16)
=====================  ====================================================================

Mixed-precision Adam on bf16 weights is the familiar 16 bytes per parameter:
2 (weights) + 2 (gradients) + 4 (master) + 4 + 4 (moments).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MEMORY_MODEL", "Footprint"]

MEMORY_MODEL = "seed"


@dataclass(frozen=True)
class Footprint:
    """size(l) of one layer (or S(P) of a partition), by component, in bytes."""

    weight: int
    activation: int
    buffer: int
    training_state: int = 0  # gradients, optimizer state, master weights
    kv_cache: int = 0  # keys and values of past tokens, held for the whole batch

    @property
    def total(self) -> int:
        return self.weight + self.activation + self.buffer + self.training_state + self.kv_cache

    def __add__(self, other: Footprint) -> Footprint:
        return Footprint(
            self.weight + other.weight,
            self.activation + other.activation,
            self.buffer + other.buffer,
            self.training_state + other.training_state,
            self.kv_cache + other.kv_cache,
        )
