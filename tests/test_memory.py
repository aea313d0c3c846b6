"""The one memory model (layerfit.model.memory): its answers against an independent oracle
written from the rules as the docs state them, its fast forms against its plain ones, and
the rule that no other module owns a byte rule."""

import ast

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import ROOT
from layerfit import Constraints, Instance, Layer, TiedGroup, Training
from layerfit.model.graph import topological_order
from layerfit.model.memory import (RunCosts, ample_capacity, in_flight, order_run_bytes, partition_bytes, plan_footprints,
                                   plan_loads)
from test_dag import dags


@st.composite
def chains(draw):
    """Chains with every option of the memory model that a chain combines: schedules,
    recomputation, buffer reuse, training state, KV caches, a tied pair and a reserve."""
    n = draw(st.integers(1, 7))
    sizes = st.integers(0, 60)
    layers = []
    for i in range(n):
        output = draw(st.none() | sizes)
        layers.append(Layer(f"l{i}", params=draw(st.integers(1, 40)), activation_bytes=draw(sizes),
                            buffer_bytes=draw(sizes), kv_cache_bytes=draw(sizes), output_bytes=output))
    schedule = draw(st.sampled_from(["none", "gpipe", "1f1b"]))
    tied = ()
    if n >= 2 and draw(st.booleans()):
        a, b = sorted(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)))
        tied = (TiedGroup((f"l{a}", f"l{b}"), params=min(layers[a].params, layers[b].params)),)
    return Instance(
        name="memory", capacity=10**6, layers=layers, dtype=draw(st.sampled_from(["fp32", "bf16"])),
        schedule=schedule, micro_batches=1 if schedule == "none" else draw(st.integers(1, 4)),
        activation_recompute=draw(st.booleans()), buffer_reuse=draw(st.booleans()),
        training=draw(st.none() | st.just(Training(optimizer="adam"))),
        constraints=Constraints(tied=tied, reserve=draw(st.integers(0, 100))),
    )


def oracle_bytes(inst: Instance, layers: list[int], position: int, count: int) -> int:
    """S(P) from the rules as docs/concepts.md states them, written independently."""
    flight = {"none": 1, "gpipe": inst.micro_batches, "1f1b": min(count - position, inst.micro_batches)}[inst.schedule]
    return oracle_at(inst, layers, flight)


def oracle_at(inst: Instance, layers: list[int], flight: int) -> int:
    """S(P) of ``layers`` as a stage holding ``flight`` micro-batches at once."""
    total = 0
    for i in layers:
        layer = inst.layers[i]
        bits = {"fp32": 32, "bf16": 16}[inst.dtype]
        weight = layer.params * bits // 8
        total += weight + layer.kv_cache_bytes
        if inst.training is not None:  # gradient in the weight dtype + fp32 moments (+ fp32 master for 16-bit)
            total += weight + layer.params * (8 + (4 if bits == 16 else 0))
    buffers = [inst.layers[i].buffer_bytes for i in layers]
    total += max(buffers) if inst.buffer_reuse else sum(buffers)
    acts = [inst.layers[i].activation_bytes for i in layers]
    if inst.activation_recompute:
        first = layers[0]
        received = 0 if first == 0 else inst.layers[first - 1].sent_bytes
        total += flight * received + max(acts)
    else:
        total += flight * sum(acts)
    for group in inst.constraints.tied:
        members = [i for i in layers if inst.layers[i].name in group.layers]
        if len(members) > 1:
            per_param = (inst.footprint(members[0]).weight + inst.footprint(members[0]).training_state) \
                // inst.layers[members[0]].params
            total -= (len(members) - 1) * group.params * per_param
    return total


def splits(n: int):
    """Every split of n layers into contiguous partitions."""
    for mask in range(1 << (n - 1)):
        parts, start = [], 0
        for cut in range(1, n):
            if mask >> (cut - 1) & 1:
                parts.append(list(range(start, cut)))
                start = cut
        parts.append(list(range(start, n)))
        yield parts


