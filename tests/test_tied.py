"""Tied weights (GPT-2's lm_head and token embedding): held once per partition, either kept
together or replicated on every partition that holds a member — against the exhaustive oracle."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Device, Instance, InstanceError, Layer, OptionError, PlanError, Status, solve, validate_plan
from layerfit.model.instance import Constraints, TiedGroup, Training
from layerfit.report.metrics import plan_metrics

from helpers import check_dp_against_stage_oracle, stage_oracle
from layerfit.model.memory import partition_bytes


@st.composite
def tied_instances(draw):
    n = draw(st.integers(2, 7))
    params = draw(st.lists(st.integers(1, 12), min_size=n, max_size=n))
    names = [f"l{i}" for i in range(n)]
    members = draw(st.lists(st.sampled_from(names), min_size=2, max_size=3, unique=True))
    shared = draw(st.integers(1, min(params[names.index(m)] for m in members)))
    mode = draw(st.sampled_from(["replicate", "together"]))
    training = draw(st.sampled_from([None, Training("sgd")]))
    layers = [Layer(name, params=p, activation_bytes=draw(st.integers(0, 3))) for name, p in zip(names, params)]
    pool = draw(st.one_of(st.none(), st.lists(st.integers(10, 120), min_size=1, max_size=n)))
    schedule = draw(st.sampled_from([("none", 1), ("gpipe", 2), ("1f1b", 3)]))
    plain = Instance(name="t", capacity=10**6, layers=layers, dtype="fp32", training=training)
    largest = max(plain.sizes)
    capacity = draw(st.integers(largest, 2 * sum(plain.sizes)))
    return Instance(name="t", capacity=capacity, layers=layers, dtype="fp32", training=training,
                    schedule=schedule[0], micro_batches=schedule[1],
                    devices=None if pool is None else tuple(Device(f"d{i}", c) for i, c in enumerate(pool)),
                    constraints=Constraints(tied=(TiedGroup(tuple(members), shared, mode),)))


@settings(max_examples=300)
@given(inst=tied_instances())
def test_dp_matches_the_oracle(inst):
    check_dp_against_stage_oracle(inst)


@settings(max_examples=200)
@given(inst=tied_instances())
def test_greedy_plans_are_valid_and_never_better_than_exact(inst):
    if inst.constraints.structural:
        with pytest.raises(OptionError, match=r"^constraints: .*tied groups kept together are honoured by the exact methods"):
            solve(inst, "greedy")
        return
    plan = solve(inst, "greedy")
    validate_plan(inst, plan)
    best = stage_oracle(inst)["lexicographic"]
    if plan.status.has_plan:
        assert best is not None and plan.objective >= best[0]


def gpt2_like(mode="replicate", **kwargs):
    """An embedding (wte + wpe) and a head sharing wte, with blocks between."""
    layers = [{"name": "embed", "params": 1000 + 100}, *({"name": f"h{i}", "params": 400} for i in range(4)),
              {"name": "lm_head", "params": 1000}]
    return {"capacity": kwargs.pop("capacity", 6000), "dtype": "fp32", "layers": layers,
            "constraints": {"tied": [{"layers": ["embed", "lm_head"], "params": 1000, "mode": mode}]}, **kwargs}


def test_the_shared_weight_is_counted_once_per_partition():
    inst = Instance.from_dict(gpt2_like())
    assert inst.total_params == 1100 + 4 * 400  # the head's 1000 are the embedding's
    whole = list(range(6))
    assert partition_bytes(inst, whole, 0, 1) == 4 * (1100 + 1600)
    split = [[0, 1, 2], [3, 4, 5]]
    assert [partition_bytes(inst, p, j, 2) for j, p in enumerate(split)] == [4 * 1900, 4 * 1800]
    assert plan_metrics(inst, [whole])["partitions"][0]["weight_bytes"] == 4 * 2700


def test_replicate_lets_the_head_leave_the_embedding():
    inst = Instance.from_dict(gpt2_like(capacity=8000))  # all 10,800 B do not fit one partition
    for method in ("greedy", "dp"):
        plan = solve(inst, method)
        validate_plan(inst, plan)
        assert plan.num_partitions == 2
    assert solve(inst).secondary_objective == 4 * 1900


def test_together_keeps_the_span_in_one_partition():
    together = Instance.from_dict(gpt2_like("together", capacity=10800))
    plan = solve(together)
    validate_plan(together, plan)
    assert plan.partitions == [list(range(6))] and plan.secondary_objective == 10800
    tight = Instance.from_dict(gpt2_like("together", capacity=10799))
    plan = solve(tight)
    assert plan.status is Status.INFEASIBLE and "constraints" in plan.explanation
    split = [[0, 1, 2], [3, 4, 5]]
    replicated = solve(Instance.from_dict(gpt2_like(capacity=10800)), num_partitions=2, objective="min_bottleneck")
    broken = dataclasses.replace(replicated, partitions=split, metrics=plan_metrics(together, split))
    with pytest.raises(PlanError, match=r"^tied group \['embed', 'lm_head'\] is kept together, the plan splits it over partitions \[0, 1\]$"):
        validate_plan(together, broken)


def test_training_state_of_a_tied_weight_is_shared_too():
    inst = Instance.from_dict(gpt2_like(training={"optimizer": "adam", "master_weights": False}))
    # fp32 weights: 4 + gradient 4 + two moments 8 = 16 B a parameter, the shared 1000 once
    assert partition_bytes(inst, list(range(6)), 0, 1) == 16 * 2700
    row = plan_metrics(inst, [list(range(6))])["partitions"][0]
    assert (row["weight_bytes"], row["training_state_bytes"]) == (4 * 2700, 12 * 2700)


def test_json_round_trip_and_the_models():
    inst = Instance.from_dict(gpt2_like("together"))
    assert Instance.from_dict(inst.to_dict()) == inst
    with pytest.raises(OptionError, match=r"^constraints: pinned layers, layer counts, cut rules and tied groups kept together"):
        solve(inst, "greedy")
    assert solve(inst, "cpsat").status is solve(inst).status is Status.INFEASIBLE  # 10,800 B in one partition
    roomy = Instance.from_dict(gpt2_like("together", capacity=10800))
    assert solve(roomy, "cpsat").partitions == solve(roomy).partitions == [list(range(6))]
    replicate = Instance.from_dict(gpt2_like(capacity=8000))
    assert "mode" not in replicate.to_dict()["constraints"]["tied"][0]
    best = solve(replicate)
    for method, options in (("cpsat", {}), ("mip", {"backend": "cbc"}), ("mip", {"backend": "highs"})):
        plan = solve(replicate, method, **options)  # the shared weight once a partition: H ≥ x for its members
        validate_plan(replicate, plan)
        assert (plan.objective, plan.secondary_objective) == (best.objective, best.secondary_objective)


def test_pinned_to_a_device_name_of_an_ordered_pool():
    raw = {"capacity": 100, "layers": [{"name": f"l{i}", "weight_bytes": 10} for i in range(4)],
           "devices": [{"name": "gpu0", "capacity": 100}, {"name": "gpu1", "capacity": 100}],
           "constraints": {"pinned": {"l3": "gpu1"}}}
    inst = Instance.from_dict(raw)
    assert inst.constraints.pinned == (("l3", 1),)
    plan = solve(inst)
    validate_plan(inst, plan)
    assert plan.num_partitions == 2 and 3 in plan.partitions[1]
    raw["constraints"]["pinned"] = {"l3": "gpu7"}
    with pytest.raises(InstanceError, match=r"^constraints\.pinned\.l3: unknown device 'gpu7' \(devices: gpu0, gpu1\)$"):
        Instance.from_dict(raw)


def _tied(**group):
    raw = gpt2_like()
    raw["constraints"]["tied"] = [group]
    return raw


@pytest.mark.parametrize(
    "raw, message",
    [
        (_tied(layers=["embed"], params=10), r"^constraints\.tied\[0\]\.layers: a tied group needs at least two distinct layers, got \['embed'\]$"),
        (_tied(layers=["embed", "embed"], params=10), r"^constraints\.tied\[0\]\.layers: a tied group needs at least two distinct layers"),
        (_tied(layers=["embed", "head"], params=10), r"^constraints\.tied\[0\]\.layers: unknown layer 'head'$"),
        (_tied(layers=["embed", "lm_head"]), r"^constraints\.tied\[0\]\.params: missing \(the number of shared parameters\)$"),
        (_tied(layers=["embed", "lm_head"], params=0), r"^constraints\.tied\[0\]\.params: must be at least 1, got 0$"),
        (_tied(layers=["embed", "h0"], params=500),
         r"^constraints\.tied\[0\]\.params: 500 shared parameters, but layer 'h0' has only 400 \(each member's params include the shared weight\)$"),
        (_tied(layers=["embed", "lm_head"], params=10, mode="copy"), r"^constraints\.tied\[0\]\.mode: unknown mode 'copy' \(allowed: replicate, together\)$"),
        (_tied(layers=["embed", "lm_head"], params=10, share=1), r"^constraints\.tied\[0\]: unknown key 'share'"),
    ],
)
def test_bad_tied_groups(raw, message):
    with pytest.raises(InstanceError, match=message):
        Instance.from_dict(raw)


def test_a_cut_rule_that_splits_a_group_kept_together():
    raw = gpt2_like("together")
    raw["constraints"]["must_cut_after"] = ["h1"]
    with pytest.raises(InstanceError, match=r"^constraints: must_cut_after 'h1' splits constraints\.tied\[0\], which is kept together$"):
        Instance.from_dict(raw)
    raw["constraints"] = {"tied": [{"layers": ["embed", "h0"], "params": 10}, {"layers": ["h0", "h1"], "params": 10}]}
    with pytest.raises(InstanceError, match=r"^constraints\.tied\[1\]\.layers: layer 'h0' is already in constraints\.tied\[0\]$"):
        Instance.from_dict(raw)
