"""Objectives over device pools: the smallest largest utilization (ordered and free pools)
and the slowest stage on a free pool — against exhaustive search over plans and device orders."""

from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Device, Instance, Layer, OptionError, Status, solve, validate_plan

from helpers import all_plans
from layerfit.model.memory import device_capacity, plan_loads, utilization_ppb


@st.composite
def pools(draw, free: bool):
    n = draw(st.integers(1, 6))
    layers = [Layer(f"l{i}", weight_bytes=draw(st.integers(1, 25)), activation_bytes=draw(st.integers(0, 5)),
                    time=draw(st.integers(0, 40)) * 1e-6) for i in range(n)]
    pool = draw(st.lists(st.tuples(st.sampled_from([20, 35, 50, 80]), st.sampled_from([0.5, 1.0, 2.0])),
                         min_size=1, max_size=4 if free else n))
    schedule = draw(st.sampled_from([("none", 1), ("1f1b", 2)]))
    return Instance(name="u", capacity=draw(st.integers(40, 100)), layers=layers,
                    device_order="free" if free else "ordered", schedule=schedule[0], micro_batches=schedule[1],
                    devices=tuple(Device(f"d{i}", c, s) for i, (c, s) in enumerate(pool)))


def oracle(instance, k, objective):
    """The optimum over every plan with k partitions and every choice of devices."""
    names = [d.name for d in instance.devices]
    orders = permutations(names, k) if instance.free_pool else [tuple(names[:k])]
    orders = list(orders)
    best = None
    for plan in all_plans(instance.num_layers):
        if len(plan) != k or k > len(names):
            continue
        loads = plan_loads(instance, plan)
        for chosen in orders:
            caps = [device_capacity(instance, name) for name in chosen]
            if any(load > cap for load, cap in zip(loads, caps)):
                continue
            if objective == "min_utilization":
                value = max(utilization_ppb(load, cap) for load, cap in zip(loads, caps))
            else:
                value = max(instance.stage_picoseconds(p, j, name if instance.free_pool else None)
                            for j, (p, name) in enumerate(zip(plan, chosen)))
            best = value if best is None else min(best, value)
    return best


@settings(max_examples=200)
@given(inst=st.one_of(pools(free=False), pools(free=True)), k=st.integers(1, 4),
       objective=st.sampled_from(["min_utilization", "min_stage_time"]))
def test_pool_objectives_match_the_oracle(inst, k, objective):
    if k > inst.num_layers:
        return
    plan = solve(inst, objective=objective, num_partitions=k)
    validate_plan(inst, plan)
    expected = oracle(inst, k, objective)
    if expected is None:
        assert plan.status is Status.INFEASIBLE
        return
    scale = 1e-9 if objective == "min_utilization" else 1e-12
    assert plan.status is Status.OPTIMAL and plan.objective == expected * scale


def test_utilization_balances_mixed_devices_by_share():
    layers = [Layer(f"l{i}", weight_bytes=10) for i in range(10)]
    inst = Instance(name="u", capacity=100, layers=layers, devices=(Device("small", 40), Device("big", 100)))
    by_bytes = solve(inst, objective="min_bottleneck", num_partitions=2)
    by_share = solve(inst, objective="min_utilization", num_partitions=2)
    assert [len(p) for p in by_bytes.partitions] == [4, 6]  # 40 and 60 B: the small device full
    assert [len(p) for p in by_share.partitions] == [3, 7] and by_share.objective == pytest.approx(0.75)
    with pytest.raises(OptionError, match=r"^objective: 'min_utilization' is planned by method 'dp' \(exact\)"):
        solve(inst, "cpsat", objective="min_utilization", num_partitions=2)
