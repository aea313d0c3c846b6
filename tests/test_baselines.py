"""Each baseline behaves as its published description says; exact plans never lose to them."""


import pytest
from hypothesis import given
from hypothesis import strategies as st

from layerfit import Status, load_instance, solve
from layerfit.interop.baselines import (
    accelerate_balanced,
    accelerate_sequential,
    deepspeed_parameters,
    even_split,
    vllm_fewer_first_last,
    torchgpipe_balance,
)

from helpers import INSTANCES, all_plans
from layerfit.model.memory import plan_loads


def counts(parts):
    return [len(p) for p in parts]


@pytest.mark.parametrize("n, k, expected", [(8, 4, [2, 2, 2, 2]), (10, 4, [2, 3, 3, 2]), (11, 4, [3, 3, 3, 2]),
                                            (32, 3, [11, 11, 10]), (20, 4, [5, 5, 5, 5])])
def test_even_split_uses_vllms_remainder_rule(n, k, expected):
    assert counts(even_split(n, k)) == expected


@given(st.lists(st.integers(1, 50), min_size=2, max_size=8), st.data())
def test_deepspeed_minimises_the_spread_of_parameter_counts(params, data):
    k = data.draw(st.integers(1, len(params)))
    parts = deepspeed_parameters(params, k)
    assert [i for p in parts for i in p] == list(range(len(params))) and len(parts) == k
    loads = [sum(params[i] for i in p) for p in parts]
    best = min(max(l) - min(l) for l in ([sum(params[i] for i in p) for p in plan]
                                          for plan in all_plans(len(params)) if len(plan) == k))
    assert max(loads) - min(loads) == best


def test_deepspeed_with_fewer_layers_than_stages():
    assert deepspeed_parameters([5, 5], 3) == [[0], [1], []]


def test_accelerate_sequential_fills_in_order_and_reserves_the_largest_layer_on_device_0():
    assert accelerate_sequential([4, 4, 4, 4], [10, 10, 10]) == ([[0], [1, 2], [3]], 0)
    parts, left = accelerate_sequential([4, 4, 4, 4, 4, 4], [10, 10])
    assert parts == [[0], [1, 2]] and left == 3  # three layers fit on no device


def test_accelerate_balanced_caps_all_but_the_last_device():
    sizes = [10] * 8
    # cap = 80 // 4 + 1.25 × 10 = 32: device 0 keeps 10 for the largest layer, so 2 layers; then 3, 3, and the rest.
    parts, left = accelerate_balanced(sizes, 100, 4)
    assert counts(parts) == [2, 3, 3, 0] and left == 0


def test_torchgpipe_matches_its_documented_example():
    assert [[i + 1 for i in p] for p in torchgpipe_balance([1, 2, 3, 4, 5, 6], 2)] == [[1, 2, 3, 4], [5, 6]]


@given(st.lists(st.integers(0, 100), min_size=2, max_size=12), st.data())
def test_torchgpipe_stops_when_the_heaviest_block_is_within_one_element_of_the_lightest(sizes, data):
    k = data.draw(st.integers(1, len(sizes)))
    parts = torchgpipe_balance(sizes, k)
    assert [i for p in parts for i in p] == list(range(len(sizes))) and len(parts) == k
    low, span = min(sizes), max(sizes) - min(sizes)
    blocks = [sum(0 if span == 0 else (sizes[i] - low) / span for i in p) for p in parts]
    assert max(blocks) <= min(blocks) + 1 + 1e-9


FILES = sorted(INSTANCES.glob("*.json"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_exact_plans_are_never_worse_than_any_baseline(path):
    inst = load_instance(path)
    plan = solve(inst)
    if plan.status is not Status.OPTIMAL or inst.constraints.structural or inst.devices is not None:
        return  # the baselines know no pins, cut rules or device pools: their plans answer another question
    sizes, capacity = inst.sizes, inst.capacity
    for k in (plan.num_partitions, plan.num_partitions + 2):
        if k > inst.num_layers:
            continue
        best = solve(inst, objective="min_bottleneck", num_partitions=k).objective
        candidates = [even_split(len(sizes), k), torchgpipe_balance(sizes, k)]
        if inst.num_layers <= 1000:
            candidates.append(deepspeed_parameters([layer.params or sizes[i] for i, layer in enumerate(inst.layers)], k))
        for parts, left in (accelerate_sequential(sizes, [capacity] * k), accelerate_balanced(sizes, capacity, k)):
            if left == 0:
                candidates.append([p for p in parts if p])
        for parts in candidates:
            used = [p for p in parts if p]  # judged as run: each stage at its place in the schedule
            largest = max(plan_loads(inst, used))  # with a DAG's relayed tensors
            assert largest >= best, (path.stem, k, parts)


@pytest.mark.parametrize(("n", "k", "expected"), [
    (80, 8, [7, 11, 11, 11, 11, 11, 11, 7]),  # Llama-3-70B on 8 ranks, vLLM's pull request #6920
    (80, 4, [19, 21, 21, 19]),
    (61, 4, [14, 16, 16, 15]),  # the remainder from the last rank backwards
    (126, 16, [0, 8, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1]),  # the rule leaves rank 0 no layer
    (81, 2, [40, 41]),  # two ranks: even, the remainder after the first
])
def test_vllm_fewer_layers_on_the_first_and_last_rank(n, k, expected):
    assert counts(vllm_fewer_first_last(n, k)) == expected
