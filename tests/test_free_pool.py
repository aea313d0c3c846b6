"""Free device pools: the planner chooses which devices and in which order — the DP over
device mixes and the CP-SAT model against exhaustive search over plans and device orders."""

from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Device, Instance, Layer, OptionError, PlanError, Status, solve, validate_plan
from layerfit.model.instance import InstanceError
from layerfit.report.metrics import plan_metrics

from helpers import all_plans, check_solve_against_oracle
from layerfit.model.memory import device_capacity, partition_bytes


def free_oracle(instance):
    """Per count k: the smallest largest partition over every plan and every ordered choice of k devices."""
    per_k = {}
    names = [d.name for d in instance.devices]
    for plan in all_plans(instance.num_layers):
        k = len(plan)
        if k > len(names):
            continue
        loads = [partition_bytes(instance, p, j, k) for j, p in enumerate(plan)]
        for chosen in permutations(names, k):
            if all(load <= device_capacity(instance, name) for load, name in zip(loads, chosen)):
                per_k[k] = min(per_k.get(k, max(loads)), max(loads))
                break
    return per_k


@st.composite
def free_pools(draw):
    n = draw(st.integers(1, 6))
    layers = [Layer(f"l{i}", weight_bytes=draw(st.integers(1, 30)), activation_bytes=draw(st.integers(0, 6)))
              for i in range(n)]
    caps = draw(st.lists(st.sampled_from([20, 35, 50, 80]), min_size=1, max_size=4))
    schedule = draw(st.sampled_from([("none", 1), ("1f1b", 3), ("gpipe", 2)]))
    return Instance(name="f", capacity=draw(st.integers(40, 100)), layers=layers, device_order="free",
                    devices=tuple(Device(f"d{i}", c) for i, c in enumerate(caps)),
                    schedule=schedule[0], micro_batches=schedule[1])


@settings(max_examples=300)
@given(inst=free_pools())
def test_dp_matches_the_oracle(inst):
    check_solve_against_oracle(inst, free_oracle(inst), every_count=True)


@settings(max_examples=90, deadline=None)
@given(inst=free_pools(), warm=st.sampled_from(["dp", "greedy", "none"]),
       which=st.sampled_from([("cpsat", {"num_workers": 8}), ("mip", {"backend": "cbc"}), ("mip", {"backend": "highs"})]))
def test_models_match_the_oracle(inst, warm, which):
    per_k = free_oracle(inst)
    method, options = which
    plan = solve(inst, method, warm_start=warm, **options)
    validate_plan(inst, plan)
    if not per_k:
        assert plan.status in (Status.INFEASIBLE, Status.UNKNOWN)
        return
    fewest = min(per_k)
    assert plan.status is Status.OPTIMAL and (plan.objective, plan.secondary_objective) == (fewest, per_k[fewest])


def test_greedy_fills_the_pool_in_order_and_the_planner_chooses():
    layers = [Layer(f"l{i}", weight_bytes=30) for i in range(6)]
    pool = (Device("small", 40), Device("small2", 40), Device("big", 100), Device("big2", 100))
    inst = Instance(name="f", capacity=200, layers=layers, devices=pool, device_order="free")
    greedy, best = solve(inst, "greedy"), solve(inst)
    validate_plan(inst, greedy)
    validate_plan(inst, best)
    assert greedy.num_partitions == 4 and greedy.devices == ["small", "small2", "big", "big2"]
    assert best.num_partitions == 2 and sorted(best.devices) == ["big", "big2"]
    assert [row["device"] for row in best.metrics["partitions"]] == best.devices
    assert Instance.from_dict(inst.to_dict()) == inst
    import dataclasses

    swapped = dataclasses.replace(best, devices=["small", "big"], metrics=plan_metrics(inst, best.partitions, ["small", "big"]))
    with pytest.raises(PlanError, match=r"^partition 0 holds 90 B, over the capacity of 40 B by 50 B$"):
        validate_plan(inst, swapped)
    with pytest.raises(PlanError, match=r"^the plan puts two partitions on one device \(\['big', 'big'\]\)$"):
        validate_plan(inst, dataclasses.replace(best, devices=["big", "big"]))


def test_free_pool_errors():
    layers = [Layer("a", weight_bytes=1)]
    with pytest.raises(InstanceError, match=r"^device_order: 'free' needs a device pool \('devices'\)$"):
        Instance(name="f", capacity=10, layers=layers, device_order="free")
    with pytest.raises(InstanceError, match=r"^device_order: unknown order 'any' \(allowed: ordered, free\)$"):
        Instance(name="f", capacity=10, layers=layers, devices=(Device("d", 10),), device_order="any")
    inst = Instance(name="f", capacity=10, layers=layers, devices=(Device("d", 10),), device_order="free",
                    buffer_reuse=True)
    with pytest.raises(OptionError, match=r"^buffer_reuse: on a free device pool planned by methods 'dp' and 'cpsat' \(exact\), not 'mip'$"):
        solve(inst, "mip")
    many = Instance(name="f", capacity=10, layers=layers, device_order="free",
                    devices=tuple(Device(f"d{i}", 10 + i) for i in range(16)))
    with pytest.raises(OptionError, match=r"^devices: a free pool of 16 devices in 16 kinds has 65,536 mixes"):
        solve(many, "dp")
    assert solve(many).method == "cpsat"  # auto picks the model the pool allows


def test_cpsat_counts_a_reused_workspace_once_when_it_bounds_the_count():
    # Found by the fuzz: the sum of single layers (8 B of weights, 1 + 3 B of workspace) is 12 B
    # and made CP-SAT start at 2 devices; one stage holds 8 + max(1, 3) = 11 B, and fits.
    layers = [Layer(f"l{i}", params=1, buffer_bytes=b) for i, b in enumerate([0, 0, 1, 3])]
    inst = Instance(name="reuse", dtype="bf16", layers=layers, devices=(Device("g0", 11),), buffer_reuse=True,
                    device_order="free")
    for method in ("dp", "cpsat"):
        plan = solve(inst, method, num_workers=1 if method == "cpsat" else None)
        assert (plan.status.value, plan.objective, plan.secondary_objective) == ("optimal", 1, 11)
        assert "contradicted" not in (plan.backend_status or "")
