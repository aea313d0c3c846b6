"""DAG models (an instance with ``edges``): residual and skip connections, encoder–decoder
cross-attention, U-Net skips.

A plan is k ordered partitions, each a set of layers, such that no edge runs backwards
(x[u] ≤ x[v] for every edge u → v, x the partition of a layer): each partition is convex
in the graph. A tensor (a layer's ``sent_bytes``) whose last consumer is in a later
partition than its producer crosses every boundary in between and is held by every
partition it passes through on the way:

    S(P_j) = Σ_{v ∈ P_j} (size(v) + (f_j − 1) act(v)) + Σ_{u : x[u] < j < last(u)} f_j out(u)

with f_j the micro-batches stage j holds at once under the instance's schedule (1 without
one; GPipe m; 1F1B min(k − j, m)): every activation and every relayed tensor is held once per
micro-batch in flight, weights and workspaces once. As in the seed's chain, a partition's
inputs are not counted in its own footprint (the producer's activation is); a tensor
relayed through a partition is. On a chain (edges i → i+1) this is the seed's S(P) exactly.

Methods: ``greedy`` — the seed's algorithm over a topological order (the listed order
when it is one); ``cpsat`` and ``mip`` (CBC or HiGHS) — exact, the same linear model:
with cumulative booleans a[v, j] = [x[v] ≤ j],

    a[v, j−1] ≤ a[v, j],   a[v, j] ≤ a[u, j] for u → v,   Σ_v (a[v, j] − a[v, j−1]) ≥ 1,
    L[u, j] ≥ 1 − a[v, j] for each consumer v   (u is still needed after partition j),
    h[u, j] ≥ a[u, j−1] + L[u, j] − 1           (u passes through partition j),
    Σ_v size(v) (a[v, j] − a[v, j−1]) + Σ_u out(u) h[u, j] ≤ M ≤ C,

minimising M; for the fewest partitions every smaller k is proven infeasible first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..model.graph import consumers, partition_of, topological_order
from ..model.memory import byte_unit, in_flight, order_run_bytes, plan_loads, relay_bytes, size_at, usable_capacity
from .count_search import Attempt, deadline, search_counts
from ..model.instance import Instance

__all__ = ["greedy_dag", "cpsat_dag",
           "mip_dag", "solve_dag"]


def _pins(instance: Instance, k: int) -> dict[int, int] | None:
    """Each pinned layer's partition among ``k``; None when a pin names one past the k-th."""
    index = {layer.name: i for i, layer in enumerate(instance.layers)}
    pins = {index[name]: instance.constraints.resolve_pin(pin, k) for name, pin in instance.constraints.pinned}
    return None if any(not 0 <= j < k for j in pins.values()) else pins


def greedy_dag(instance: Instance) -> list[list[int]] | None:
    """The seed's greedy over a topological order: each partition filled while its footprint
    (with the tensors passing through it) fits; None when one layer alone does not fit.
    With a schedule, every stage is planned for the most micro-batches any stage holds."""
    order = topological_order(instance)
    capacity = usable_capacity(instance)
    # Like the chain's greedy, every stage is planned for the most micro-batches any stage holds.
    m = instance.micro_batches if instance.schedule != "none" else 1

    def run_cost(a: int, b: int) -> int:  # the run order[a:b], every later layer in a later partition
        return order_run_bytes(instance, order, a, b, m)

    parts: list[list[int]] = []
    start = 0
    for b in range(1, len(order) + 1):
        if run_cost(start, b) <= capacity:
            continue
        if b - 1 == start:
            return None  # the layer alone (with what passes through) does not fit
        parts.append(order[start:b - 1])
        start = b - 1
        if run_cost(start, b) > capacity:
            return None
    parts.append(order[start:])
    return parts


