"""Time as an objective: the slowest stage's time over k stages, every stage within its
memory — exact by the stage probe, against exhaustive search."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Device, Instance, Layer, OptionError, Status, solve, validate_plan
from layerfit.model.instance import Constraints

from helpers import all_plans, satisfies
from layerfit.model.memory import capacity_at, partition_bytes


@st.composite
def timed(draw):
    n = draw(st.integers(1, 7))
    sizes = draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 50).map(lambda t: t * 1e-6), min_size=n, max_size=n))
    layers = [Layer(f"l{i}", weight_bytes=s, activation_bytes=1, time=t) for i, (s, t) in enumerate(zip(sizes, times))]
    pool = draw(st.one_of(st.none(), st.lists(st.tuples(st.integers(15, 60), st.sampled_from([0.5, 1.0, 2.0, 3.0])),
                                              min_size=1, max_size=n)))
    schedule = draw(st.sampled_from([("none", 1), ("1f1b", 2)]))
    pins = draw(st.sampled_from([(), (("l0", 0),)]))
    return Instance(name="t", capacity=draw(st.integers(max(sizes) + 2, sum(sizes) + 4)), layers=layers,
                    schedule=schedule[0], micro_batches=schedule[1], constraints=Constraints(pinned=pins),
                    devices=None if pool is None else tuple(Device(f"d{i}", c, s) for i, (c, s) in enumerate(pool)))


def time_oracle(instance, k):
    best = None
    for plan in all_plans(instance.num_layers):
        if len(plan) != k or k > instance.max_partitions:
            continue
        fits = all(partition_bytes(instance, p, j, k) <= capacity_at(instance, j) for j, p in enumerate(plan))
        if fits and satisfies(instance, plan):
            value = max(instance.stage_time(p, j) for j, p in enumerate(plan))
            best = value if best is None else min(best, value)
    return best


@settings(max_examples=300)
@given(inst=timed(), k=st.integers(1, 4))
def test_min_stage_time_matches_the_oracle(inst, k):
    if k > inst.num_layers:
        return
    plan = solve(inst, objective="min_stage_time", num_partitions=k)
    validate_plan(inst, plan)
    expected = time_oracle(inst, k)
    if expected is None:
        assert plan.status is Status.INFEASIBLE and plan.explanation
    else:
        assert plan.status is Status.OPTIMAL and plan.objective == expected == plan.bound


def test_time_and_memory_disagree_and_the_pipeline_estimate():
    # Heavy compute in small layers: balancing bytes leaves one stage slow, balancing time fixes it.
    layers = [Layer("a", weight_bytes=10, time=0.004), Layer("b", weight_bytes=10, time=0.004),
              Layer("c", weight_bytes=40, time=0.001), Layer("d", weight_bytes=40, time=0.001)]
    inst = Instance(name="t", capacity=100, layers=layers, schedule="gpipe", micro_batches=4)
    by_bytes = solve(inst, objective="min_bottleneck", num_partitions=2)
    by_time = solve(inst, objective="min_stage_time", num_partitions=2)
    assert by_bytes.partitions == [[0, 1, 2], [3]] and by_bytes.metrics["max_time"] == pytest.approx(0.009)
    assert by_time.partitions == [[0], [1, 2, 3]] and by_time.objective == pytest.approx(0.006)
    pipe = by_time.metrics["pipeline"]
    assert pipe["bubble_fraction"] == pytest.approx(1 / 5) and pipe["batch_time_s"] == pytest.approx(5 * 0.006)
    fast = Instance(name="t", capacity=100, layers=layers, devices=(Device("slow", 100), Device("fast", 100, speed=3.0)))
    plan = solve(fast, objective="min_stage_time", num_partitions=2)
    validate_plan(fast, plan)
    assert plan.partitions == [[0], [1, 2, 3]] and plan.objective == pytest.approx(0.004)  # 6 ms at 3× speed: 2 ms


def test_time_objective_errors():
    inst = Instance(name="t", capacity=100, layers=[Layer("a", weight_bytes=1, time=1.0), Layer("b", weight_bytes=1)])
    with pytest.raises(OptionError, match=r"^objective: 'min_stage_time' needs a time \(or flops\) on every layer; layer 'b' has none$"):
        solve(inst, objective="min_stage_time", num_partitions=1)
    with pytest.raises(OptionError, match=r"^num_partitions: required with objective 'min_stage_time'$"):
        solve(inst, objective="min_stage_time")
    with pytest.raises(OptionError, match=r"^objective: 'min_stage_time' is planned by method 'dp' \(exact\) in this version, not 'cpsat'$"):
        solve(inst, "cpsat", objective="min_stage_time", num_partitions=1)


def test_times_from_flops_and_a_throughput():
    raw = {"capacity": 100, "flops_per_s": 1e12, "layers": [
        {"name": "a", "weight_bytes": 10, "flops": 4e9}, {"name": "b", "weight_bytes": 10, "time": 0.001},
        {"name": "c", "weight_bytes": 10, "flops": 2e9}]}
    inst = Instance.from_dict(raw)
    assert [inst.layer_seconds(i) for i in range(3)] == [0.004, 0.001, 0.002]
    plan = solve(inst, objective="min_stage_time", num_partitions=2)
    validate_plan(inst, plan)
    assert plan.partitions == [[0], [1, 2]] and plan.objective == pytest.approx(0.004)
    assert Instance.from_dict(inst.to_dict()) == inst
    from layerfit import InstanceError

    with pytest.raises(InstanceError, match=r"^flops_per_s: layer 'a' gives flops; the instance needs a throughput to time it$"):
        Instance.from_dict({k: v for k, v in raw.items() if k != "flops_per_s"})
    raw["layers"][0]["time"] = 1.0
    with pytest.raises(InstanceError, match=r"^layers\[0\]\.flops: give a layer time or its flops, not both$"):
        Instance.from_dict(raw)
