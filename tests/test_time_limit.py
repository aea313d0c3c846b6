"""A time limit never loses the incumbent: FEASIBLE with its bound, or OPTIMAL if proven."""

import random

import pytest

from layerfit import Status, solve, validate_plan
from layerfit.methods.formulation import BackendResult
from layerfit.solve import _model_plan

from helpers import MODEL_IDS, MODEL_METHODS, make_instance


def hard_instance():
    # Seen here: with the greedy warm start and k = k* + 3 these take CP-SAT, CBC and
    # HiGHS seconds to tens of seconds to prove.
    rng = random.Random(1000)
    sizes = [rng.randint(1, 100) * 10**6 + rng.randint(0, 10**6) + rng.randint(1, 8) * 2**20 for _ in range(1000)]
    return make_instance(sizes, max(sizes) * 8)


@pytest.mark.parametrize("method, options", MODEL_METHODS, ids=MODEL_IDS)
def test_time_limited_runs_keep_their_incumbent(method, options):
    inst = hard_instance()
    k = solve(inst, "dp").num_partitions + 3
    optimum = solve(inst, "dp", objective="min_bottleneck", num_partitions=k).objective
    plan = solve(inst, method, objective="min_bottleneck", num_partitions=k, time_limit=0.5, warm_start="greedy", **options)
    validate_plan(inst, plan)
    assert plan.status in (Status.FEASIBLE, Status.OPTIMAL)
    assert plan.num_partitions == k
    assert plan.bound <= optimum <= plan.objective
    if plan.status is Status.FEASIBLE:
        assert plan.gap > 0


def test_no_plan_and_no_warm_start_is_unknown():
    def finish(status, partitions=(), **fields):
        from layerfit import Plan

        return Plan(status=status, partitions=[list(p) for p in partitions], objective_name="min_bottleneck",
                    method="cpsat", instance_name="t", num_layers=3, **fields)

    result = BackendResult(None, 5, False, False, "UNKNOWN")
    inst = make_instance([3, 3, 3], 10)
    plan = _model_plan(finish, inst, result, None, 2, lexicographic=False)
    assert plan.status is Status.UNKNOWN and plan.bound == 5 and plan.objective is None
    kept = _model_plan(finish, inst, result, [[0, 1], [2]], 2, lexicographic=False)
    assert kept.status is Status.FEASIBLE and kept.partitions == [[0, 1], [2]]
    assert "the warm start is returned" in kept.explanation
