"""Explanations for infeasible instances read as answers, with the numbers that matter."""

import pytest

from layerfit import Status, load_instance, solve, validate_plan

from helpers import INSTANCES, make_instance


@pytest.mark.parametrize("method", ["greedy", "dp", "cpsat", "mip"])
def test_seed_worked_example_is_infeasible_with_an_explanation(method):
    inst = load_instance(INSTANCES / "seed-30b-h100-l2.json")
    plan = solve(inst, method)
    validate_plan(inst, plan)
    assert plan.status is Status.INFEASIBLE and plan.partitions == []
    text = plan.explanation
    assert "16 of 16 layers are larger than the capacity of 50 MB (50,000,000 B)" in text
    assert "weights 3.75 GB (1,875,000,000 params × 2 B, bf16)" in text
    assert "activation 10.49 GB" in text
    assert "over by 14.19 GB" in text
    assert "the seed's \"5.24GB\" counts these elements" in text
    assert "128 × 10000 × 4096 = 5,242,880,000 elements" in text
    assert "Remedy: the smallest capacity at which it fits with any number of partitions is 14.24 GB (14,235,760,000 B)." in text
    assert ("Remedy: no batch size fits: the weights of 16 layers exceed the capacity alone (layer0: 3.75 GB). "
            "A finer split of those layers would need at least 75 pieces each") in text


def test_activation_only_overflow_suggests_a_smaller_batch():
    inst = make_instance([50, 120], 100, activations=[0, 100])
    text = solve(inst).explanation
    assert "l1: 120 B = weights 20 B + activation 100 B + buffer 0 B; over by 20 B (1.2× the capacity)" in text
    assert "Remedy: a batch of at most 80.9 % of this one fits" in text  # 20 + ⌊100 s⌋ ≤ 100 while s < 0.81
    assert "Remedy: the smallest capacity at which it fits with any number of partitions is 120 B." in text


def test_too_few_partitions_names_the_fewest_and_the_capacity_needed():
    inst = make_instance([6, 6, 6, 6], 12)
    plan = solve(inst, objective="min_bottleneck", num_partitions=1)
    validate_plan(inst, plan)
    assert plan.status is Status.INFEASIBLE
    assert plan.explanation.splitlines()[0] == (
        "1 partition cannot hold the model under the capacity of 12 B: the fewest partitions that fit is 2. "
        "With 1, the smallest possible largest partition is 24 B, the capacity that 1 would need."
    )
    assert "Remedy: the smallest capacity at which it fits with 1 partition is 24 B." in plan.explanation
