"""Exact stage planning beyond the additive chain: schedule memory and structural constraints.

Used by the ``dp`` method whenever an instance has a pipeline schedule or constraints
(pinned layers, layers per partition, cut rules).

Partitioning when a stage's memory depends on its position in a pipeline schedule:
With GPipe every stage holds the activations of all m micro-batches; with 1F1B stage j of p
holds min(p − j, m) — the first stage the most — so a partition's footprint depends on
where it sits and on how many stages there are, which greedy cannot know in advance.

Exact method (the ``dp`` method for scheduled instances). For a fixed number of stages p,
every position j has its own additive cost, S_j(P) = Σ fixed + f(j, p) · Σ activation;
a run's cost only shrinks when it is shortened. Filling each stage as far as it goes is
not enough (a layer too big for an early stage can fit a later one), so the probe tracks
every cut point reachable after j stages (:func:`probe_stages`), O(p · n). Hence:

* fewest stages p*: the first p = 1, 2, … whose probe at the capacity reaches the end;
* the smallest largest stage for k stages: bisection over the bound with the same probe.

The seed's greedy does not know p, so as a baseline it plans for the worst stage: every
layer's activation counted for m micro-batches.
"""

from __future__ import annotations

import math
from collections import deque
from fractions import Fraction
from itertools import accumulate

from ..model.instance import Instance
from ..model.memory import boundary_bytes, capacity_at, in_flight, layer_parts, partition_bytes, plan_loads, utilization_ppb

__all__ = ["RunCosts", "least_bound", "probe_stages", "min_stages", "min_stage_bottleneck", "min_stage_time",
           "min_stage_utilization", "greedy_walk"]


def _rules(instance: Instance) -> tuple[list[int], list[bool], list[int | None]]:
    """Per cut point: the next must-cut after it, whether it is forbidden; per layer: its pin.

    Cut point c (0 … n) is the boundary after layer c − 1.
    """
    n = instance.num_layers
    index = {layer.name: i for i, layer in enumerate(instance.layers)}
    c = instance.constraints
    must = {index[name] + 1 for name in c.must_cut_after}
    next_must = [n] * (n + 1)
    current = n
    for a in range(n - 1, -1, -1):
        if a + 1 in must:
            current = a + 1
        next_must[a] = current
    forbidden = [False] * (n + 1)
    for name in c.no_cut_after:
        forbidden[index[name] + 1] = True
    for group, (members, _) in zip(c.tied, instance.tied_groups):
        if group.mode == "together":  # the group, and every layer between its members, in one partition
            for cut in range(members[0] + 1, members[-1] + 1):
                forbidden[cut] = True
    forbidden[n] = False  # the end of the chain ends a partition, whatever the rules
    pins: list[int | None] = [None] * n
    for name, where in c.pinned:
        pins[index[name]] = where
    return next_must, forbidden, pins


class RunCosts:
    """What a run of layers [a, b) costs as one stage, under the instance's memory model,
    and how far a run from each start may reach (:meth:`ends`).

    A run's cost only grows when it grows at its end; without recomputation it also only
    shrinks when its start moves right, so the furthest ends are monotone and one sweep with
    two pointers finds them all, O(n). With recomputation the stage's input depends on the
    start, so each start binary-searches its end over sparse-table maxima, O(n log n).
    """

    def __init__(self, instance: Instance):
        self.instance = instance
        fixed, self.acts, self.reused = layer_parts(instance)
        self.n = n = len(fixed)
        self.F = [0, *accumulate(fixed)]
        self.A = [0, *accumulate(self.acts)]
        self.P = [0, *accumulate(instance.layer_picoseconds)]
        # Tied weights count once per partition: prefix counts of each group's members.
        self.tied = []
        for members, shared in instance.tied_groups:
            member = set(members)
            self.tied.append(([0, *accumulate(1 if i in member else 0 for i in range(n))], shared.total))
        self.recompute = instance.activation_recompute
        if self.recompute:
            self.boundary = [boundary_bytes(instance, a) for a in range(n)]
            self.top_act, self.top_buffer = _RangeMax(self.acts), _RangeMax(self.reused)

    def savings(self, a: int, b: int) -> int:
        return sum(shared * max(0, counts[b] - counts[a] - 1) for counts, shared in self.tied)

    def ends(self, f: int, limit: int, time_limit: int | None = None) -> list[int]:
        """For every start a, the furthest b such that [a, b) fits ``limit`` bytes with ``f``
        micro-batches in flight (and ``time_limit`` picoseconds, if given); b = a if none."""
        n, F, P = self.n, self.F, self.P
        if self.recompute:
            out = []
            for a in range(n):
                lo, hi = a, n  # [a, lo) fits; nothing past hi does
                while lo < hi:
                    b = (lo + hi + 1) // 2
                    cost = (F[b] - F[a] + f * self.boundary[a] + self.top_act(a, b) + self.top_buffer(a, b)
                            - self.savings(a, b))
                    if cost <= limit and (time_limit is None or P[b] - P[a] <= time_limit):
                        lo = b
                    else:
                        hi = b - 1
                out.append(lo)
            return out
        A, reused = self.A, self.reused
        out = []
        far = 0
        window: deque[int] = deque()  # layers of [a, far) by decreasing reused buffer: its front is the max
        for a in range(n):
            if far < a:
                far = a
                window.clear()
            while window and window[0] < a:
                window.popleft()
            while far < n:
                peak = max(reused[far], reused[window[0]] if window else 0)
                if (F[far + 1] - F[a]) + f * (A[far + 1] - A[a]) + peak - self.savings(a, far + 1) > limit:
                    break
                if time_limit is not None and P[far + 1] - P[a] > time_limit:
                    break
                while window and reused[window[-1]] <= reused[far]:
                    window.pop()
                window.append(far)
                far += 1
            out.append(far)
        return out


