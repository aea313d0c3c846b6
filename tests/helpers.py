"""Test helpers: random instances, an exhaustive oracle, the list of exact methods."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import strategies as st

from layerfit import Instance, Layer
from layerfit.model.memory import capacity_at, partition_bytes

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = ROOT / "instances"

# The exact methods, as (method, options): one conformance suite for every backend.
EXACT = [
    ("dp", {}),
    ("cpsat", {}),
    ("mip", {"backend": "cbc"}),
    ("mip", {"backend": "highs"}),
]
EXACT_IDS = ["dp", "cpsat", "mip-cbc", "mip-highs"]
MODEL_METHODS = [m for m in EXACT if m[0] != "dp"]
MODEL_IDS = [i for i in EXACT_IDS if i != "dp"]


def make_instance(sizes: list[int], capacity: int, *, activations: list[int] | None = None) -> Instance:
    """An instance whose layer i has size sizes[i] (split into weights and an activation)."""
    activations = activations or [0] * len(sizes)
    layers = [
        Layer(f"l{i}", weight_bytes=s - min(a, s), activation_bytes=min(a, s)) for i, (s, a) in enumerate(zip(sizes, activations))
    ]
    return Instance(name="t", capacity=capacity, layers=layers)


@st.composite
def small_instances(draw, max_layers: int = 8, feasible: bool | None = None) -> Instance:
    """Small random chains, sizes with ties and zeros, capacities around the interesting range."""
    n = draw(st.integers(1, max_layers))
    sizes = draw(st.lists(st.one_of(st.integers(0, 20), st.integers(0, 1000)), min_size=n, max_size=n))
    if max(sizes) == 0:
        sizes[0] = 1
    largest, total = max(sizes), sum(sizes)
    if feasible is False:
        capacity = draw(st.integers(1, largest - 1)) if largest > 1 else None
        if capacity is None:
            sizes[0] = 2
            capacity = 1
    elif feasible is True:
        capacity = draw(st.integers(largest, max(largest, total)))
    else:
        capacity = draw(st.integers(max(1, largest // 2), max(largest, total)))
    activations = draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
    return make_instance(sizes, capacity, activations=activations)


def all_plans(n: int):
    """Every way to cut a chain of n layers into contiguous non-empty partitions."""
    for k in range(1, n + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = [0, *cuts, n]
            yield [list(range(bounds[j], bounds[j + 1])) for j in range(k)]


def oracle(instance: Instance) -> dict:
    """Exhaustive optimum: fewest partitions and its best bottleneck; best bottleneck per k."""
    sizes, capacity = instance.sizes, instance.capacity
    best_count = None
    per_k: dict[int, int] = {}
    for plan in all_plans(len(sizes)):
        loads = [sum(sizes[i] for i in part) for part in plan]
        if max(loads) > capacity:
            continue
        k = len(plan)
        per_k[k] = min(per_k.get(k, max(loads)), max(loads))
        if best_count is None or k < best_count:
            best_count = k
    lex = None if best_count is None else (best_count, per_k[best_count])
    return {"lexicographic": lex, "bottleneck": per_k}


def satisfies(instance: Instance, plan: list[list[int]]) -> bool:
    """Whether a plan keeps the instance's structural constraints (pins, layer counts, cut rules)."""
    c, count = instance.constraints, len(plan)
    where = {i: j for j, part in enumerate(plan) for i in part}
    index = {layer.name: i for i, layer in enumerate(instance.layers)}
    ends = {part[-1] for part in plan[:-1]}
    return (all(where[index[n]] == (p if p >= 0 else count + p) for n, p in c.pinned)
            and all(not c.max_layers_per_partition or len(p) <= c.max_layers_per_partition for p in plan)
            and all(not c.min_layers_per_partition or len(p) >= c.min_layers_per_partition for p in plan)
            and all(index[n] not in ends for n in c.no_cut_after)
            and all(index[n] in ends for n in c.must_cut_after)
            and all(len({where[index[n]] for n in g.layers}) == 1 for g in c.tied if g.mode == "together"))


def stage_oracle(instance: Instance) -> dict:
    """Exhaustive optimum under every option (schedule, buffer reuse, pool, constraints):
    the lexicographic (count, largest stage) and the smallest largest stage per count."""
    per_k: dict[int, int] = {}
    for plan in all_plans(instance.num_layers):
        k = len(plan)
        if k > instance.max_partitions:
            continue
        loads = [partition_bytes(instance, p, j, k) for j, p in enumerate(plan)]
        if all(load <= capacity_at(instance, j) for j, load in enumerate(loads)) and satisfies(instance, plan):
            per_k[k] = min(per_k.get(k, max(loads)), max(loads))
    lex = None if not per_k else (min(per_k), per_k[min(per_k)])
    return {"lexicographic": lex, "bottleneck": per_k}


def check_dp_against_stage_oracle(instance: Instance):
    """Solve with the default (exact) method, validate, and compare with the oracle; returns the optimum."""
    from layerfit import Status, solve, validate_plan

    plan = solve(instance)
    validate_plan(instance, plan)
    expected = stage_oracle(instance)["lexicographic"]
    if expected is None:
        assert plan.status is Status.INFEASIBLE and plan.explanation
    else:
        assert plan.status is Status.OPTIMAL
        assert (plan.objective, plan.secondary_objective) == expected
    return expected


def assert_fewest_then_balanced(plan, per_k: dict) -> bool:
    """The plan against an oracle's smallest largest partition per count: INFEASIBLE with an
    explanation when there is none, else OPTIMAL at the fewest count and its best balance.
    Returns whether a plan exists."""
    from layerfit import Status

    if not per_k:
        assert plan.status is Status.INFEASIBLE and plan.explanation
        return False
    fewest = min(per_k)
    assert plan.status is Status.OPTIMAL and (plan.objective, plan.secondary_objective) == (fewest, per_k[fewest])
    return True


def check_solve_against_oracle(inst, per_k: dict, *, every_count: bool) -> None:
    """solve(inst) is valid and fewest-then-balanced against the oracle; then min_bottleneck
    matches the oracle at every count it reaches (``every_count``), or at the largest."""
    from layerfit import solve, validate_plan

    plan = solve(inst)
    validate_plan(inst, plan)
    if not assert_fewest_then_balanced(plan, per_k):
        return
    for k in (per_k if every_count else [max(per_k)]):
        bottleneck = solve(inst, objective="min_bottleneck", num_partitions=k)
        validate_plan(inst, bottleneck)
        assert bottleneck.objective == per_k[k]


def with_partitions(instance: Instance, plan, partitions: list[list[int]]):  # type: ignore[no-untyped-def]
    """``plan`` with other partitions, made valid for ``instance`` (objective, bounds, metrics
    recomputed; FEASIBLE), so that what consumes plans (exports, the mapper) checks its own rules."""
    import dataclasses

    from layerfit import Status
    from layerfit.model.memory import plan_loads
    from layerfit.report.metrics import plan_metrics

    largest = max(plan_loads(instance, partitions))
    if plan.objective_name == "min_partitions":
        values = {"objective": len(partitions), "bound": 1, "secondary_objective": largest, "secondary_bound": 0}
    else:
        values = {"objective": largest, "bound": 0, "num_partitions_requested": len(partitions)}
    return dataclasses.replace(plan, status=Status.FEASIBLE, partitions=partitions,
                               metrics=plan_metrics(instance, partitions), **values)