def cpsat_dag(instance: Instance, k: int, *, hint: Sequence[Sequence[int]] | None, time_limit: float | None,
              seed: int, num_workers: int) -> tuple[str, list[list[int]] | None, int, bool, bool]:
    """The module's model for exactly ``k`` partitions: (status name, partitions or None,
    bound in bytes, proven optimal, proven infeasible)."""
    from ortools.sat.python import cp_model

    from .cpsat import run_model

    n = instance.num_layers
    users = consumers(instance)
    unit = byte_unit(instance)  # the model counts in it (layerfit.model.memory.byte_unit says why)
    relays = [r // unit for r in relay_bytes(instance)]
    capacity = usable_capacity(instance) // unit
    model = cp_model.CpModel()
    one = model.new_constant(1)
    zero = model.new_constant(0)
    # a[v][j] = [x[v] ≤ j] for j = 0 … k−1 (a[v][k−1] = 1), a[v][−1] = 0
    a = [[model.new_bool_var(f"a[{v},{j}]") for j in range(k - 1)] + [one] for v in range(n)]

    def at(v: int, j: int):  # type: ignore[no-untyped-def]
        return zero if j < 0 else a[v][j]

    for v in range(n):
        for j in range(1, k - 1):
            model.add_implication(a[v][j - 1], a[v][j])
    for u in range(n):
        for v in users[u]:
            for j in range(k - 1):
                model.add_implication(a[v][j], a[u][j])  # v done by j ⇒ u done by j
    pins = _pins(instance, k)
    if pins is None:
        return "INFEASIBLE (a pin past the last partition)", None, 0, False, True
    most, fewest = instance.constraints.max_layers_per_partition, instance.constraints.min_layers_per_partition
    for j in range(k):
        count = sum(at(v, j) - at(v, j - 1) for v in range(n))
        model.add(count >= max(1, fewest or 0))
        if most:
            model.add(count <= most)
    for v, j in pins.items():  # x[v] = j: done by j, not by j − 1
        model.add(at(v, j) == 1)
        model.add(at(v, j - 1) == 0)
    bottleneck = model.new_int_var(0, capacity, "M")
    passing = [[] for _ in range(k)]
    for u in range(n):
        if not users[u]:
            continue
        out = relays[u]
        if not out:
            continue
        needed = [model.new_bool_var(f"L[{u},{j}]") for j in range(k - 1)]  # a consumer after j
        for j in range(k - 1):
            for v in users[u]:
                model.add_bool_or([needed[j], a[v][j]])
        for j in range(1, k - 1):
            held = model.new_bool_var(f"h[{u},{j}]")
            model.add_bool_or([held, ~a[u][j - 1], ~needed[j]])  # produced before j, needed after j
            passing[j].append((out, held))
    for j in range(k):
        f = in_flight(instance, j, k)
        load = sum(size_at(instance, v, f) // unit * (at(v, j) - at(v, j - 1)) for v in range(n))
        load += sum(f * out * held for out, held in passing[j])
        model.add(load <= bottleneck)
    model.minimize(bottleneck)
    if hint is not None:
        where = partition_of(hint, n)
        for v in range(n):
            for j in range(k - 1):
                model.add_hint(a[v][j], where[v] <= j)
    solver, status, name = run_model(model, time_limit=time_limit, seed=seed, num_workers=num_workers)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        where = [next(j for j in range(k) if solver.boolean_value(a[v][j]) or j == k - 1) for v in range(n)]
        parts = [[v for v in topological_order(instance) if where[v] == j] for j in range(k)]
        bound = math.ceil(solver.best_objective_bound - 1e-6) * unit
        return name, parts, bound, status == cp_model.OPTIMAL, False
    return name, None, 0, False, status == cp_model.INFEASIBLE


def mip_dag(instance: Instance, k: int, *, hint: Sequence[Sequence[int]] | None, backend: str,
            time_limit: float | None, seed: int) -> tuple[str, list[list[int]] | None, int, bool, bool]:
    """The same model as a MIP in PuLP (CBC or HiGHS): a[v, j] binary, L and h continuous in
    [0, 1] (integral at the optimum: they only bound loads from below). Returns what
    :func:`cpsat_dag` returns; a solution whose binaries are not 0/1 is rejected."""
    import time

    import pulp

    from .mip import ROOM, run_backend

    started = time.monotonic()

    n = instance.num_layers
    users = consumers(instance)
    unit = byte_unit(instance)  # as cpsat_dag's
    relays = [r // unit for r in relay_bytes(instance)]
    prob = pulp.LpProblem("dag", pulp.LpMinimize)
    a = [[prob.add_variable(f"a_{v}_{j}", 0, 1, cat=pulp.LpBinary) for j in range(k - 1)] for v in range(n)]

    def at(v: int, j: int):  # type: ignore[no-untyped-def]
        return 0 if j < 0 else (1 if j == k - 1 else a[v][j])

    for v in range(n):
        for j in range(1, k - 1):
            prob += a[v][j - 1] <= a[v][j], f"cumulative_{v}_{j}"
    for u in range(n):
        for v in users[u]:
            for j in range(k - 1):
                prob += a[v][j] <= a[u][j], f"edge_{u}_{v}_{j}"
    pins = _pins(instance, k)
    if pins is None:
        return "Infeasible (a pin past the last partition)", None, 0, False, True
    most, fewest = instance.constraints.max_layers_per_partition, instance.constraints.min_layers_per_partition
    for j in range(k):
        count = pulp.lpSum(at(v, j) - at(v, j - 1) for v in range(n))
        prob += count >= max(1, fewest or 0), f"nonempty_{j}"
        if most:
            prob += count <= most, f"most_{j}"
    for v, j in pins.items():
        if j < k - 1:
            prob += a[v][j] == 1, f"pin_done_{v}"
        if j > 0:
            prob += a[v][j - 1] == 0, f"pin_not_before_{v}"
    # Continuous, with half a byte of room on its bound (layerfit.methods.mip: loads are integers).
    bottleneck = prob.add_variable("M", 0, usable_capacity(instance) // unit + ROOM)
    prob += bottleneck
    passing: list[list] = [[] for _ in range(k)]
    for u in range(n):
        out = relays[u]
        if not users[u] or not out:
            continue
        needed = [prob.add_variable(f"L_{u}_{j}", 0, 1) for j in range(k - 1)]
        for j in range(k - 1):
            for v in users[u]:
                prob += needed[j] >= 1 - a[v][j], f"needed_{u}_{v}_{j}"
        for j in range(1, k - 1):
            held = prob.add_variable(f"h_{u}_{j}", 0, 1)
            prob += held >= a[u][j - 1] + needed[j] - 1, f"held_{u}_{j}"
            passing[j].append((out, held))
    for j in range(k):
        f = in_flight(instance, j, k)
        load = pulp.lpSum(size_at(instance, v, f) // unit * (at(v, j) - at(v, j - 1)) for v in range(n))
        prob += load + pulp.lpSum(f * out * held for out, held in passing[j]) <= bottleneck, f"load_{j}"
    start: dict[str, float] = {}
    if hint is not None:
        where = partition_of(hint, n)
        for v in range(n):
            for j in range(k - 1):
                start[a[v][j].name] = 1.0 if where[v] <= j else 0.0
    raw, bound = run_backend(prob, start, backend, time_limit, seed, started=started)
    if prob.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        values = [[var.value() or 0.0 for var in row] for row in a]
        if any(min(abs(x), abs(x - 1)) > 1e-6 for row in values for x in row):
            return f"{raw} (solution rejected)", None, 0, False, False
        where = [next((j for j in range(k - 1) if values[v][j] > 0.5), k - 1) for v in range(n)]
        parts = [[v for v in topological_order(instance) if where[v] == j] for j in range(k)]
        if any(not p for p in parts):
            return f"{raw} (solution rejected)", None, 0, False, False
        proven = prob.sol_status == pulp.LpSolutionOptimal and raw.lower().startswith("optimal")
        value = max(plan_loads(instance, parts))
        return raw, parts, value if proven else bound * unit, proven, False
    infeasible = prob.sol_status == pulp.LpSolutionInfeasible or prob.status == pulp.LpStatusInfeasible
    return raw, None, 0, False, infeasible


def solve_dag(instance: Instance, method: str, objective: str, k: int | None, finish, *,  # type: ignore[no-untyped-def]
              time_limit: float | None, seed: int, num_workers: int, backend: str | None = None):
    """solve() on a DAG instance: greedy over a topological order, the CP-SAT model or the MIP."""
    from ..model.plan import Status

    greedy = greedy_dag(instance)
    if method == "greedy":
        if greedy is None:
            return finish(Status.UNKNOWN, objective=None, bound=None,
                          explanation="greedy (over a topological order) found no plan")
        loads = plan_loads(instance, greedy)
        return finish(Status.FEASIBLE, greedy, objective=len(greedy), bound=1, secondary_objective=max(loads),
                      secondary_bound=0)
    left = deadline(time_limit)
    if objective == "min_bottleneck":
        counts = [int(k)]  # type: ignore[arg-type]
    else:
        lowest = max(1, math.ceil(sum(instance.sizes) / usable_capacity(instance)))
        # Greedy's count bounds the fewest only when greedy's plan keeps the rules (it knows none).
        ruled = instance.constraints.structural
        counts = list(range(lowest, (len(greedy) if greedy and not ruled else instance.num_layers) + 1))

    def hint_for(count: int):  # type: ignore[no-untyped-def]
        usable = greedy is not None and len(greedy) == count and not instance.constraints.structural
        return (greedy, None) if usable else None

    def attempt(count: int, hint) -> Attempt:  # type: ignore[no-untyped-def]
        start = hint[0] if hint else None
        if method == "mip":
            status, parts, bound, _, infeasible = mip_dag(instance, count, hint=start, backend=backend or "cbc",
                                                          time_limit=left(), seed=seed)
        else:
            status, parts, bound, _, infeasible = cpsat_dag(instance, count, hint=start, time_limit=left(), seed=seed,
                                                            num_workers=num_workers)
        return Attempt(status, parts, bound, infeasible)

    what = f"{k} partitions" if objective == "min_bottleneck" else "any number of partitions"
    return search_counts(instance, objective, counts, attempt, hint_for, finish, clock=left, infeasible_why=(
        f"no ordered convex split of the DAG into {what} fits the capacity of {usable_capacity(instance):,} B"
        + (" and keeps the pins and layer counts" if instance.constraints.structural else "")
        + f" ({'the MIP' if method == 'mip' else 'CP-SAT'} proved it), counting the tensors each partition relays"))
