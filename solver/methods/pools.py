"""Free device pools: the planner chooses which devices run the partitions, and in which
order (``device_order: "free"``). NP-hard in general (Pinar, Tabak & Aykanat 2008).

Two exact methods:

* ``dp`` — devices of one kind (capacity and speed) are interchangeable, so a plan's
  devices are a count per kind. For p stages, the cut points reachable after j stages are
  tracked per vector of counts used so far (:func:`probe_free`), with the furthest ends of
  :class:`~layerfit.model.memory.RunCosts` per kind: O(p · V · K · n) for V count vectors and K
  kinds. Exact for every memory option the stage probe handles but the structural rules;
  refused when the pool has more than :data:`MAX_MIXES` count vectors (many distinct kinds).
* ``cpsat`` — k partitions of contiguous layers (the chain model of :mod:`layerfit.methods.cpsat`)
  and a kind per partition: Σ_p z[p, t] ≤ count_t and each partition's load within its
  kind's capacity, minimising the largest partition; for the fewest devices it proves
  every smaller k infeasible first. Warm-started by the DP's plan when the DP applies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from .count_search import Attempt, deadline, search_counts
from ..model.instance import Instance
from .stages import least_bound
from ..model.memory import (RunCosts, capacity_within, device_capacity, in_flight, layer_parts, partition_bytes,
                            plan_loads, usable_capacity, utilization_ppb)

__all__ = ["DeviceKind", "device_kinds", "mixes", "MAX_MIXES", "probe_free", "min_free_devices", "min_free_bottleneck",
           "min_free_objective", "cpsat_free", "mip_free", "solve_free_pool"]

MAX_MIXES = 20_000  # count vectors the DP tracks at most


@dataclass(frozen=True)
class DeviceKind:
    """Interchangeable devices: one capacity and speed, the names in the pool's order."""

    capacity: int
    speed: float
    names: tuple[str, ...]


def device_kinds(instance: Instance) -> list[DeviceKind]:
    """The pool's devices grouped by (capacity, speed), in order of first appearance."""
    groups: dict[tuple[int, float], list[str]] = {}
    for device in instance.devices or ():
        groups.setdefault((device.capacity, device.speed), []).append(device.name)
    return [DeviceKind(cap, speed, tuple(names)) for (cap, speed), names in groups.items()]


def mixes(instance: Instance) -> int:
    """How many count vectors (devices used per kind) the pool allows."""
    return math.prod(len(kind.names) + 1 for kind in device_kinds(instance))


def _assign(instance: Instance, kinds_used: Sequence[int]) -> list[str]:
    """Device names for a sequence of kinds: each kind's devices in the pool's order."""
    kinds = device_kinds(instance)
    taken = [0] * len(kinds)
    names = []
    for t in kinds_used:
        names.append(kinds[t].names[taken[t]])
        taken[t] += 1
    return names


