"""The bottleneck model in OR-Tools CP-SAT.

    minimise    M
    subject to  Σ_p x[i, p] = 1                         every layer in one partition
                x[i, p] ⇒ x[i−1, p] ∨ x[i−1, p−1]        contiguity, partitions in order
                x[0, 0] = 1,  x[n−1, k−1] = 1           all k partitions used
                Σ_i s_i · x[i, p] ≤ M ≤ cap              capacity and bottleneck
                x[i, p] = 0 unless first_i ≤ p ≤ last_i  greedy bounds (layerfit.methods.greedy)

Deterministic only with ``num_workers=1`` and no time limit (CP-SAT's own rule);
otherwise the search is parallel and the plan found under a limit may vary.
"""

from __future__ import annotations

import math
import threading

from .formulation import BackendResult, Formulation, add_rules, extra_terms, partitions_from_assignment

__all__ = ["solve_bottleneck", "solve_with_deadline", "chain_assignment", "run_model"]

# CP-SAT has been seen to overrun its own time limit (60 s answered after 130 s): stop it
# from outside once the limit and this grace have passed.
_DEADLINE_GRACE_S = 1.0


def solve_with_deadline(solver, model, time_limit: float | None) -> int:  # type: ignore[no-untyped-def]
    """``solver.solve(model)`` under ``time_limit``, stopped from outside if it overruns."""
    timer = None
    if time_limit is not None:
        solver.parameters.max_time_in_seconds = time_limit
        timer = threading.Timer(time_limit + _DEADLINE_GRACE_S, solver.stop_search)
        timer.daemon = True
        timer.start()
    try:
        return solver.solve(model)
    finally:
        if timer is not None:
            timer.cancel()


def chain_assignment(model, ranges, k: int) -> list[dict]:  # type: ignore[no-untyped-def]
    """x[i][p] = layer i in partition p, for p in its range; k contiguous partitions in order.

    The contiguity clause x[i, p] ⇒ x[i−1, p] ∨ x[i−1, p−1] is what makes the bounds
    propagate along the chain."""
    n = len(ranges)
    x = [{p: model.new_bool_var(f"x[{i},{p}]") for p in range(first, last + 1)} for i, (first, last) in enumerate(ranges)]
    for i in range(n):
        model.add_exactly_one(x[i].values())
    for i in range(1, n):
        for p, var in x[i].items():
            before = [x[i - 1][q] for q in (p, p - 1) if q in x[i - 1]]
            model.add_bool_or([*before, ~var])
    model.add(x[0][0] == 1)
    model.add(x[n - 1][k - 1] == 1)
    return x


def run_model(model, *, time_limit: float | None, seed: int, num_workers: int):  # type: ignore[no-untyped-def]
    """Solve ``model`` (under an outer deadline); returns the solver, its status and the status's name."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = num_workers
    solver.parameters.random_seed = seed
    status = solve_with_deadline(solver, model, time_limit)
    return solver, status, solver.status_name(status)


def solve_bottleneck(form: Formulation, *, time_limit: float | None, seed: int, num_workers: int) -> BackendResult:
    """Solve ``form`` with CP-SAT; the incumbent and bound are kept on a time limit."""
    from ortools.sat.python import cp_model

    n, k = form.num_layers, form.k
    model = cp_model.CpModel()

    # x[i, p] = 1 if layer i is in partition p (only inside the greedy bounds).
    x = chain_assignment(model, form.ranges, k)
    # M: the bottleneck, S_max. Its domain starts at L = max(max s, ⌈Σ s / k⌉), a bound
    # the LP relaxation would not find by itself.
    bottleneck = model.new_int_var(form.lower, form.cap, "M")
    members: list[list[tuple[int, cp_model.IntVar]]] = [[] for _ in range(k)]
    for i in range(n):
        for p, var in x[i].items():
            members[p].append((form.weight(i, p), var))
    extra = extra_terms(form, x, lambda name, upper: model.new_int_var(0, upper, name),
                        lambda var, expression: model.add(var >= expression))
    add_rules(form, x, lambda lhs, sense, rhs: model.add(
        lhs == rhs if sense == "==" else lhs <= rhs if sense == "<=" else lhs >= rhs))
    for p in range(k):
        load = sum(size * var for size, var in members[p]) + sum(c * var for c, var in extra[p])
        model.add(load <= bottleneck)
        if form.caps:
            model.add(load <= form.cap_of(p))  # device p of an ordered pool
    model.minimize(bottleneck)

    if form.hint is not None:
        hinted = {i: p for p, part in enumerate(form.hint) for i in part}
        for i in range(n):
            for p, var in x[i].items():
                model.add_hint(var, p == hinted[i])
        model.add_hint(bottleneck, max(form.load(part, p) for p, part in enumerate(form.hint)))

    solver, status, name = run_model(model, time_limit=time_limit, seed=seed, num_workers=num_workers)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        partition_of = [next(p for p, var in x[i].items() if solver.boolean_value(var)) for i in range(n)]
        partitions = partitions_from_assignment(partition_of, k)
        bound = max(form.lower, math.ceil(solver.best_objective_bound - 1e-6))
        if partitions is None:  # never seen; checked like every backend's answer
            return BackendResult(None, form.lower * form.scale, False, False, f"{name} (solution rejected)")
        return BackendResult(partitions, bound * form.scale, status == cp_model.OPTIMAL, False, name)
    if status == cp_model.INFEASIBLE:
        return BackendResult(None, form.lower * form.scale, False, True, name)
    return BackendResult(None, form.lower * form.scale, False, False, name)
