"""Memory that depends on the pipeline schedule: exact against an exhaustive oracle, and
where the exact count beats greedy's."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Instance, InstanceError, Layer, Status, load_instance, solve, validate_plan

from helpers import INSTANCES, stage_oracle
from layerfit.model.memory import in_flight


@st.composite
def scheduled(draw):
    n = draw(st.integers(1, 7))
    weights = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    acts = draw(st.lists(st.integers(0, 10), min_size=n, max_size=n))
    schedule = draw(st.sampled_from(["gpipe", "1f1b"]))
    m = draw(st.integers(1, 6))
    layers = [Layer(f"l{i}", weight_bytes=w, activation_bytes=a) for i, (w, a) in enumerate(zip(weights, acts))]
    largest = max(w + a for w, a in zip(weights, acts))
    capacity = draw(st.integers(max(1, largest), max(1, largest) + sum(weights) + m * sum(acts)))
    return Instance(name="s", capacity=capacity, layers=layers, schedule=schedule, micro_batches=m)


def test_in_flight_micro_batches():
    inst = Instance(name="s", capacity=100, layers=[Layer("a", weight_bytes=1)], schedule="1f1b", micro_batches=4)
    assert [in_flight(inst, j, 6) for j in range(6)] == [4, 4, 4, 3, 2, 1]
    gpipe = Instance(name="s", capacity=100, layers=[Layer("a", weight_bytes=1)], schedule="gpipe", micro_batches=4)
    assert [in_flight(gpipe, j, 3) for j in range(3)] == [4, 4, 4]


@settings(max_examples=200)
@given(inst=scheduled(), data=st.data())
def test_exact_matches_the_oracle_and_greedy_never_wins(inst, data):
    result = stage_oracle(inst)
    per_k = result["bottleneck"]
    count = result["lexicographic"][0] if result["lexicographic"] else None
    plan = solve(inst)
    validate_plan(inst, plan)
    if count is None:
        assert plan.status is Status.INFEASIBLE
    else:
        assert plan.status is Status.OPTIMAL
        assert (plan.objective, plan.secondary_objective) == (count, per_k[count])
        greedy = solve(inst, "greedy")
        validate_plan(inst, greedy)
        assert greedy.status is Status.UNKNOWN or greedy.num_partitions >= count
    k = data.draw(st.integers(1, inst.num_layers))
    plan = solve(inst, objective="min_bottleneck", num_partitions=k)
    validate_plan(inst, plan)
    if k in per_k:
        assert plan.status is Status.OPTIMAL and plan.objective == per_k[k]
    else:
        assert plan.status is Status.INFEASIBLE


def test_1f1b_needs_fewer_stages_than_greedy_plans():
    layers = [Layer(f"l{i}", weight_bytes=10, activation_bytes=5) for i in range(8)]
    inst = Instance(name="s", capacity=60, layers=layers, schedule="1f1b", micro_batches=4)
    greedy, best = solve(inst, "greedy"), solve(inst)
    assert greedy.num_partitions == 4 and best.num_partitions == 3
    assert [r["micro_batches_in_flight"] for r in best.metrics["partitions"]] == [3, 2, 1]
    assert greedy.status is Status.FEASIBLE and greedy.bound == 3


@pytest.mark.parametrize("name, greedy_count, best_count",
                         [("seed-30b-1f1b-b200-hbm", 2, 1), ("llama-2-7b-1f1b-train-h100-hbm", 16, 3)])
def test_bundled_schedule_instances(name, greedy_count, best_count):
    inst = load_instance(INSTANCES / f"{name}.json")
    greedy, best = solve(inst, "greedy"), solve(inst)
    validate_plan(inst, greedy)
    validate_plan(inst, best)
    assert best.num_partitions == best_count
    assert (greedy.num_partitions if greedy.status.has_plan else None) == greedy_count


def test_schedule_options_and_errors():
    layers = [Layer("a", weight_bytes=1)]
    with pytest.raises(InstanceError, match=r"^schedule: unknown schedule 'zb' \(allowed: none, gpipe, 1f1b\)$"):
        Instance(name="s", capacity=10, layers=layers, schedule="zb")
    with pytest.raises(InstanceError, match=r"^micro_batches: must be a whole number ≥ 1, got 0$"):
        Instance(name="s", capacity=10, layers=layers, schedule="gpipe", micro_batches=0)
    with pytest.raises(InstanceError, match=r"^micro_batches: 4 needs a schedule \(gpipe or 1f1b\)$"):
        Instance(name="s", capacity=10, layers=layers, micro_batches=4)
    inst = Instance(name="s", capacity=10, layers=layers, schedule="1f1b", micro_batches=2)
    assert Instance.from_dict(inst.to_dict()) == inst
    assert solve(inst, "cpsat").status.value == "optimal"  # the chain model, weights by stage position