def time_limit_at(instance: Instance, time_bound: int | None, position: int) -> int | None:
    """ceil(Σ / speed) ≤ T  ⇔  Σ ≤ floor(T · speed): the picoseconds of layer time a stage on
    device ``position`` may hold."""
    if time_bound is None or instance.devices is None:
        return time_bound
    return math.floor(time_bound * Fraction(instance.devices[position].speed))


def probe_stages(instance: Instance, bound: int, count: int, time_bound: int | None = None,
                 utilization: int | None = None) -> list[list[int]] | None:
    """Exactly ``count`` non-empty contiguous stages, each within ``bound`` bytes (with
    ``time_bound``, taking at most that many picoseconds on its device; with ``utilization``,
    filling at most that many parts per billion of its capacity), or None.

    R_j, the cut points reachable after j stages: from a cut a, stage j can end at any b
    in [lo_j(a), hi_j(a)] but the forbidden cuts, where hi_j(a) is the furthest end whose
    run fits (:class:`RunCosts`), no longer than the layer limit, not past a must-cut, and
    not taking a layer pinned elsewhere; lo_j(a) asks for the minimum layer count and a
    layer pinned to stage j. lo is monotone in a, so marking each b once gives R_j in
    O(n) after the ends: O(count · n) in all (× log n with recomputation).
    """
    if count > instance.max_partitions:
        return None
    runs = RunCosts(instance)
    n = runs.n
    c = instance.constraints
    next_must, forbidden, pins = _rules(instance)
    pinned_at = [i for i in range(n) if pins[i] is not None]
    resolved = {i: c.resolve_pin(pins[i], count) for i in pinned_at}  # type: ignore[arg-type]
    if any(not 0 <= where < count for where in resolved.values()):
        return None
    next_pin = [n] * (n + 1)
    for i in reversed(range(n)):
        next_pin[i] = i if pins[i] is not None else next_pin[i + 1]
    max_layers = c.max_layers_per_partition or n
    min_layers = c.min_layers_per_partition or 1
    reachable = [False] * (n + 1)
    reachable[0] = True
    parents: list[list[int]] = []
    for position in range(count):
        f = in_flight(instance, position, count)
        limit = min(bound, capacity_at(instance, position))  # device `position` of an ordered pool
        if utilization is not None:  # ⌈load · 10⁹ / cap⌉ ≤ U  ⇔  load ≤ ⌊U · cap / 10⁹⌋
            limit = min(limit, utilization * capacity_at(instance, position) // 10**9)
        ends = runs.ends(f, limit, time_limit_at(instance, time_bound, position))
        parent = [-1] * (n + 1)
        nxt = [False] * (n + 1)
        covered = 0  # every b ≤ covered already has a parent in this stage
        for a in range(n):
            far = ends[a]
            if not reachable[a] or far == a:
                continue
            hi = min(far, a + max_layers, next_must[a])
            lo = a + min_layers
            i = next_pin[a]  # the first pinned layer at or after a
            while i < n and resolved[i] == position:
                lo = max(lo, i + 1)  # a layer pinned here must be in this stage
                i = next_pin[i + 1]
            if i < n:
                if resolved[i] < position:
                    continue  # a layer pinned to an earlier stage is still to come: dead end
                hi = min(hi, i)  # a layer pinned to a later stage must not be taken now
            if lo > hi:
                continue
            for b in range(max(lo, covered + 1), hi + 1):
                if not forbidden[b]:
                    nxt[b] = True
                    parent[b] = a
            covered = max(covered, hi)
        reachable = nxt
        parents.append(parent)
    if not reachable[n]:
        return None
    cuts = [n]
    for parent in reversed(parents):
        cuts.append(parent[cuts[-1]])
    cuts.reverse()
    return [list(range(cuts[j], cuts[j + 1])) for j in range(count)]


class _RangeMax:
    """max(values[a:b]) in O(1) after O(n log n): a sparse table (0 for an empty range)."""

    def __init__(self, values: list[int]):
        self.table = [list(values)]
        width = 1
        while 2 * width <= len(values):
            prev = self.table[-1]
            self.table.append([max(prev[i], prev[i + width]) for i in range(len(values) - 2 * width + 1)])
            width *= 2

    def __call__(self, a: int, b: int) -> int:
        if b <= a:
            return 0
        level = (b - a).bit_length() - 1
        row = self.table[level]
        return max(row[a], row[b - (1 << level)])


def min_stages(instance: Instance) -> tuple[int, list[list[int]]] | None:
    """The fewest stages that hold the model under its capacity, and a plan; None if none do."""
    for count in range(1, instance.max_partitions + 1):
        parts = probe_stages(instance, instance.usable_capacity, count)
        if parts is not None:
            return count, parts
    return None


def min_stage_bottleneck(instance: Instance, k: int) -> tuple[int, list[list[int]]] | None:
    """The smallest largest stage footprint over exactly ``k`` stages (≤ capacity), or None."""
    parts = least_bound(lambda bound: probe_stages(instance, bound, k), instance.usable_capacity)
    if parts is None:
        return None
    value = max(partition_bytes(instance, p, j, k) for j, p in enumerate(parts))
    return value, parts


def least_bound(probe, high: int):  # type: ignore[no-untyped-def]
    """The answer of ``probe`` at the least bound in [0, high] where it has one (it is monotone:
    a plan within a bound is within every larger one), by bisection; None if not even at high."""
    if probe(high) is None:
        return None
    lo, hi = 0, high
    while lo < hi:
        mid = (lo + hi) // 2
        if probe(mid) is None:
            lo = mid + 1
        else:
            hi = mid
    return probe(hi)


def min_stage_time(instance: Instance, k: int) -> tuple[int, list[list[int]]] | None:
    """The smallest slowest-stage time (whole picoseconds) over exactly ``k`` stages that each
    fit their memory, or None when ``k`` stages cannot hold the model."""
    capacity = instance.usable_capacity
    if probe_stages(instance, capacity, k) is None:
        return None
    whole = list(range(instance.num_layers))
    slowest = max(instance.stage_picoseconds(whole, j) for j in range(k))  # any stage may take it all
    parts = least_bound(lambda bound: probe_stages(instance, capacity, k, bound), slowest)
    assert parts is not None  # k stages hold it: at the largest bound time does not bind
    return max(instance.stage_picoseconds(p, j) for j, p in enumerate(parts)), parts


def min_stage_utilization(instance: Instance, k: int) -> tuple[int, list[list[int]]] | None:
    """The smallest largest utilization (parts per billion of each stage's own capacity) over
    exactly ``k`` stages, or None when ``k`` stages cannot hold the model."""
    parts = least_bound(lambda u: probe_stages(instance, instance.usable_capacity, k, utilization=u), 10**9)
    if parts is None:
        return None
    loads = plan_loads(instance, parts)
    return max(utilization_ppb(load, capacity_at(instance, j)) for j, load in enumerate(loads)), parts


def greedy_walk(instance: Instance) -> list[list[int]] | None:
    """The seed's GreedyLayerPartition over this instance's memory model, planning every stage
    for the most micro-batches any stage holds (greedy cannot know its place); None when a
    layer alone does not fit so."""
    fixed, acts, reused = layer_parts(instance)
    m = instance.micro_batches if instance.schedule != "none" else 1
    group_of = {i: (g, shared.total) for g, (members, shared) in enumerate(instance.tied_groups) for i in members}
    parts: list[list[int]] = []
    current: list[int] = []
    held: set[int] = set()  # tied groups with a member in the current partition
    load = peak = 0
    recompute = instance.activation_recompute
    top = 0  # with recomputation: the largest activation in the current partition
    for i in range(instance.num_layers):
        size = fixed[i] + (0 if recompute else m * acts[i])
        g, shared = group_of.get(i, (None, 0))
        if g in held:
            size -= shared  # the partition already holds this tied weight
        if len(parts) >= instance.max_partitions:
            return None  # more partitions than devices
        bound = capacity_at(instance, len(parts))  # fill the devices in order, as accelerate does
        extra = m * boundary_bytes(instance, current[0] if current else i) + max(top, acts[i]) if recompute else 0
        if load + size + max(peak, reused[i]) + extra <= bound:
            current.append(i)
            load += size
            peak = max(peak, reused[i])
            top = max(top, acts[i])
        else:
            if current:
                parts.append(current)
            size += shared if g in held else 0  # a new partition pays the tied weight again
            alone = m * boundary_bytes(instance, i) + acts[i] if recompute else 0
            if len(parts) >= instance.max_partitions or size + reused[i] + alone > capacity_at(instance, len(parts)):
                return None  # a layer alone does not fit the next device, planned for the worst
            current, load, peak, top = [i], size, reused[i], acts[i]
            held = set()
        if g is not None:
            held.add(g)
    if current:
        parts.append(current)
    return parts
