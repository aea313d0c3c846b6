"""The seed's memory model: size(l) = weight + activation + buffer, S(P) = Σ size(l).

This is the model every method plans against (named ``"seed"``): a partition P fits when
S(P) ≤ C. It is additive, and on an additive chain the greedy count is optimal (see
:mod:`solver.greedy`). Richer models (schedules, buffer reuse) are separate, named options.
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

    @property
    def total(self) -> int:
        return self.weight + self.activation + self.buffer

    def __add__(self, other: Footprint) -> Footprint:
        return Footprint(self.weight + other.weight, self.activation + other.activation, self.buffer + other.buffer)