@settings(max_examples=150)
@given(chains())
def test_every_stage_of_every_split_matches_the_oracle(inst):
    for parts in splits(inst.num_layers):
        k = len(parts)
        expected = [oracle_bytes(inst, p, j, k) for j, p in enumerate(parts)]
        assert plan_loads(inst, parts) == expected
        assert [fp.total for fp in plan_footprints(inst, parts)] == expected
        assert [partition_bytes(inst, p, j, k) for j, p in enumerate(parts)] == expected


@settings(max_examples=150)
@given(chains(), st.integers(0, 2000))
def test_the_probes_run_costs_are_the_stage_bytes(inst, limit):
    """RunCosts (what the probes sweep) gives every run's bytes in O(1), and its furthest
    ends are exactly the longest runs within the limit."""
    runs, n = RunCosts(inst), inst.num_layers
    for f in sorted({in_flight(inst, j, n) for j in range(n)} | {1}):
        for a in range(n):
            for b in range(a + 1, n + 1):
                assert runs.cost(a, b, f) == oracle_at(inst, list(range(a, b)), f)
        ends = runs.ends(f, limit)
        for a in range(n):
            fitting = [b for b in range(a + 1, n + 1) if all(runs.cost(a, c, f) <= limit for c in range(a + 1, b + 1))]
            assert ends[a] == max(fitting, default=a)


@settings(max_examples=100)
@given(chains())
def test_a_dag_of_a_chain_holds_what_the_chain_holds(inst):
    if inst.buffer_reuse or inst.activation_recompute or inst.constraints.tied:
        return  # options a DAG instance refuses
    names = [layer.name for layer in inst.layers]
    dag = Instance.from_dict({**inst.to_dict(), "edges": [[a, b] for a, b in zip(names, names[1:])]})
    for parts in splits(inst.num_layers):
        assert plan_footprints(dag, parts) == plan_footprints(inst, parts)
        assert max(plan_loads(dag, parts)) <= ample_capacity(dag)


@settings(max_examples=150)
@given(dags())
def test_a_run_of_a_topological_order_holds_what_its_plan_says(inst):
    """order_run_bytes (what the DAG greedy fills by) is the middle stage of the plan that puts
    everything before the run in one stage and everything after it in another."""
    order = topological_order(inst)
    n = inst.num_layers
    for a in range(n):
        for b in range(a + 1, n + 1):
            parts = [p for p in (order[:a], order[a:b], order[b:]) if p]
            middle = 1 if a else 0
            flight = in_flight(inst, middle, len(parts))
            assert order_run_bytes(inst, order, a, b, flight) == plan_loads(inst, parts)[middle]


MEMORY = ROOT / "solver" / "model" / "memory.py"
RULES = {"plan_footprints", "partition_footprint", "partition_bytes", "plan_loads", "RunCosts", "layer_parts",
         "order_run_bytes",
         "in_flight", "activations_held", "tied_savings", "size_at", "layer_footprint", "training_state_bytes",
         "capacity_at", "device_capacity", "capacity_within", "usable_capacity", "ample_capacity", "dag_loads"}
LAYER_BYTES = {"activation_bytes", "buffer_bytes", "kv_cache_bytes", "weight_bytes"}
# Modules that read a layer's byte fields without adding bytes up: the Layer's own definition and
# parsing; remedies, which scales a layer's fields to build the instance it proposes; explain,
# which says whether a layer's weights were given in bytes or as parameters.
READERS = {"model/instance.py", "report/remedies.py", "report/explain.py"}


def test_only_the_memory_module_owns_a_byte_rule():
    for path in sorted((ROOT / "solver").rglob("*.py")):
        if path == MEMORY:
            continue
        tree = ast.parse(path.read_text())
        defined = {node.name for node in ast.walk(tree)
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not isinstance(node, ast.AsyncFunctionDef)}
        assert not defined & RULES, f"{path.relative_to(ROOT)} defines {sorted(defined & RULES)}"
        read = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr in LAYER_BYTES}
        where = path.relative_to(ROOT / "solver").as_posix()
        assert not read or where in READERS, f"{where} reads {sorted(read)}: a byte rule outside the memory model"
