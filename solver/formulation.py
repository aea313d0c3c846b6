"""The data of the exact models, shared by CP-SAT and MIP: one problem, two backends.

Both models solve the bottleneck problem on a chain: k contiguous non-empty partitions,
each fitting the capacity, minimising S_max = max_j S(P_j). ``min_partitions`` reduces
to it: its count k* is fixed by the greedy bound (greedy stays ahead, see
:mod:`solver.greedy`), so the model minimises S_max with k = k*.

Sizes enter the solvers as integers divided by their greatest common divisor (exact,
and it keeps MIP coefficients small when sizes share a unit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .dp import bottleneck_lower_bound
from .greedy import partition_ranges

__all__ = ["Formulation", "BackendResult", "formulate", "partitions_from_assignment"]


@dataclass(frozen=True)
class Formulation:
    """min S_max  s.t. k contiguous partitions, S(P_j) ≤ cap, in solver units (bytes / scale).

    ``ranges[i] = (first, last)``: the partitions layer i may take (the greedy bounds at
    ``cap``); ``lower``: L = max(max s, ⌈Σ s / k⌉); ``hint``: a plan to warm-start from.
    """

    sizes: tuple[int, ...]
    scale: int
    k: int
    cap: int
    lower: int
    ranges: tuple[tuple[int, int], ...]
    hint: tuple[tuple[int, ...], ...] | None
    # Position-dependent memory (pipeline schedules, ordered pools): layer i in partition p
    # weighs sizes[i] + flights[p] · acts[i] and partition p holds at most caps[p].
    acts: tuple[int, ...] = ()
    flights: tuple[int, ...] = ()
    caps: tuple[int, ...] = ()

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    def weight(self, i: int, p: int) -> int:
        """What layer i weighs in partition p (solver units)."""
        return self.sizes[i] + (self.flights[p] * self.acts[i] if self.acts else 0)

    def load(self, part: Sequence[int], p: int) -> int:
        return sum(self.weight(i, p) for i in part)

    def cap_of(self, p: int) -> int:
        return self.caps[p] if self.caps else self.cap

    @property
    def num_assignment_vars(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)


@dataclass(frozen=True)
class BackendResult:
    """What a backend found: a plan (or none), a proven lower bound on S_max, in bytes."""

    partitions: list[list[int]] | None
    bound: int
    proven_optimal: bool
    proven_infeasible: bool
    backend_status: str


def formulate(
    sizes: Sequence[int], k: int, capacity: int, hint: Sequence[Sequence[int]] | None, *,
    acts: Sequence[int] | None = None, flights: Sequence[int] | None = None, caps: Sequence[int] | None = None,
) -> Formulation | None:
    """The model's data, or None when the greedy bounds (or L > capacity) prove it infeasible.

    With a hint whose S_max is U ≤ capacity, only plans at least as good matter, so the
    ranges are taken at U: much tighter than at the capacity when the hint is good. With
    ``acts``, ``flights`` and ``caps`` (position-dependent memory), ``sizes`` are the parts
    held once; bounds and ranges use the fewest micro-batches in flight and the largest
    partition capacity, which no plan beats.
    """
    acts = tuple(acts or ())
    flights = tuple(flights or ())
    caps = tuple(caps or ())
    low = min(flights) if acts else 0
    lower_sizes = [s + low * a for s, a in zip(sizes, acts)] if acts else list(sizes)
    cap = max(caps) if caps else capacity
    if hint is not None:
        value = max(sum(sizes[i] + (flights[p] * acts[i] if acts else 0) for i in part)
                    for p, part in enumerate(hint))
        cap = min(cap, value)
    scale = math.gcd(*sizes, *acts, *caps, cap) or 1
    ranges = partition_ranges(lower_sizes, cap, k)
    if any(first > last for first, last in ranges) or bottleneck_lower_bound(lower_sizes, k) > cap:
        return None
    return Formulation(
        sizes=tuple(s // scale for s in sizes),
        scale=scale,
        k=k,
        cap=cap // scale,
        lower=-(-bottleneck_lower_bound(lower_sizes, k) // scale),
        ranges=tuple(ranges),
        hint=None if hint is None else tuple(tuple(p) for p in hint),
        acts=tuple(a // scale for a in acts),
        flights=flights,
        caps=tuple(c // scale for c in caps),
    )


def partitions_from_assignment(partition_of: Sequence[int], k: int) -> list[list[int]] | None:
    """Group layer indices by their partition index, or None unless they form k contiguous runs.

    A backend's answer is checked, not trusted: the indices must start at 0, end at
    k − 1 and step by 0 or 1.
    """
    steps_ok = all(0 <= b - a <= 1 for a, b in zip(partition_of, partition_of[1:]))
    if not partition_of or partition_of[0] != 0 or partition_of[-1] != k - 1 or not steps_ok:
        return None
    parts: list[list[int]] = [[] for _ in range(k)]
    for index, part in enumerate(partition_of):
        parts[part].append(index)
    return parts
