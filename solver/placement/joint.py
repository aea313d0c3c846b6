"""Partitioning and placement together, as one CP-SAT model: ``solve(..., topology=...)``.

When GPUs differ (memory, or links), choosing the cuts first and the GPUs second can miss
plans that move a cut to a layer whose activation is small, or that give the big partition
to the big GPU. This model chooses both:

    minimise    T   (min_bottleneck: T ≥ t_p for every boundary p;  min_total: T = Σ_p t_p)
    subject to  x[i, p]: layer i in partition p, contiguous, k partitions (as layerfit.methods.cpsat)
                y[p, g]: partition p on GPU g; one GPU per partition, one partition per GPU
                Σ_i s_i x[i, p] ≤ Σ_g cap_g y[p, g]       cap_g = min(C, memory of g)
                e[i, p] = x[i, p] ∧ x[i+1, p+1]           layer i ends partition p
                t_p ≥ lat(g, h) + (Σ_i a_i e[i, p]) / bw(g, h)   if y[p, g] ∧ y[p+1, h]

Times enter the solver in units of 10⁻¹⁶ s (seconds per activation unit rounded to
that unit: a relative error below 10⁻⁴ on the fastest links); the returned placement is evaluated in
floating point. The model is warm-started with partition-then-map (the DP's plan placed
by map_plan), and the better of the two is returned, so it is never worse than it.

Seen with CP-SAT 9.15: its presolve called feasible joint models infeasible (and once
returned a non-optimal plan as optimal) whenever the objective was set, whether the time
constraints used enforcement literals or big-M; with the objective removed, or presolve
off, the same models solve correctly. Presolve is off for this model, and the tests
compare it with an exhaustive search.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from ..methods.cpsat import solve_with_deadline
from ..methods.dp import bottleneck_lower_bound, min_bottleneck
from ..errors import OptionError
from ..methods.formulation import partitions_from_assignment
from ..methods.greedy import partition_ranges
from ..model.instance import Instance
from .mapper import build_placement, evaluate, map_plan
from ..report.metrics import plan_metrics
from .placement import Placement
from ..model.plan import Plan, Status
from .topology import gpus, link

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["solve_joint"]

TIME_UNIT = 1e-16  # seconds per solver unit


def _plan_of(instance: Instance, partitions: list[list[int]], method: str) -> Plan:
    """A memory plan for ``partitions`` (its balance is not what the joint model optimises)."""
    metrics = plan_metrics(instance, partitions)
    lower = bottleneck_lower_bound(instance.sizes, len(partitions))
    value = metrics["max_bytes"]
    return Plan(
        status=Status.OPTIMAL if value == lower else Status.FEASIBLE, partitions=partitions,
        objective_name="min_bottleneck", objective=value, bound=lower, method=method,
        instance_name=instance.name, num_layers=instance.num_layers, metrics=metrics,
        num_partitions_requested=len(partitions),
    )


def solve_joint(
    instance: Instance,
    topology: nx.Graph,
    *,
    num_partitions: int,
    objective: str,
    time_limit: float | None,
    seed: int,
    num_workers: int,
) -> Placement:
    """Choose the k partitions and their GPUs together (see the module docstring)."""
    from ortools.sat.python import cp_model

    started = time.perf_counter()
    names = gpus(topology)
    k, n = num_partitions, instance.num_layers
    if k > len(names):
        raise OptionError(f"num_partitions: {k} partitions but topology {topology.graph.get('name')!r} has {len(names)} GPUs")
    sizes = instance.sizes
    activations = [layer.sent_bytes for layer in instance.layers]  # what crosses a cut
    caps = [min(instance.capacity, topology.nodes[g].get("memory") or instance.capacity) for g in names]

    # The baseline and warm start: the DP's most balanced k-partition, placed by map_plan.
    baseline = None
    if max(sizes) <= max(caps):
        _, parts = min_bottleneck(sizes, k)
        if max(sum(sizes[i] for i in p) for p in parts) <= instance.capacity:
            plan = _plan_of(instance, parts, "dp")
            placed = map_plan(instance, plan, topology, objective)
            if placed.status.has_plan:
                baseline = (plan, placed)

    ranges = partition_ranges(sizes, max(caps), k)
    if any(first > last for first, last in ranges):
        return _infeasible(instance, topology, objective, k, started)

    # Sizes and activations enter the model divided by their common divisors, capacities floored
    # to the sizes' (exact: loads are multiples of it; layerfit.model.memory.byte_unit says why
    # the capacities stay out of the divisor).
    size_unit = math.gcd(*sizes) or 1
    act_unit = math.gcd(*activations) or 1
    sizes_u = [s // size_unit for s in sizes]
    caps_u = [c // size_unit for c in caps]
    acts_u = [a // act_unit for a in activations]
    G = len(names)
    inv = [[0] * G for _ in range(G)]
    lat = [[0] * G for _ in range(G)]
    for a in range(G):
        for b in range(G):
            if a != b:
                _, bandwidth, latency = link(topology, names[a], names[b])
                inv[a][b] = round(act_unit / bandwidth / TIME_UNIT)
                lat[a][b] = round(latency / TIME_UNIT)

    model = cp_model.CpModel()
    # x[i][p] = 1 if layer i is in partition p (inside the greedy bounds at the largest capacity).
    x = [{p: model.new_bool_var(f"x[{i},{p}]") for p in range(first, last + 1)} for i, (first, last) in enumerate(ranges)]
    # y[p][g] = 1 if partition p runs on GPU g.
    y = [[model.new_bool_var(f"y[{p},{g}]") for g in range(G)] for p in range(k)]
    for i in range(n):
        model.add_exactly_one(x[i].values())
    for i in range(1, n):
        for p, var in x[i].items():
            model.add_bool_or([*(x[i - 1][q] for q in (p, p - 1) if q in x[i - 1]), ~var])
    model.add(x[0][0] == 1)
    model.add(x[n - 1][k - 1] == 1)
    for p in range(k):
        model.add_exactly_one(y[p])
        model.add(sum(sizes_u[i] * x[i][p] for i in range(n) if p in x[i]) <= sum(caps_u[g] * y[p][g] for g in range(G)))
    for g in range(G):
        model.add_at_most_one(y[p][g] for p in range(k))
    horizon = max(lat[a][b] + inv[a][b] * max(acts_u) for a in range(G) for b in range(G) if a != b) if G > 1 else 0
    times = []
    for p in range(k - 1):
        # e[i]: layer i ends partition p; the boundary carries its activation.
        ends = []
        for i in range(n - 1):
            if p in x[i] and p + 1 in x[i + 1]:
                e = model.new_bool_var(f"e[{i},{p}]")
                model.add_implication(e, x[i][p])
                model.add_implication(e, x[i + 1][p + 1])
                model.add_bool_or([~x[i][p], ~x[i + 1][p + 1], e])
                ends.append((acts_u[i], e))
        carried = model.new_int_var(0, max(acts_u), f"bytes[{p}]")
        model.add(carried == sum(a * e for a, e in ends))
        t = model.new_int_var(0, horizon, f"t[{p}]")
        for a in range(G):
            for b in range(G):
                if a != b:
                    # z: partition p on GPU a and p+1 on GPU b; then t ≥ lat + inv · bytes
                    # (big-M form: with enforcement literals CP-SAT 9.15's presolve erred).
                    z = model.new_bool_var(f"z[{p},{a},{b}]")
                    model.add(z >= y[p][a] + y[p + 1][b] - 1)
                    big = lat[a][b] + inv[a][b] * max(acts_u)
                    model.add(t >= lat[a][b] + inv[a][b] * carried - big * (1 - z))
        times.append(t)
    if objective == "min_bottleneck":
        worst = model.new_int_var(0, horizon, "T")
        for t in times:
            model.add(worst >= t)
        model.minimize(worst)
    else:
        model.minimize(sum(times))

    if baseline is not None:
        plan, placed = baseline
        where = {i: p for p, part in enumerate(plan.partitions) for i in part}
        for i in range(n):
            for p, var in x[i].items():
                model.add_hint(var, where[i] == p)
        for p, device in enumerate(placed.devices):
            for g in range(G):
                model.add_hint(y[p][g], names[g] == device)

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = num_workers
    solver.parameters.random_seed = seed
    # CP-SAT 9.15's presolve called feasible joint models infeasible (module docstring).
    solver.parameters.cp_model_presolve = False
    status = solve_with_deadline(solver, model, time_limit)

    if status == cp_model.INFEASIBLE:
        return _infeasible(instance, topology, objective, k, started)
    candidates = []
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        partition_of = [next(p for p, var in x[i].items() if solver.boolean_value(var)) for i in range(n)]
        parts = partitions_from_assignment(partition_of, k)
        if parts is not None:
            devices = [names[next(g for g in range(G) if solver.boolean_value(y[p][g]))] for p in range(k)]
            plan = _plan_of(instance, parts, "cpsat")
            value = evaluate(topology, plan, devices, objective)
            if value is not None:
                candidates.append((value, plan, devices))
    if baseline is not None:
        plan, placed = baseline
        candidates.append((placed.objective, plan, placed.devices))
    if not candidates:
        return _infeasible(instance, topology, objective, k, started, unknown=True)
    value, plan, devices = min(candidates, key=lambda c: c[0])
    if status == cp_model.OPTIMAL:
        lower = None  # proven, up to the rounding of seconds per byte (module docstring)
    else:
        bound_units = solver.best_objective_bound if status == cp_model.FEASIBLE else 0.0
        lower = max(0.0, bound_units * TIME_UNIT * (1 - 1e-4))
    return build_placement(instance, plan, topology, devices, objective, method="joint-cpsat", lower=lower,
                           started=started)


def _infeasible(instance: Instance, topology: nx.Graph, objective: str, k: int, started: float,
                unknown: bool = False) -> Placement:
    why = (
        "no plan found within the time limit" if unknown
        else f"no {k} contiguous partitions fit distinct GPUs of {topology.graph.get('name')!r}"
    )
    return Placement(
        status=Status.UNKNOWN if unknown else Status.INFEASIBLE, objective_name=objective, objective=None,
        bound=None, devices=[], boundaries=[], method="joint-cpsat", topology_name=str(topology.graph.get("name")),
        instance_name=instance.name, num_layers=instance.num_layers, partitions=[], partition_bytes=[],
        solve_time_s=time.perf_counter() - started, explanation=why,
    )
