"""The objective ``max_kv_tokens``: over exactly k stages, the most tokens of KV cache the
pipeline serves, every stage within its memory.

A serving engine with pipeline parallelism (vLLM, SGLang) gives every rank the same number of
KV-cache blocks, the least that any rank's free memory buys for its own layers: a pipeline
serves only as many tokens as its tightest stage holds. With ``e_i`` the bytes one token of
layer i's cache takes (``kv_cache_bytes / kv_tokens``, :func:`~layerfit.model.memory.kv_token_bytes`),
stage j on a device of usable capacity C_j, holding everything else it holds at L_j bytes
(weights, activations, workspace, under every rule of the memory model), serves T tokens when

    L_j + T · Σ_{i ∈ P_j} e_i  ≤  C_j,

and the program is  max T  over k contiguous stages, every one within that bound.

Exactness of the bisection (method ``dp``). Write I_T for the instance whose layers hold T
tokens each (:func:`~layerfit.model.memory.with_kv_tokens`): its layer sizes are the memory
model's additive terms with a KV term e_i · T, so "some k-stage plan fits I_T" is exactly what
the stage probe decides (:func:`layerfit.methods.stages.probe_stages` for chains and ordered
pools, with every pin, layer count and cut rule; :func:`layerfit.methods.pools.probe_free` for
free pools). (1) Monotone: e_i ≥ 0, so every stage of every plan grows with T; a plan that
fits I_T fits I_T' for every T' ≤ T, and the set of feasible T is an interval [0, T*].
(2) Bounded: summing the stages' inequalities, Σ_j L_j + T · Σ_i e_i ≤ Σ_j C_j with L_j ≥ 0, so
T* ≤ ⌊Σ_j C_j / Σ_i e_i⌋ (the k largest capacities on a free pool). Hence bisection over the
integers of that interval with the exact probe finds T*, in O(log T*) probes, and the plan the
probe returns at T* is optimal. T* = 0 (weights fit, no token does) is reported infeasible:
an engine refuses to start without cache.

Method ``cpsat`` (free pools of more device mixes than the DP tracks): the free-pool model of
:mod:`layerfit.methods.pools` with T a variable, each stage's KV bytes the product T · K_p of
T and its per-token bytes K_p = Σ_i e_i x[i, p] (``add_multiplication_equality``), maximising
T; held against the DP wherever the DP applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from ..model.instance import Instance
from ..model.memory import (capacity_at, capacity_within, kv_token_bytes, layer_parts, plan_kv_tokens,
                            usable_capacity, with_kv_tokens)

__all__ = ["token_ceiling", "greatest_tokens", "max_kv_tokens", "max_free_kv_tokens", "cpsat_free_kv_tokens"]

Answer = TypeVar("Answer")


def _capacities(instance: Instance, k: int) -> list[int]:
    """What the k stages may hold at most: the usable capacity each (a chain), devices 0 … k−1
    (an ordered pool), or the k largest devices (a free pool)."""
    if instance.free_pool:
        return sorted((capacity_within(instance, d.capacity) for d in instance.devices or ()), reverse=True)[:k]
    return [capacity_at(instance, j) for j in range(k)]


def token_ceiling(instance: Instance, k: int) -> int:
    """⌊Σ_j C_j / Σ_i e_i⌋: no k-stage plan serves more tokens (the module's (2))."""
    per_token = sum(kv_token_bytes(instance))
    return max(0, sum(_capacities(instance, k))) // per_token


def greatest_tokens(probe: Callable[[int], Answer | None], high: int) -> tuple[int, Answer] | None:
    """The greatest T in [0, high] at which ``probe`` has an answer (it has one on an interval
    [0, T*]: the module's (1)), with that answer, by bisection; None if not even at 0."""
    best = probe(0)
    if best is None:
        return None
    lo, hi = 0, high  # probe(lo) has an answer; nothing above hi does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        found = probe(mid)
        if found is None:
            hi = mid - 1
        else:
            lo, best = mid, found
    return lo, best


def max_kv_tokens(instance: Instance, k: int) -> tuple[int, list[list[int]]] | None:
    """T* and an optimal plan of exactly ``k`` stages of a chain or an ordered pool (with its
    pins, layer counts and cut rules), or None when ``k`` stages cannot hold the model even
    without cache."""
    from .stages import probe_stages

    capacity = usable_capacity(instance)
    return greatest_tokens(lambda t: probe_stages(with_kv_tokens(instance, t), capacity, k), token_ceiling(instance, k))


def max_free_kv_tokens(instance: Instance, k: int) -> tuple[int, list[list[int]], list[str]] | None:
    """T*, an optimal plan and its devices over exactly ``k`` devices of a free pool, or None."""
    from .pools import probe_free

    capacity = usable_capacity(instance)
    found = greatest_tokens(lambda t: probe_free(with_kv_tokens(instance, t), capacity, k), token_ceiling(instance, k))
    if found is None:
        return None
    tokens, (parts, names) = found
    return tokens, parts, names


def cpsat_free_kv_tokens(instance: Instance, k: int, *, hint: tuple[list[list[int]], list[str]] | None,
                         time_limit: float | None, seed: int, num_workers: int) -> tuple:
    """CP-SAT over exactly ``k`` partitions on the free pool, maximising the tokens T.

    Returns (status name, partitions or None, devices or None, upper bound on T, proven
    infeasible). Each partition p holds Σ_i (fixed_i + f_p · act_i) x[i, p] + B_p + T · K_p
    within its kind's capacity, B_p its largest reused buffer (buffer reuse), K_p its
    per-token bytes; all in the unit of their greatest common divisor (exact).
    """
    from ortools.sat.python import cp_model

    from .cpsat import chain_assignment, run_model
    from .greedy import partition_ranges
    from .pools import device_kinds, hint_free_model, read_free_model
    from ..model.memory import in_flight

    bare = with_kv_tokens(instance, 0)  # everything but the cache
    kinds = device_kinds(instance)
    held, acts, reused = layer_parts(bare)
    per_token = kv_token_bytes(instance)
    flights = [in_flight(instance, p, k) for p in range(k)]
    limits = [capacity_within(instance, kind.capacity) for kind in kinds]
    lower = [h + min(flights) * a for h, a in zip(held, acts)]  # a lower bound on each layer's share of a stage
    ranges = partition_ranges(lower, max(limits), k)
    ceiling = token_ceiling(instance, k)
    if any(first > last for first, last in ranges):
        return "INFEASIBLE (bounds)", None, None, 0, True
    unit = math.gcd(*held, *acts, *reused, *per_token) or 1
    held, acts, reused, per_token = ([v // unit for v in values] for values in (held, acts, reused, per_token))
    limits = [c // unit for c in limits]
    n = instance.num_layers
    model = cp_model.CpModel()
    x = chain_assignment(model, ranges, k)
    z = [[model.new_bool_var(f"z[{p},{t}]") for t in range(len(kinds))] for p in range(k)]
    tokens = model.new_int_var(0, ceiling, "T")
    for p in range(k):
        model.add_exactly_one(z[p])
        members = [i for i in range(n) if p in x[i]]
        buffer = model.new_int_var(0, max((reused[i] for i in members), default=0), f"B[{p}]")
        for i in members:
            if reused[i]:
                model.add(buffer >= reused[i] * x[i][p])
        per_stage = model.new_int_var(0, sum(per_token[i] for i in members), f"K[{p}]")
        model.add(per_stage == sum(per_token[i] * x[i][p] for i in members))
        cache = model.new_int_var(0, ceiling * sum(per_token[i] for i in members), f"KV[{p}]")
        model.add_multiplication_equality(cache, [tokens, per_stage])
        load = sum((held[i] + flights[p] * acts[i]) * x[i][p] for i in members) + buffer + cache
        model.add(load <= sum(limits[t] * z[p][t] for t in range(len(kinds))))
    for t, kind in enumerate(kinds):
        model.add(sum(z[p][t] for p in range(k)) <= len(kind.names))
    model.maximize(tokens)
    hint_free_model(model, x, z, kinds, hint)
    solver, status, name = run_model(model, time_limit=time_limit, seed=seed, num_workers=num_workers)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        partitions, names = read_free_model(instance, solver, x, z, kinds)
        if partitions is None:
            return f"{name} (solution rejected)", None, None, ceiling, False
        bound = min(ceiling, math.floor(solver.best_objective_bound + 1e-6))
        return name, partitions, names, bound, False
    return name, None, None, ceiling, status == cp_model.INFEASIBLE


def served_tokens(instance: Instance, partitions: list[list[int]], devices: list[str] | None = None) -> int:
    """The tokens a plan serves (:func:`~layerfit.model.memory.plan_kv_tokens`), a stage without
    cache counting as no limit."""
    tokens, _ = plan_kv_tokens(instance, partitions, devices)
    return tokens if tokens is not None else token_ceiling(instance, len(partitions))


def solve_kv_tokens(instance: Instance, method: str, k: int, finish, *,  # type: ignore[no-untyped-def]
                    time_limit: float | None, seed: int, num_workers: int, warm_start: str | None):
    """solve(..., objective="max_kv_tokens"): the bisection (``dp``) on chains, ordered and free
    pools; CP-SAT on free pools, warm-started by the bisection's plan where the DP applies
    (``warm_start`` "dp", the default); "greedy" and "none" start it cold (greedy's plan has
    its own count, not k)."""
    from ..model.plan import Status
    from .pools import MAX_MIXES, mixes

    def no_cache(tokens_plan: tuple | None) -> object:  # type: ignore[type-arg]
        if tokens_plan is None:
            where = "of the pool's devices " if instance.devices is not None else ""
            return finish(Status.INFEASIBLE, objective=None, bound=None, explanation=(
                f"{k} stages {where}cannot hold the model even without KV cache"
                + (" in any order" if instance.free_pool else "")
                + (" within its constraints" if instance.constraints.structural else "")))
        return finish(Status.INFEASIBLE, objective=None, bound=None, explanation=(
            f"{k} stages hold the model but not one token of KV cache: the tightest stage has no room left"))

    exact = None
    dp_applies = not instance.free_pool or mixes(instance) <= MAX_MIXES
    if method == "dp" or (dp_applies and warm_start in (None, "dp")):
        exact = max_free_kv_tokens(instance, k) if instance.free_pool else max_kv_tokens(instance, k)
        if exact is None or exact[0] == 0:
            return no_cache(exact)
    if method == "dp":
        tokens, parts, *names = exact  # type: ignore[misc]
        devices = {"devices": names[0]} if names else {}
        return finish(Status.OPTIMAL, parts, objective=tokens, bound=tokens, kv_tokens=tokens, **devices)
    hint = (exact[1], exact[2]) if exact is not None else None
    status, parts, names, bound, infeasible = cpsat_free_kv_tokens(
        instance, k, hint=hint, time_limit=time_limit, seed=seed, num_workers=num_workers)
    note = None
    if parts is None and hint is not None:
        parts, names = hint
        note = f"the backend returned no plan ({status}); the warm start is returned"
    if parts is None:
        if infeasible:
            return no_cache(None)
        return finish(Status.UNKNOWN, objective=None, bound=None, backend_status=status,
                      explanation="no plan found within the time limit")
    tokens = served_tokens(instance, parts, names)
    bound = max(bound, tokens)
    if tokens == 0:
        if bound == 0:
            return no_cache((0,))
        return finish(Status.UNKNOWN, objective=None, bound=None, backend_status=status,
                      explanation="no plan holding a token of KV cache found within the time limit")
    return finish(Status.OPTIMAL if bound == tokens else Status.FEASIBLE, parts, objective=tokens, bound=bound,
                  kv_tokens=tokens, devices=names, backend_status=status, explanation=note)
