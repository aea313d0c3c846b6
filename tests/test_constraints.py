"""Constraints users ask for: pinned layers, layers per partition, cut rules, a reserve —
honoured by the exact DP, checked by validate_plan, against an exhaustive oracle."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Device, Instance, InstanceError, Layer, OptionError, PlanError, Status, solve, validate_plan
from layerfit.model.instance import Constraints

from helpers import check_dp_against_stage_oracle


@st.composite
def constrained(draw):
    n = draw(st.integers(2, 7))
    sizes = draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
    names = [f"l{i}" for i in range(n)]
    cut_points = draw(st.lists(st.sampled_from(names[:-1]), max_size=3, unique=True))
    split = draw(st.integers(0, len(cut_points)))
    pins = draw(st.dictionaries(st.sampled_from(names), st.integers(-2, 3), max_size=2))
    limits = draw(st.sampled_from([(None, None), (3, None), (None, 2), (4, 2)]))
    reserve = draw(st.integers(0, 5))
    capacity = draw(st.integers(max(sizes) + reserve, sum(sizes) + reserve + 1))
    schedule = draw(st.sampled_from([("none", 1), ("1f1b", 3)]))
    layers = [Layer(name, weight_bytes=s - min(s, 2), activation_bytes=min(s, 2)) for name, s in zip(names, sizes)]
    pool = draw(st.one_of(st.none(), st.lists(st.integers(reserve + 1, capacity + 10), min_size=1, max_size=n)))
    devices = None if pool is None else tuple(Device(f"d{i}", c) for i, c in enumerate(pool))
    return Instance(
        name="c", capacity=capacity, layers=layers, schedule=schedule[0], micro_batches=schedule[1], devices=devices,
        constraints=Constraints(tuple(pins.items()), limits[0], limits[1], tuple(cut_points[:split]),
                                tuple(cut_points[split:]), reserve),
    )


@settings(max_examples=300)
@given(inst=constrained())
def test_dp_matches_the_oracle(inst):
    check_dp_against_stage_oracle(inst)


def raw(**constraints):
    return {"capacity": 100, "layers": [{"name": f"l{i}", "weight_bytes": 10} for i in range(5)], "constraints": constraints}


def test_the_embedding_first_and_the_head_last():
    inst = Instance.from_dict(raw(pinned={"l0": 0, "l4": -1}, max_layers_per_partition=2, reserve=80))
    plan = solve(inst)
    validate_plan(inst, plan)
    assert plan.partitions[0][0] == 0 and plan.partitions[-1][-1] == 4
    assert max(row["bytes"] for row in plan.metrics["partitions"]) <= 20
    assert Instance.from_dict(inst.to_dict()) == inst


@pytest.mark.parametrize(
    "constraints, message",
    [
        ({"pinned": {"l9": 0}}, r"^constraints\.pinned: unknown layer 'l9'$"),
        ({"pinned": {"l0": "GPU0"}}, r"^constraints\.pinned\.l0: pinning to a device \('GPU0'\) needs a device pool \('devices'\)$"),
        ({"max_layers_per_partition": 0}, r"^constraints\.max_layers_per_partition: must be a whole number ≥ 1, got 0$"),
        ({"max_layers_per_partition": 2, "min_layers_per_partition": 3},
         r"^constraints: min_layers_per_partition 3 exceeds max_layers_per_partition 2$"),
        ({"no_cut_after": ["l1"], "must_cut_after": ["l1"]}, r"^constraints: layer 'l1' is in both no_cut_after and must_cut_after$"),
        ({"must_cut_after": ["l4"]}, r"^constraints\.must_cut_after: 'l4' is the last layer; nothing follows it$"),
        ({"no_cut_after": ["lx"]}, r"^constraints\.no_cut_after: unknown layer 'lx'$"),
        ({"reserve": 100}, r"^constraints\.reserve: 100 B leaves nothing of the capacity \(100 B\)$"),
        ({"tied": [["l0", "l4"]]}, r"^constraints\.tied\[0\]: expected an object, got \['l0', 'l4'\]$"),
        ({"pin": {}}, r"^constraints: unknown key 'pin'"),
    ],
)
def test_bad_constraints(constraints, message):
    with pytest.raises(InstanceError, match=message):
        Instance.from_dict(raw(**constraints))


def test_contradictory_constraints_are_infeasible_with_a_reason():
    inst = Instance.from_dict(raw(pinned={"l0": 1, "l1": 0}))
    plan = solve(inst)
    assert plan.status is Status.INFEASIBLE and "constraints" in plan.explanation


def test_greedy_refuses_structural_constraints_the_models_honour_them_and_a_reserve():
    inst = Instance.from_dict(raw(max_layers_per_partition=2))
    with pytest.raises(OptionError, match=r"^constraints: pinned layers, layer counts, cut rules and tied groups kept "
                                          r"together are honoured by the exact methods \('dp', 'cpsat', 'mip'\), not by "
                                          r"the seed's greedy$"):
        solve(inst, "greedy")
    for method, options in (("cpsat", {}), ("mip", {"backend": "cbc"}), ("mip", {"backend": "highs"})):
        plan = solve(inst, method, **options)
        validate_plan(inst, plan)
        assert plan.num_partitions == 3 and max(len(p) for p in plan.partitions) <= 2
    reserved = Instance.from_dict(raw(reserve=70))
    for method in ("greedy", "dp", "cpsat", "mip"):
        plan = solve(reserved, method)
        validate_plan(reserved, plan)
        assert plan.num_partitions == 2  # 30 B usable: three layers a partition


def test_validate_plan_checks_the_constraints():
    inst = Instance.from_dict(raw(must_cut_after=["l1"]))
    plan = solve(inst)
    import dataclasses

    from layerfit.report.metrics import plan_metrics

    whole = [[0, 1, 2, 3, 4]]
    broken = dataclasses.replace(plan, partitions=whole, objective=1, bound=1, secondary_objective=50,
                                 secondary_bound=50, metrics=plan_metrics(inst, whole))
    with pytest.raises(PlanError, match=r"^the plan does not cut after 'l1', which must_cut_after asks for$"):
        validate_plan(inst, broken)


def test_an_ordered_pool_fills_devices_in_order():
    layers = [Layer(f"l{i}", weight_bytes=10) for i in range(8)]
    inst = Instance(name="p", capacity=100, layers=layers, devices=(Device("small", 20), Device("big", 60), Device("mid", 30)))
    for method in ("greedy", "dp"):
        plan = solve(inst, method)
        validate_plan(inst, plan)
        assert [r["device"] for r in plan.metrics["partitions"]] == ["small", "big"]
        assert [len(p) for p in plan.partitions] == [2, 6]
    too_small = Instance(name="p", capacity=100, layers=layers, devices=(Device("a", 30), Device("b", 30)))
    plan = solve(too_small)
    assert plan.status is Status.INFEASIBLE and "device pool" in plan.explanation
    assert solve(too_small, "greedy").status is Status.INFEASIBLE  # proven, whichever method asks
    for method, options in (("cpsat", {}), ("mip", {"backend": "cbc"}), ("mip", {"backend": "highs"})):
        plan = solve(inst, method, **options)  # the chain model with a capacity per position
        validate_plan(inst, plan)
        assert [len(p) for p in plan.partitions] == [2, 6] and plan.status.value == "optimal"