def probe_free(instance: Instance, bound: int, count: int, time_bound: int | None = None,
               utilization: int | None = None) -> tuple[list[list[int]], list[str]] | None:
    """``count`` contiguous stages on distinct devices of the pool, each within ``bound``
    bytes and its device's capacity (and, when given, ``time_bound`` picoseconds on its
    device and ``utilization`` parts per billion of its capacity); the partitions and the
    devices, or None."""
    kinds = device_kinds(instance)
    if count > min(instance.num_layers, sum(len(k.names) for k in kinds)):
        return None
    runs = RunCosts(instance)
    n = runs.n
    cache: dict[tuple[int, int, int | None], list[int]] = {}

    def ends(position: int, t: int) -> list[int]:
        f = in_flight(instance, position, count)
        own = capacity_within(instance, kinds[t].capacity)
        limit = min(bound, own)
        if utilization is not None:
            limit = min(limit, utilization * own // 10**9)
        time_limit = None if time_bound is None else math.floor(time_bound * Fraction(kinds[t].speed))
        key = (f, limit, time_limit)
        if key not in cache:
            cache[key] = runs.ends(f, limit, time_limit)
        return cache[key]

    start = tuple(0 for _ in kinds)
    level: dict[tuple[int, ...], list[bool]] = {start: [a == 0 for a in range(n + 1)]}
    back: list[dict[tuple[int, ...], list[tuple[tuple[int, ...], int] | None]]] = []
    for position in range(count):
        nxt: dict[tuple[int, ...], list[bool]] = {}
        parents: dict[tuple[int, ...], list[tuple[tuple[int, ...], int] | None]] = {}
        for used, reach in level.items():
            for t, kind in enumerate(kinds):
                if used[t] == len(kind.names):
                    continue
                far_of = ends(position, t)
                after = used[:t] + (used[t] + 1,) + used[t + 1:]
                marks = nxt.setdefault(after, [False] * (n + 1))
                parent = parents.setdefault(after, [None] * (n + 1))
                covered = 0
                for a in range(n):
                    if not reach[a] or far_of[a] == a:
                        continue
                    for b in range(max(a + 1, covered + 1), far_of[a] + 1):
                        if not marks[b]:
                            marks[b] = True
                            parent[b] = (used, a)
                    covered = max(covered, far_of[a])
        level = nxt
        back.append(parents)
    final = next((used for used, reach in level.items() if reach[n]), None)
    if final is None:
        return None
    cuts, order = [n], []
    used = final
    for parents in reversed(back):
        entry = parents[used][cuts[-1]]
        assert entry is not None  # reach[b] was marked with its parent
        before, a = entry
        order.append(next(t for t in range(len(kinds)) if before[t] != used[t]))
        cuts.append(a)
        used = before
    cuts.reverse()
    order.reverse()
    return [list(range(cuts[j], cuts[j + 1])) for j in range(count)], _assign(instance, order)


def min_free_devices(instance: Instance) -> tuple[int, list[list[int]], list[str]] | None:
    """The fewest devices of the pool that hold the model, a plan and its devices; None if none."""
    most = min(instance.num_layers, len(instance.devices or ()))
    for count in range(1, most + 1):
        found = probe_free(instance, usable_capacity(instance), count)
        if found is not None:
            return count, found[0], found[1]
    return None


def min_free_bottleneck(instance: Instance, k: int) -> tuple[int, list[list[int]], list[str]] | None:
    """The smallest largest partition over exactly ``k`` devices of the pool, or None."""
    found = least_bound(lambda bound: probe_free(instance, bound, k), usable_capacity(instance))
    if found is None:
        return None
    parts, names = found
    return max(partition_bytes(instance, p, j, k) for j, p in enumerate(parts)), parts, names


def min_free_objective(instance: Instance, k: int, objective: str) -> tuple[int, list[list[int]], list[str]] | None:
    """The optimum of ``min_stage_time`` (picoseconds) or ``min_utilization`` (parts per
    billion) over exactly ``k`` devices of the pool, with the plan and its devices, or None."""
    capacity = usable_capacity(instance)
    if objective == "min_stage_time":
        whole = list(range(instance.num_layers))
        slowest = max(instance.stage_picoseconds(whole, 0, d.name) for d in instance.devices or ())
        found = least_bound(lambda t: probe_free(instance, capacity, k, time_bound=t), slowest)
    else:
        found = least_bound(lambda u: probe_free(instance, capacity, k, utilization=u), 10**9)
    if found is None:
        return None
    parts, names = found
    if objective == "min_stage_time":
        value = max(instance.stage_picoseconds(p, j, name) for j, (p, name) in enumerate(zip(parts, names)))
    else:
        loads = plan_loads(instance, parts)
        value = max(utilization_ppb(load, device_capacity(instance, name)) for load, name in zip(loads, names))
    return value, parts, names


def cpsat_free(instance: Instance, k: int, *, hint: tuple[list[list[int]], list[str]] | None,
               time_limit: float | None, seed: int, num_workers: int) -> tuple:
    """CP-SAT over exactly ``k`` partitions on the free pool, minimising the largest one.

    Returns (status name, partitions or None, devices or None, bound in bytes, proven optimal,
    proven infeasible). The load of partition p is Σ_i (fixed_i + f_p · act_i) x[i, p] + B_p: the
    additive memory model with schedules, training state, KV caches and a reserve, and B_p ≥
    buffer_i · x[i, p] its largest workspace under buffer reuse (recomputation and tied weights
    are refused before this is called).
    """
    from ortools.sat.python import cp_model

    from .cpsat import chain_assignment, run_model

    data = _free_model_data(instance, k)
    if data is None:
        return "INFEASIBLE (bounds)", None, None, 0, False, True
    kinds, fixed, acts, reused, flights, limits, ranges, unit = data
    n = instance.num_layers
    biggest = max(limits)
    model = cp_model.CpModel()
    x = chain_assignment(model, ranges, k)
    z = [[model.new_bool_var(f"z[{p},{t}]") for t in range(len(kinds))] for p in range(k)]
    bottleneck = model.new_int_var(0, biggest, "M")
    for p in range(k):
        model.add_exactly_one(z[p])
        members = [i for i in range(n) if p in x[i]]
        buffer = model.new_int_var(0, max((reused[i] for i in members), default=0), f"B[{p}]")  # its largest
        for i in members:
            if reused[i]:
                model.add(buffer >= reused[i] * x[i][p])
        load = sum((fixed[i] + flights[p] * acts[i]) * x[i][p] for i in members) + buffer
        model.add(load <= bottleneck)
        model.add(load <= sum(limits[t] * z[p][t] for t in range(len(kinds))))
    for t, kind in enumerate(kinds):
        model.add(sum(z[p][t] for p in range(k)) <= len(kind.names))
    model.minimize(bottleneck)
    hint_free_model(model, x, z, kinds, hint)
    solver, status, name = run_model(model, time_limit=time_limit, seed=seed, num_workers=num_workers)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        partitions, names = read_free_model(instance, solver, x, z, kinds)
        bound = math.ceil(solver.best_objective_bound - 1e-6) * unit
        if partitions is None:
            return f"{name} (solution rejected)", None, None, 0, False, False
        return name, partitions, names, bound, status == cp_model.OPTIMAL, False
    return name, None, None, 0, False, status == cp_model.INFEASIBLE


def hint_free_model(model, x, z, kinds: list[DeviceKind], hint) -> None:  # type: ignore[no-untyped-def]
    """Hint a CP-SAT free-pool model (x[i][p] layer in partition, z[p][t] partition's kind) with a
    plan and its devices, if any."""
    if hint is None:
        return
    where, kind_at = _hint_places(kinds, hint)
    for i, row in enumerate(x):
        for p, var in row.items():
            model.add_hint(var, where[i] == p)
    for p, row in enumerate(z):
        for t, var in enumerate(row):
            model.add_hint(var, kind_at[p] == t)


def read_free_model(instance: Instance, solver, x, z, kinds: list[DeviceKind]):  # type: ignore[no-untyped-def]
    """A solved free-pool model's partitions (None if not contiguous) and devices."""
    from .formulation import partitions_from_assignment

    partition_of = [next(p for p, var in row.items() if solver.boolean_value(var)) for row in x]
    order = [next(t for t in range(len(kinds)) if solver.boolean_value(row[t])) for row in z]
    return partitions_from_assignment(partition_of, len(z)), _assign(instance, order)


def _free_model_data(instance: Instance, k: int):  # type: ignore[no-untyped-def]
    """What both free-pool models share: kinds, per-layer fixed and activation sizes, the
    micro-batches in flight per position, each kind's limit, valid partition ranges (greedy
    bounds at the largest device, sizes at the fewest micro-batches), and the unit the sizes
    and limits are counted in (:func:`~layerfit.model.memory.byte_unit`, limits floored to it),
    or None."""
    from .greedy import partition_ranges

    kinds = device_kinds(instance)
    fixed, acts, reused = layer_parts(instance)  # reused: the buffers a stage holds the largest of (buffer reuse)
    flights = [in_flight(instance, p, k) for p in range(k)]
    limits = [capacity_within(instance, kind.capacity) for kind in kinds]
    lower_sizes = [fx + min(flights) * a for fx, a in zip(fixed, acts)]  # at most a layer's share of any stage
    ranges = partition_ranges(lower_sizes, max(limits), k)
    if any(first > last for first, last in ranges):
        return None
    unit = math.gcd(*fixed, *acts, *reused) or 1
    return (kinds, [f // unit for f in fixed], [a // unit for a in acts], [r // unit for r in reused], flights,
            [c // unit for c in limits], ranges, unit)


def _hint_places(kinds: list[DeviceKind], hint: tuple[list[list[int]], list[str]]) -> tuple[dict[int, int], list[int]]:
    """A warm start as the models read it: each layer's partition, and each partition's kind."""
    parts, names = hint
    kind_of = {name: t for t, kind in enumerate(kinds) for name in kind.names}
    return {i: p for p, part in enumerate(parts) for i in part}, [kind_of[name] for name in names]


def mip_free(instance: Instance, k: int, *, hint: tuple[list[list[int]], list[str]] | None, backend: str,
             time_limit: float | None, seed: int) -> tuple:
    """The free-pool model of :func:`cpsat_free` as a MIP in PuLP (CBC or HiGHS); the same
    return. A solution whose binaries are not 0/1 is rejected."""
    import time

    import pulp

    from .formulation import partitions_from_assignment
    from .mip import ROOM, assignment, chain_assignment, run_backend

    started = time.monotonic()

    data = _free_model_data(instance, k)
    if data is None:
        return "INFEASIBLE (bounds)", None, None, 0, False, True
    kinds, fixed, acts, reused, flights, limits, ranges, unit = data
    fixed = [f + r for f, r in zip(fixed, reused)]  # every buffer summed: the MIP is not given buffer reuse
    n = instance.num_layers
    prob = pulp.LpProblem("free_pool", pulp.LpMinimize)
    x = chain_assignment(prob, ranges, k)
    z = [[prob.add_variable(f"z_{p}_{t}", 0, 1, cat=pulp.LpBinary) for t in range(len(kinds))] for p in range(k)]
    # Continuous, with half a byte of room on every capacity (layerfit.methods.mip: loads are integers).
    bottleneck = prob.add_variable("M", 0, max(limits) + ROOM)
    prob += bottleneck
    for p in range(k):
        prob += pulp.lpSum(z[p]) == 1, f"kind_{p}"
        load = pulp.lpSum((fixed[i] + flights[p] * acts[i]) * x[i][p] for i in range(n) if p in x[i])
        prob += load <= bottleneck, f"load_{p}"
        prob += load <= pulp.lpSum(limits[t] * z[p][t] for t in range(len(kinds))) + ROOM, f"device_{p}"
    for t, kind in enumerate(kinds):
        prob += pulp.lpSum(z[p][t] for p in range(k)) <= len(kind.names), f"count_{t}"
    start: dict[str, float] = {}
    if hint is not None:
        where, kind_at = _hint_places(kinds, hint)
        for i in range(n):
            for p, var in x[i].items():
                start[var.name] = 1.0 if where[i] == p else 0.0
        for p in range(k):
            for t in range(len(kinds)):
                start[z[p][t].name] = 1.0 if kind_at[p] == t else 0.0
    raw, bound = run_backend(prob, start, backend, time_limit, seed, started=started)
    if prob.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        partition_of = assignment(x)
        order = assignment([dict(enumerate(row)) for row in z])
        if partition_of is None or order is None:
            return f"{raw} (solution rejected)", None, None, 0, False, False
        partitions = partitions_from_assignment(partition_of, k)  # type: ignore[arg-type]
        if partitions is None:
            return f"{raw} (solution rejected)", None, None, 0, False, False
        proven = prob.sol_status == pulp.LpSolutionOptimal and raw.lower().startswith("optimal")
        value = max(partition_bytes(instance, part, p, k) for p, part in enumerate(partitions))
        return raw, partitions, _assign(instance, order), value if proven else bound * unit, proven, False  # type: ignore[arg-type]
    infeasible = prob.sol_status == pulp.LpSolutionInfeasible or prob.status == pulp.LpStatusInfeasible
    return raw, None, None, 0, False, infeasible


def solve_free_pool(instance: Instance, method: str, objective: str, k: int | None, finish, *,  # type: ignore[no-untyped-def]
                    time_limit: float | None, seed: int, num_workers: int, warm_start: str | None,
                    backend: str | None = None):
    """solve() on a free pool: greedy (the pool in its listed order, as accelerate fills it),
    the count-vector DP, or CP-SAT warm-started by the DP (or greedy)."""
    import dataclasses

    from ..model.plan import Status
    from .stages import greedy_walk

    ordered = dataclasses.replace(instance, device_order="ordered", model=None)
    if method == "greedy":
        parts = greedy_walk(ordered)
        if parts is None:
            return finish(Status.UNKNOWN, objective=None, bound=None,
                          explanation="greedy (filling the pool's devices in their listed order) found no plan")
        names = [d.name for d in instance.devices[: len(parts)]]  # type: ignore[index]
        largest = max(partition_bytes(instance, p, j, len(parts)) for j, p in enumerate(parts))
        return finish(Status.FEASIBLE, parts, objective=len(parts), bound=1, secondary_objective=largest,
                      secondary_bound=0, devices=names)
    exact = None  # the DP's answer: (count or value, partitions, devices)
    dp_applies = mixes(instance) <= MAX_MIXES
    if method == "dp" or (method in ("cpsat", "mip") and warm_start in (None, "dp") and dp_applies):
        if objective == "min_partitions":
            exact = min_free_devices(instance)
        elif objective == "min_bottleneck":
            exact = min_free_bottleneck(instance, k)  # type: ignore[arg-type]
        else:  # time or utilization: first, whether k devices hold it at all
            found = probe_free(instance, usable_capacity(instance), k)  # type: ignore[arg-type]
            exact = None if found is None else (0, *found)
        if exact is None:
            pool = ", ".join(f"{d.name} {d.capacity:,} B" for d in instance.devices or ())
            why = (f"no {'set' if k is None else f'{k}'} of the pool's devices ({pool}) holds the model, in any order"
                   if objective == "min_partitions" or k is None else
                   f"{k} of the pool's devices ({pool}) cannot hold the model, in any order")
            return finish(Status.INFEASIBLE, objective=None, bound=None, explanation=why)
    if method == "dp" and objective in ("min_stage_time", "min_utilization"):
        solved = min_free_objective(instance, k, objective)  # type: ignore[arg-type]
        assert solved is not None  # k devices hold the model: the bound at its largest does not bind
        value, parts, names = solved
        seconds_or_share = value * (1e-12 if objective == "min_stage_time" else 1e-9)
        return finish(Status.OPTIMAL, parts, objective=seconds_or_share, bound=seconds_or_share, devices=names)
    if method == "dp":
        if objective == "min_partitions":
            count, parts, names = exact  # type: ignore[misc]
            value = min_free_bottleneck(instance, count)
            assert value is not None  # count devices hold it
            largest, parts, names = value
            return finish(Status.OPTIMAL, parts, objective=count, bound=count, secondary_objective=largest,
                          secondary_bound=largest, devices=names)
        value, parts, names = exact  # type: ignore[misc]
        return finish(Status.OPTIMAL, parts, objective=value, bound=value, devices=names)

    # CP-SAT or the MIP: prove the count (min_partitions), then minimise the largest partition.
    left = deadline(time_limit)
    hint = None
    if exact is not None:
        if objective == "min_partitions":
            best = min_free_bottleneck(instance, exact[0])
            hint = (best[1], best[2]) if best else None
        else:
            hint = (exact[1], exact[2])
    elif warm_start in (None, "dp", "greedy"):
        parts = greedy_walk(ordered)
        if parts is not None and (objective == "min_partitions" or len(parts) == k):
            hint = (parts, [d.name for d in instance.devices[: len(parts)]])  # type: ignore[index]
    if objective == "min_bottleneck":
        counts = [k]
    else:
        most = min(instance.num_layers, len(instance.devices or ()))
        biggest = max(device_capacity(instance, d.name) for d in instance.devices or ())
        # Without a schedule the stages together hold at least the whole model as one stage holds
        # it (splitting only adds: a second workspace under buffer reuse, another tied copy).
        whole = partition_bytes(instance, range(instance.num_layers), 0, 1)
        lowest = max(1, math.ceil(whole / max(1, biggest))) if instance.schedule == "none" else 1
        counts = list(range(lowest, (len(hint[0]) if hint else most) + 1))

    def attempt(count: int, start) -> Attempt:  # type: ignore[no-untyped-def]
        if method == "mip":
            status, parts, names, bound, _, infeasible = mip_free(
                instance, count, hint=start, backend=backend or "cbc", time_limit=left(), seed=seed)
        else:
            status, parts, names, bound, _, infeasible = cpsat_free(
                instance, count, hint=start, time_limit=left(), seed=seed, num_workers=num_workers)
        return Attempt(status, parts, bound, infeasible, names)

    pool = ", ".join(d.name for d in instance.devices or ())
    return search_counts(instance, objective, counts, attempt, lambda count: hint if hint and len(hint[0]) == count
                         else None, finish,
                         clock=left, infeasible_why=f"no number of the pool's devices ({pool}) holds the model "
                                                   f"({method} proved every count)")
