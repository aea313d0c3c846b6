"""Remedies for infeasible instances: each one checked by planning the changed instance."""

import dataclasses
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Instance, Layer, Status, solve
from layerfit.report.remedies import fits, remedies

from test_dag import dag_oracle, dags
from layerfit.model.memory import partition_bytes


def capacity_remedy(text):
    # "is 14.24 GB (14,235,760,000 B)", or below a kilobyte "is 380 B", a reserve said after it
    match = re.search(r"the smallest capacity at which it fits with .*? is (?:[\d.]+ [kMGT]B \(([\d,]+) B\)|(\d+) B)", text)
    assert match, text
    return int((match[1] or match[2]).replace(",", ""))


@st.composite
def infeasible(draw):
    n = draw(st.integers(1, 6))
    layers = [Layer(f"l{i}", weight_bytes=draw(st.integers(1, 30)), activation_bytes=draw(st.integers(0, 20)),
                    buffer_bytes=draw(st.integers(0, 10))) for i in range(n)]
    schedule = draw(st.sampled_from([("none", 1), ("gpipe", 2), ("1f1b", 3)]))
    inst = Instance(name="r", capacity=1000, layers=layers, schedule=schedule[0], micro_batches=schedule[1])
    k = draw(st.one_of(st.none(), st.integers(1, n)))
    largest = max(partition_bytes(inst, [i], 0, 1) for i in range(n))
    capacity = draw(st.integers(1, max(1, largest + 10)))
    return dataclasses.replace(inst, capacity=capacity), k


@settings(max_examples=150)
@given(case=infeasible())
def test_the_smallest_capacity_is_exactly_the_threshold(case):
    inst, k = case
    if not fits(inst, k):
        assert_capacity_remedy_is_the_threshold(inst, k)


def assert_capacity_remedy_is_the_threshold(inst, k):
    """The infeasible plan's capacity remedy: planning at it succeeds, one byte below fails."""
    kwargs = {} if k is None else {"objective": "min_bottleneck", "num_partitions": k}
    plan = solve(inst, **kwargs)
    assert plan.status is Status.INFEASIBLE
    threshold = capacity_remedy(plan.explanation)
    assert solve(dataclasses.replace(inst, capacity=threshold), **kwargs).status is Status.OPTIMAL
    if threshold > 1:
        assert solve(dataclasses.replace(inst, capacity=threshold - 1), **kwargs).status is Status.INFEASIBLE
    return plan


def test_schedule_micro_batch_and_buffer_reuse_remedies():
    layers = [Layer(f"l{i}", weight_bytes=10, activation_bytes=10, buffer_bytes=15) for i in range(4)]
    inst = Instance(name="s", capacity=60, layers=layers, schedule="gpipe", micro_batches=4)
    text = solve(inst).explanation
    # alone a layer holds 10 + 4·10 + 15 = 65 > 60: micro-batches of ≤ 87.5 % fit (10 + 4·⌊10 s⌋ + 15 ≤ 60)
    assert "Remedy: a micro-batch of at most" in text
    lines = remedies(inst)
    assert any("buffer reuse (buffer_reuse: true, one workspace a partition) is not enough on its own" in line
               for line in lines)
    # One stage: weights 40 + 4 micro-batches × 40 + workspaces 60 = 260; one workspace: 215.
    one = dataclasses.replace(inst, capacity=215)
    assert solve(one, objective="min_bottleneck", num_partitions=1).status is Status.INFEASIBLE
    assert "Remedy: buffer reuse (buffer_reuse: true, one workspace a partition) makes it fit." in remedies(one, 1)


@st.composite
def infeasible_dags(draw):
    inst = draw(dags())
    k = draw(st.one_of(st.none(), st.integers(1, inst.num_layers)))
    return dataclasses.replace(inst, capacity=draw(st.integers(inst.constraints.reserve + 1, 40))), k


@settings(max_examples=100, deadline=None)
@given(case=infeasible_dags())
def test_a_dags_smallest_capacity_is_exactly_the_threshold(case):
    # On a DAG the threshold is the least largest partition, relayed tensors included, that
    # CP-SAT proves; checked here by planning at it and one byte below, and fits() against the
    # exhaustive oracle of every monotone assignment.
    inst, k = case
    feasible = dag_oracle(inst)
    assert fits(inst, k) == (bool(feasible) if k is None else k in feasible)
    if fits(inst, k):
        return
    anywhere = dag_oracle(dataclasses.replace(inst, capacity=10**9))
    if not (anywhere if k is None else k in anywhere):  # pins and layer counts no capacity can meet
        assert "smallest capacity" not in solve(inst, **({} if k is None else {
            "objective": "min_bottleneck", "num_partitions": k})).explanation
        return
    plan = assert_capacity_remedy_is_the_threshold(inst, k)
    assert "buffer reuse" not in plan.explanation  # a DAG takes neither option in this version


def test_rules_no_capacity_can_meet_are_said_so():
    from layerfit import Constraints

    from test_dag import unet

    rules = Constraints(max_layers_per_partition=1, pinned=(("head", 2),))  # six stages, yet the head third
    for inst in (unet(), Instance(name="c", capacity=200, layers=unet().layers)):
        text = solve(dataclasses.replace(inst, constraints=rules)).explanation
        assert text.endswith("Remedy: no capacity makes it fit with any number of partitions: the pins, layer counts "
                             "and cut rules cannot all be kept."), text
