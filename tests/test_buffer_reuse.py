"""buffer_reuse: a partition's workspace is its largest layer's, not the sum (a named option)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Device, Instance, InstanceError, Layer, OptionError, solve, validate_plan

from helpers import check_dp_against_stage_oracle
from layerfit.model.memory import partition_bytes


@st.composite
def reusing(draw):
    n = draw(st.integers(1, 7))
    layers = [Layer(f"l{i}", weight_bytes=draw(st.integers(0, 15)), activation_bytes=draw(st.integers(0, 4)),
                    buffer_bytes=draw(st.integers(0, 12))) for i in range(n)]
    schedule = draw(st.sampled_from([("none", 1), ("gpipe", 2), ("1f1b", 3)]))
    probe = Instance(name="r", capacity=10**6, layers=layers, schedule=schedule[0], micro_batches=schedule[1], buffer_reuse=True)
    largest = max(partition_bytes(probe, [i], 0, 1) for i in range(n))
    capacity = draw(st.integers(max(1, largest), max(1, largest) + sum(probe.sizes) + 1))
    return Instance(name="r", capacity=capacity, layers=layers, schedule=schedule[0], micro_batches=schedule[1],
                    buffer_reuse=True)


@settings(max_examples=300)
@given(inst=reusing())
def test_exact_with_buffer_reuse_matches_the_oracle(inst):
    expected = check_dp_against_stage_oracle(inst)
    if expected is None:
        return
    greedy = solve(inst, "greedy")
    validate_plan(inst, greedy)
    if inst.schedule == "none":  # a monotone cost: greedy still stays ahead, its count is optimal
        assert greedy.num_partitions == expected[0]


def test_reuse_counts_the_largest_workspace():
    layers = [Layer(f"l{i}", weight_bytes=10, buffer_bytes=8) for i in range(6)]
    plain = Instance(name="b", capacity=50, layers=layers)
    reused = Instance(name="b", capacity=50, layers=layers, buffer_reuse=True)
    assert partition_bytes(plain, [0, 1, 2], 0, 1) == 54 and partition_bytes(reused, [0, 1, 2], 0, 1) == 38
    plan = solve(reused)
    assert plan.num_partitions == 2 and solve(plain).num_partitions == 3
    assert plan.metrics["partitions"][0]["buffer_bytes"] == 8
    assert plan.metrics["memory_model"] == "seed+buffer_reuse"
    assert Instance.from_dict(reused.to_dict()) == reused


def test_buffer_reuse_errors():
    with pytest.raises(InstanceError, match=r"^buffer_reuse: expected true or false, got 'yes'$"):
        Instance.from_dict({"capacity": 10, "buffer_reuse": "yes", "layers": [{"name": "a"}]})
    inst = Instance(name="b", capacity=50, layers=[Layer("a", weight_bytes=1, buffer_bytes=5)], buffer_reuse=True)
    assert solve(inst, "mip").status.value == "optimal"  # B_p ≥ buffer · x in the model
    free = Instance(name="b", capacity=50, layers=[Layer("a", weight_bytes=1)], buffer_reuse=True,
                    device_order="free", devices=(Device("d", 50),))
    with pytest.raises(OptionError, match=r"^buffer_reuse: on a free device pool planned by methods 'dp' and 'cpsat'"):
        solve(free, "mip")
