"""DAG instances: ordered convex partitions, relayed tensors counted — CP-SAT against
exhaustive search over every monotone assignment; greedy over a topological order."""

import dataclasses
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Constraints, Instance, InstanceError, Layer, OptionError, PlanError, Status, solve, validate_plan
from layerfit.methods.dag import greedy_dag

from helpers import check_solve_against_oracle
from layerfit.model.graph import dag_cuts, topological_order
from layerfit.model.memory import plan_loads, usable_capacity


def dag_oracle(instance):
    """Per k: the smallest largest partition over every assignment with no edge backwards."""
    n = instance.num_layers
    index = {layer.name: i for i, layer in enumerate(instance.layers)}
    edges = [(index[a], index[b]) for a, b in instance.edges]
    c = instance.constraints
    pins = [(index[name], pin) for name, pin in c.pinned]
    per_k = {}
    for k in range(1, n + 1):
        for x in product(range(k), repeat=n):
            if len(set(x)) != k or any(x[a] > x[b] for a, b in edges):
                continue
            if any(x[v] != (pin if pin >= 0 else k + pin) for v, pin in pins):
                continue
            parts = [[v for v in range(n) if x[v] == j] for j in range(k)]
            if any(len(p) > (c.max_layers_per_partition or n) or len(p) < (c.min_layers_per_partition or 1)
                   for p in parts):
                continue
            largest = max(plan_loads(instance, parts))
            if largest <= usable_capacity(instance):
                per_k[k] = min(per_k.get(k, largest), largest)
    return per_k


@st.composite
def dags(draw):
    n = draw(st.integers(1, 6))
    order = draw(st.permutations(range(n)))  # listed order need not be topological
    layers = [Layer(f"l{i}", weight_bytes=draw(st.integers(1, 20)), activation_bytes=draw(st.integers(0, 8)))
              for i in range(n)]
    edges = [(f"l{order[a]}", f"l{order[b]}") for a in range(n) for b in range(a + 1, n)
             if draw(st.booleans()) or b == a + 1 and draw(st.booleans())]
    capacity = draw(st.integers(20, 70))
    schedule, m = draw(st.sampled_from([("none", 1), ("none", 1), ("gpipe", 2), ("1f1b", 3)]))
    rules = Constraints()
    if draw(st.integers(0, 3)) == 0:  # pins, layer counts and a reserve, sometimes
        pinned = tuple((f"l{i}", draw(st.integers(-2, 2))) for i in draw(st.sets(st.integers(0, n - 1), max_size=2)))
        most = draw(st.one_of(st.none(), st.integers(2, 4)))
        rules = Constraints(pinned=pinned, max_layers_per_partition=most,
                            min_layers_per_partition=draw(st.one_of(st.none(), st.integers(1, 2))),
                            reserve=draw(st.integers(0, 5)))
    return Instance(name="g", capacity=capacity, layers=layers, edges=tuple(edges), schedule=schedule, micro_batches=m,
                    constraints=rules)


@settings(max_examples=150, deadline=None)
@given(inst=dags())
def test_cpsat_matches_the_oracle(inst):
    check_solve_against_oracle(inst, dag_oracle(inst), every_count=False)


@settings(max_examples=40, deadline=None)
@given(inst=dags(), backend=st.sampled_from(["cbc", "highs"]))
def test_mip_matches_the_oracle(inst, backend):
    per_k = dag_oracle(inst)
    plan = solve(inst, "mip", backend=backend)
    validate_plan(inst, plan)
    if not per_k:
        assert plan.status is Status.INFEASIBLE
        return
    fewest = min(per_k)
    assert plan.status is Status.OPTIMAL and (plan.objective, plan.secondary_objective) == (fewest, per_k[fewest])


@settings(max_examples=150, deadline=None)
@given(inst=dags())
def test_greedy_over_a_topological_order_is_valid(inst):
    if inst.constraints.structural:  # pins and layer counts: greedy plans for none of them
        with pytest.raises(OptionError, match=r"^constraints: pinned layers, layer counts"):
            solve(inst, "greedy")
        return
    plan = solve(inst, "greedy")
    validate_plan(inst, plan)
    if plan.status.has_plan:
        per_k = dag_oracle(inst)
        assert per_k and plan.num_partitions >= min(per_k)


def unet(skip_bytes=50):
    """A U-Net-like chain of 6 with two long skips (enc0 → dec0 … as real skips cross stages)."""
    names = ["enc0", "enc1", "mid", "dec1", "dec0", "head"]
    layers = [Layer(name, weight_bytes=30, activation_bytes=skip_bytes if name.startswith("enc") else 5)
              for name in names]
    edges = [(a, b) for a, b in zip(names, names[1:])] + [("enc0", "dec0"), ("enc1", "dec1")]
    return Instance(name="unet", capacity=200, layers=layers, edges=tuple(edges))


