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
from fractions import Fraction

from ..model.instance import Instance
from ..model.memory import (RunCosts, capacity_at, in_flight, partition_bytes, plan_loads, usable_capacity,
                            utilization_ppb)

__all__ = ["least_bound", "probe_stages", "min_stages", "min_stage_bottleneck", "min_stage_time",
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
    run fits (:class:`layerfit.model.memory.RunCosts`), no longer than the layer limit, not past a must-cut, and
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


def min_stages(instance: Instance) -> tuple[int, list[list[int]]] | None:
    """The fewest stages that hold the model under its capacity, and a plan; None if none do."""
    for count in range(1, instance.max_partitions + 1):
        parts = probe_stages(instance, usable_capacity(instance), count)
        if parts is not None:
            return count, parts
    return None


def min_stage_bottleneck(instance: Instance, k: int) -> tuple[int, list[list[int]]] | None:
    """The smallest largest stage footprint over exactly ``k`` stages (≤ capacity), or None."""
    parts = least_bound(lambda bound: probe_stages(instance, bound, k), usable_capacity(instance))
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
    capacity = usable_capacity(instance)
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
    parts = least_bound(lambda u: probe_stages(instance, usable_capacity(instance), k, utilization=u), 10**9)
    if parts is None:
        return None
    loads = plan_loads(instance, parts)
    return max(utilization_ppb(load, capacity_at(instance, j)) for j, load in enumerate(loads)), parts


def greedy_walk(instance: Instance) -> list[list[int]] | None:
    """The seed's GreedyLayerPartition over this instance's memory model, planning every stage
    for the most micro-batches any stage holds (greedy cannot know its place); None when a
    layer alone does not fit so."""
    runs = RunCosts(instance)
    m = instance.micro_batches if instance.schedule != "none" else 1
    parts: list[list[int]] = []
    start = 0
    for i in range(instance.num_layers):
        if len(parts) >= instance.max_partitions:
            return None  # more partitions than devices
        if runs.cost(start, i + 1, m) <= capacity_at(instance, len(parts)):  # fill the devices in order, as accelerate does
            continue
        if start < i:
            parts.append(list(range(start, i)))
        start = i
        if len(parts) >= instance.max_partitions or runs.cost(i, i + 1, m) > capacity_at(instance, len(parts)):
            return None  # a layer alone does not fit the next device, planned for the worst
    parts.append(list(range(start, instance.num_layers)))
    return parts
