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

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

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
    sizes: Sequence[int], k: int, capacity: int, hint: Sequence[Sequence[int]] | None
) -> Formulation | None:
    """The model's data, or None when the greedy bounds already prove it infeasible.

    With a hint whose S_max is U ≤ capacity, only plans at least as good matter, so the
    ranges are taken at U: much tighter than at the capacity when the hint is good.
    """
    cap = capacity
    if hint is not None:
        cap = min(cap, max(sum(sizes[i] for i in part) for part in hint))
    scale = math.gcd(*sizes, cap) or 1
    ranges = partition_ranges(sizes, cap, k)
    if any(first > last for first, last in ranges):
        return None
    return Formulation(
        sizes=tuple(s // scale for s in sizes),
        scale=scale,
        k=k,
        cap=cap // scale,
        lower=-(-bottleneck_lower_bound(sizes, k) // scale),
        ranges=tuple(ranges),
        hint=None if hint is None else tuple(tuple(p) for p in hint),
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