def test_relayed_skips_are_held_and_sent():
    inst = unet()
    parts = [[0, 1], [2, 3], [4, 5]]
    # partition 1 relays enc0's 50 B to dec0; enc1's skip ends in partition 1 (an input, not counted)
    assert plan_loads(inst, parts) == [30 + 50 + 30 + 50, 30 + 5 + 30 + 5 + 50, 30 + 5 + 30 + 5]
    assert dag_cuts(inst, parts) == [50 + 50, 5 + 50]  # enc1→mid and enc1's skip, enc0's skip; dec1→dec0 and enc0's
    plan = solve(inst, objective="min_bottleneck", num_partitions=3)
    validate_plan(inst, plan)
    assert plan.status is Status.OPTIMAL
    assert plan.metrics["communication"]["total_bytes"] == sum(dag_cuts(inst, plan.partitions))
    import dataclasses

    backwards = dataclasses.replace(plan, partitions=[[0, 4], [1, 2, 3], [5]])
    with pytest.raises(PlanError, match=r"^edge enc1 → dec1 runs backwards|^edge dec1 → dec0 runs backwards"):
        validate_plan(inst, backwards)


def test_a_schedule_holds_activations_and_relays_per_micro_batch_in_flight():
    # unet(): weights 30 each, enc activations 50, the others 5; stages [enc0 enc1] [mid dec1] [dec0 head]
    parts = [[0, 1], [2, 3], [4, 5]]
    gpipe = dataclasses.replace(unet(), schedule="gpipe", micro_batches=2)
    # every stage holds 2 micro-batches: activations ×2, and the middle one relays enc0's skip ×2
    assert plan_loads(gpipe, parts) == [30 + 2 * 50 + 30 + 2 * 50, 30 + 2 * 5 + 30 + 2 * 5 + 2 * 50, 30 + 2 * 5 + 30 + 2 * 5]
    one_f_one_b = dataclasses.replace(unet(), schedule="1f1b", micro_batches=4)
    # 1F1B: stage j of 3 holds min(3 − j, 4) micro-batches: 3, 2, 1
    assert plan_loads(one_f_one_b, parts) == [30 + 3 * 50 + 30 + 3 * 50, 30 + 2 * 5 + 30 + 2 * 5 + 2 * 50, 30 + 5 + 30 + 5]
    assert dag_cuts(one_f_one_b, parts) == dag_cuts(unet(), parts)  # per micro-batch, whatever the schedule
    roomy = dataclasses.replace(one_f_one_b, capacity=400)
    plan = solve(roomy, objective="min_bottleneck", num_partitions=3)
    validate_plan(roomy, plan)
    assert plan.metrics["max_bytes"] == max(plan_loads(roomy, plan.partitions))


def test_encoder_decoder_and_a_non_topological_listing():
    layers = [Layer(n, weight_bytes=10, activation_bytes=4) for n in ("dec0", "enc0", "enc1", "dec1")]
    edges = (("enc0", "enc1"), ("enc1", "dec0"), ("enc1", "dec1"), ("dec0", "dec1"))
    inst = Instance(name="ed", capacity=30, layers=layers, edges=edges)
    assert topological_order(inst) == [1, 2, 0, 3]
    assert greedy_dag(inst) == [[1, 2], [0, 3]]
    plan = solve(inst)
    validate_plan(inst, plan)
    assert plan.num_partitions == 2


@pytest.mark.parametrize(
    "edges, message",
    [
        ([["a", "b"], ["b", "a"]], r"^edges: the edges form a cycle \(a → b → a\)$"),
        ([["a", "x"]], r"^edges\[0\]: unknown layer 'x'$"),
        ([["a", "a"]], r"^edges\[0\]: layer 'a' feeds itself$"),
        ([["a"]], r"^edges\[0\]: expected \[producer, consumer\] layer names, got \['a'\]$"),
        ("a->b", r"^edges: expected a list of \[producer, consumer\] layer names"),
    ],
)
def test_bad_edges(edges, message):
    raw = {"capacity": 10, "layers": [{"name": n, "weight_bytes": 1} for n in "abc"], "edges": edges}
    with pytest.raises(InstanceError, match=message):
        Instance.from_dict(raw)


def test_dag_options_and_methods():
    raw = {"capacity": 10, "layers": [{"name": n, "weight_bytes": 1} for n in "abc"], "edges": [["a", "b"]],
           "buffer_reuse": True}
    with pytest.raises(InstanceError, match=r"^edges: a DAG instance does not combine with buffer_reuse in this version$"):
        Instance.from_dict(raw)
    inst = unet()
    with pytest.raises(OptionError, match=r"^edges: DAG instances are planned by methods 'cpsat' and 'mip' \(exact\) "
                                          r"and 'greedy' in this version, not 'dp'$"):
        solve(inst, "dp")
    assert solve(inst).method == "cpsat"
    assert Instance.from_dict(inst.to_dict()) == inst
