"""The data of the exact models, shared by CP-SAT and MIP: one problem, two backends.

Both models solve the bottleneck problem on a chain: k contiguous non-empty partitions,
each fitting the capacity, minimising S_max = max_j S(P_j). ``min_partitions`` reduces
to it: its count k* is fixed by the greedy bound (greedy stays ahead, see
:mod:`layerfit.methods.greedy`), so the model minimises S_max with k = k*.

Sizes enter the solvers as integers divided by their greatest common divisor, capacities
floored to that unit (exact: every load is a multiple of it); it keeps coefficients small when
sizes share a unit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .dp import bottleneck_lower_bound
from .greedy import partition_ranges

__all__ = ["Formulation", "BackendResult", "formulate", "partitions_from_assignment", "extra_terms", "add_rules"]


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
    # Non-additive memory, linear with auxiliary variables in both backends:
    # buffer reuse — a partition holds the largest of its layers' ``peaks`` (B_p ≥ peaks[i] x[i, p]);
    # recomputation — its input ``boundary[first]`` per micro-batch in flight and its largest
    #   activation once (T_p ≥ acts[i] x[i, p]) instead of flights[p] · Σ acts;
    # tied weights — each group's ``shared`` once (H_gp ≥ x[i, p] for its members).
    peaks: tuple[int, ...] = ()
    recompute: bool = False
    boundary: tuple[int, ...] = ()
    tied: tuple[tuple[tuple[int, ...], int], ...] = ()
    # Structural rules (constraints): layer → partition pins (resolved for this k), layers per
    # partition, and the cut points that must stay closed or open (after layer i).
    pins: tuple[tuple[int, int], ...] = ()
    max_layers: int | None = None
    min_layers: int | None = None
    no_cut_after: tuple[int, ...] = ()
    must_cut_after: tuple[int, ...] = ()

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    def weight(self, i: int, p: int) -> int:
        """What layer i adds to partition p alone (solver units): its fixed part, and its
        activations for every micro-batch in flight unless they are recomputed."""
        if self.acts and not self.recompute:
            return self.sizes[i] + self.flights[p] * self.acts[i]
        return self.sizes[i]

    def load(self, part: Sequence[int], p: int) -> int:
        """S(P) of the contiguous run ``part`` as partition p, in solver units."""
        total = sum(self.weight(i, p) for i in part)
        if self.peaks:
            total += max(self.peaks[i] for i in part)
        if self.recompute:
            total += self.flights[p] * self.boundary[part[0]] + max(self.acts[i] for i in part)
        held = set(part)
        for members, shared in self.tied:
            total -= shared * max(0, sum(1 for i in members if i in held) - 1)
        return total

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
    peaks: Sequence[int] | None = None, recompute: bool = False, boundary: Sequence[int] | None = None,
    tied: Sequence[tuple[Sequence[int], int]] = (),
    pins: Sequence[tuple[int, int]] = (), max_layers: int | None = None, min_layers: int | None = None,
    no_cut_after: Sequence[int] = (), must_cut_after: Sequence[int] = (),
) -> Formulation | None:
    """The model's data, or None when the greedy bounds (or L > capacity) prove it infeasible.

    With a hint whose S_max is U ≤ capacity, only plans at least as good matter, so the
    ranges are taken at U: much tighter than at the capacity when the hint is good. With
    the richer options (see :class:`Formulation`), ``sizes`` are the parts held once; bounds
    and ranges use a lower bound on what each layer adds — the fewest micro-batches in
    flight, no activation when recomputed, no buffer when reused, its tied weight already
    paid — and the largest partition capacity, so no plan is cut off.
    """
    acts = tuple(acts or ())
    flights = tuple(flights or ())
    caps = tuple(caps or ())
    peaks = tuple(peaks or ())
    boundary = tuple(boundary or ())
    tied = tuple((tuple(members), shared) for members, shared in tied)
    low = min(flights) if acts and not recompute else 0
    lower_sizes = [s + low * a for s, a in zip(sizes, acts)] if acts else list(sizes)
    for members, shared in tied:
        for i in members:
            lower_sizes[i] -= shared
    cap = max(caps) if caps else capacity
    # The unit: the sizes' greatest common divisor. Every load is a multiple of it, so a capacity
    # floors to it exactly (load ≤ cap ⇔ load/unit ≤ ⌊cap/unit⌋). Leaving the capacities out of the
    # divisor matters: sizes that all share a large factor the capacity lacks (10^9 + 7, say) made
    # CP-SAT 9.15's presolve prove a wrong optimum; divided out, the model has nothing to find.
    scale = math.gcd(*sizes, *acts, *peaks, *boundary, *(shared for _, shared in tied)) or 1
    form = Formulation(
        sizes=tuple(s // scale for s in sizes), scale=scale, k=k, cap=cap // scale, lower=0, ranges=(), hint=None,
        acts=tuple(a // scale for a in acts), flights=flights, caps=tuple(c // scale for c in caps),
        peaks=tuple(b // scale for b in peaks), recompute=recompute, boundary=tuple(b // scale for b in boundary),
        tied=tuple((members, shared // scale) for members, shared in tied),
    )
    if hint is not None:
        cap = min(cap, max(form.load(part, p) for p, part in enumerate(hint)) * scale)
    ranges = partition_ranges(lower_sizes, cap, k)
    if any(first > last for first, last in ranges) or bottleneck_lower_bound(lower_sizes, k) > cap:
        return None
    if any(not ranges[i][0] <= p <= ranges[i][1] for i, p in pins):
        return None  # a pin outside the partitions its layer can take: no plan
    return dataclasses.replace(
        form, cap=cap // scale, lower=max(0, -(-bottleneck_lower_bound(lower_sizes, k) // scale)),
        ranges=tuple(ranges), hint=None if hint is None else tuple(tuple(p) for p in hint),
        pins=tuple(pins), max_layers=max_layers, min_layers=min_layers, no_cut_after=tuple(no_cut_after),
        must_cut_after=tuple(must_cut_after),
    )


def extra_terms(form: Formulation, x: Sequence[dict], new_var, at_least) -> list[list[tuple[int, object]]]:  # type: ignore[no-untyped-def]
    """Per partition, the (coefficient, variable) terms that buffer reuse, recomputation and
    tied weights add to its load, for either backend: ``new_var(name, upper)`` makes a
    variable in [0, upper], ``at_least(var, expression)`` adds var ≥ expression. Each
    auxiliary only bounds a load from below, so minimising the bottleneck makes it exact
    where it matters (see :class:`Formulation`)."""
    n, k = form.num_layers, form.k
    terms: list[list[tuple[int, object]]] = [[] for _ in range(k)]
    for p in range(k):
        inside = [(i, x[i][p]) for i in range(n) if p in x[i]]
        if form.peaks and any(form.peaks[i] for i, _ in inside):
            peak = new_var(f"B[{p}]", max(form.peaks))
            for i, var in inside:
                if form.peaks[i]:
                    at_least(peak, form.peaks[i] * var)
            terms[p].append((1, peak))
        if form.recompute:
            if any(form.acts[i] for i, _ in inside):
                top = new_var(f"T[{p}]", max(form.acts))
                for i, var in inside:
                    if form.acts[i]:
                        at_least(top, form.acts[i] * var)
                terms[p].append((1, top))
            for i, var in inside:
                coefficient = form.flights[p] * form.boundary[i]
                if not coefficient:
                    continue
                before = x[i - 1].get(p) if i else None
                if before is None:  # nothing before it can be in p: in p, it starts p
                    terms[p].append((coefficient, var))
                    continue
                first = new_var(f"S[{i},{p}]", 1)  # layer i starts partition p
                at_least(first, var - before)
                terms[p].append((coefficient, first))
        for g, (members, shared) in enumerate(form.tied):
            present = [x[i][p] for i in members if p in x[i]]
            if len(present) < 2 or not shared:
                continue
            held = new_var(f"H[{g},{p}]", 1)  # the group's weight is in p
            for var in present:
                at_least(held, var)
                terms[p].append((-shared, var))
            terms[p].append((shared, held))
    return terms


def add_rules(form: Formulation, x: Sequence[dict], add) -> None:  # type: ignore[no-untyped-def]
    """The structural rules as linear constraints, for either backend: ``add(expression,
    sense, rhs)`` with sense "==", "<=" or ">="."""
    n, k = form.num_layers, form.k
    for i, p in form.pins:
        add(x[i][p], "==", 1)  # formulate() checked that p is in layer i's range
    if form.max_layers is not None or form.min_layers is not None:
        for p in range(k):
            count = [x[i][p] for i in range(n) if p in x[i]]
            if not count:
                continue
            if form.max_layers is not None:
                add(sum(count), "<=", form.max_layers)
            if form.min_layers is not None:
                add(sum(count), ">=", form.min_layers)
    for i in form.no_cut_after:  # layers i and i+1 share their partition
        for p in set(x[i]) | set(x[i + 1]):
            add((x[i][p] if p in x[i] else 0) - (x[i + 1][p] if p in x[i + 1] else 0), "==", 0)
    for i in form.must_cut_after:  # layers i and i+1 never share one
        for p in set(x[i]) & set(x[i + 1]):
            add(x[i][p] + x[i + 1][p], "<=", 1)


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
