"""The seed's GreedyLayerPartition, exactly, and the theorem that its count is optimal."""

from hypothesis import given
from hypothesis import strategies as st

from layerfit import Status, solve, validate_plan
from layerfit.methods.greedy import greedy_indices, greedy_partition, partition_ranges

from helpers import all_plans, make_instance, oracle, small_instances


def test_worked_examples():
    assert greedy_partition([3, 3, 3, 5], 6) == [[0, 1], [2], [3]]
    assert greedy_partition([1, 1, 1, 1], 10) == [[0, 1, 2, 3]]
    assert greedy_partition([5], 5) == [[0]]
    assert greedy_partition([0, 0, 4, 0], 4) == [[0, 1, 2, 3]]


def test_layer_larger_than_capacity_opens_an_over_capacity_partition_as_in_the_seed():
    # The seed's pseudo-code: current_partition = [l] even when size(l) > C.
    assert greedy_partition([2, 9, 2], 5) == [[0], [1], [2]]
    assert greedy_partition([9, 9], 5) == [[0], [1]]


def test_solve_reports_infeasible_instead_of_an_over_capacity_partition():
    inst = make_instance([2, 9, 2], 5)
    plan = solve(inst, "greedy")
    assert plan.status is Status.INFEASIBLE
    assert plan.partitions == []
    assert "l1: 9 B" in plan.explanation and "over by 4 B" in plan.explanation
    validate_plan(inst, plan)


@given(st.lists(st.integers(0, 30), min_size=1, max_size=12), st.integers(1, 40))
def test_greedy_indices_walk_like_greedy(sizes, capacity):
    parts = greedy_partition(sizes, capacity)
    indices = greedy_indices(sizes, capacity)
    assert indices == [j for j, part in enumerate(parts) for _ in part]


@given(small_instances(max_layers=9, feasible=True))
def test_greedy_count_is_optimal_on_additive_chains(inst):
    # The theorem (layerfit.methods.greedy): greedy stays ahead, so no plan has fewer partitions.
    best_count, _ = oracle(inst)["lexicographic"]
    plan = solve(inst, "greedy")
    validate_plan(inst, plan)
    assert plan.num_partitions == best_count
    assert plan.bound == best_count


@given(small_instances(max_layers=8, feasible=True), st.data())
def test_partition_ranges_contain_every_fitting_plan(inst, data):
    sizes, capacity = inst.sizes, inst.capacity
    k = data.draw(st.integers(len(greedy_partition(sizes, capacity)), len(sizes)))
    ranges = partition_ranges(sizes, capacity, k)
    for plan in all_plans(len(sizes)):
        if len(plan) != k or max(sum(sizes[i] for i in p) for p in plan) > capacity:
            continue
        for j, part in enumerate(plan):
            for i in part:
                assert ranges[i][0] <= j <= ranges[i][1], (plan, ranges)


def test_greedy_status_is_optimal_only_when_its_balance_is_proven():
    balanced = make_instance([5, 5, 5, 5], 10)
    unbalanced = make_instance([4, 4, 4, 4, 4], 12)  # greedy: 12 + 8; optimum 3 + 2 layers: still 12
    lopsided = make_instance([6, 6, 6, 1], 12)  # greedy [6,6] [6,1]: 12; L = max(6, 10) = 10, optimum 12
    assert solve(balanced, "greedy").status is Status.OPTIMAL
    plan = solve(lopsided, "greedy")
    assert (plan.secondary_objective, plan.secondary_bound) == (12, 10)
    assert plan.status is Status.FEASIBLE
    assert solve(unbalanced, "greedy").num_partitions == 2
