"""One conformance suite, run by every exact method and backend (dp, CP-SAT, CBC, HiGHS).

Every plan passes validate_plan; every method agrees with an exhaustive oracle on small
chains; greedy is never better than the optimum.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Status, solve, validate_plan

from helpers import EXACT, EXACT_IDS, MODEL_IDS, MODEL_METHODS, make_instance, oracle, small_instances

WARM_STARTS = ["dp", "greedy", "none"]


def check_min_partitions(inst, method, options):
    plan = solve(inst, method, **options)
    validate_plan(inst, plan)
    expected = oracle(inst)["lexicographic"]
    if expected is None:
        assert plan.status is Status.INFEASIBLE
        assert plan.explanation
    else:
        assert plan.status is Status.OPTIMAL, plan
        assert (plan.objective, plan.secondary_objective) == expected
        assert plan.gap == 0.0
        greedy = solve(inst, "greedy")
        assert greedy.num_partitions == plan.num_partitions
        assert greedy.secondary_objective >= plan.secondary_objective
    return plan


@pytest.mark.parametrize("method, options", EXACT, ids=EXACT_IDS)
@settings(max_examples=120)
@given(inst=small_instances())
def test_min_partitions_matches_the_oracle(method, options, inst):
    check_min_partitions(inst, method, options)


@pytest.mark.parametrize("warm_start", WARM_STARTS)
@pytest.mark.parametrize("method, options", MODEL_METHODS, ids=MODEL_IDS)
@settings(max_examples=40)
@given(inst=small_instances(feasible=True))
def test_every_warm_start_reaches_the_optimum(method, options, warm_start, inst):
    check_min_partitions(inst, method, {**options, "warm_start": warm_start})


@pytest.mark.parametrize("method, options", EXACT, ids=EXACT_IDS)
@settings(max_examples=120)
@given(inst=small_instances(), data=st.data())
def test_min_bottleneck_matches_the_oracle(method, options, inst, data):
    k = data.draw(st.integers(1, inst.num_layers))
    extra = {"warm_start": data.draw(st.sampled_from(WARM_STARTS))} if method != "dp" else {}
    plan = solve(inst, method, objective="min_bottleneck", num_partitions=k, **options, **extra)
    validate_plan(inst, plan)
    expected = oracle(inst)["bottleneck"].get(k)
    if expected is None:
        assert plan.status is Status.INFEASIBLE
        assert plan.explanation
    else:
        assert plan.status is Status.OPTIMAL, plan
        assert plan.num_partitions == k
        assert plan.objective == plan.bound == expected


@pytest.mark.parametrize("method, options", EXACT, ids=EXACT_IDS)
def test_methods_agree_on_mid_sized_chains(method, options):
    import random

    for seed in range(6):
        rng = random.Random(seed)
        n = rng.randint(40, 120)
        sizes = [rng.randint(1, 10**9) for _ in range(n)]
        inst = make_instance(sizes, int(max(sizes) * rng.uniform(1.2, 6)))
        reference = solve(inst, "dp")
        plan = solve(inst, method, **options)
        validate_plan(inst, plan)
        assert (plan.status, plan.objective, plan.secondary_objective) == (
            Status.OPTIMAL, reference.objective, reference.secondary_objective
        )
        k = reference.num_partitions + rng.randint(0, 4)
        reference = solve(inst, "dp", objective="min_bottleneck", num_partitions=k)
        plan = solve(inst, method, objective="min_bottleneck", num_partitions=k, **options)
        validate_plan(inst, plan)
        assert (plan.status, plan.objective) == (Status.OPTIMAL, reference.objective)


@pytest.mark.parametrize("method, options", MODEL_METHODS, ids=MODEL_IDS)
def test_greedy_warm_start_finds_better_balance_on_its_own(method, options):
    # The seed example on 80 GB: greedy packs 5 + 5 + 5 + 1 layers; the optimum is 4 × 4.
    inst = make_instance([14_235_760_000] * 16, 80 * 10**9)
    plan = solve(inst, method, warm_start="greedy", **options)
    validate_plan(inst, plan)
    assert [len(p) for p in plan.partitions] == [4, 4, 4, 4]
    assert plan.status is Status.OPTIMAL


def test_auto_is_exact():
    inst = make_instance([4, 4, 2, 6, 4], 10)
    plan = solve(inst)
    assert plan.method == "dp" and plan.status is Status.OPTIMAL
