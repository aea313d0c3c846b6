"""The runtime's wiring of DAG plans (runtime.graph), in one process: on random DAGs and
random convex plans, what crosses each boundary is what the planner counts (dag_cuts, the
relays in dag_loads), and the stages run one after another equal the whole model."""

from collections import OrderedDict

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layerfit.runtime.graph import INPUT, Graph, graph_forward  # noqa: E402
from layerfit.runtime import ModelError  # noqa: E402

from test_dag import dags  # noqa: E402
from layerfit.model.graph import check_dag_plan, dag_cuts  # noqa: E402
from layerfit.model.memory import in_flight, plan_loads, size_at  # noqa: E402


@st.composite
def planned_dags(draw):
    """A DAG with one output layer, and a plan of it: k ordered convex sets, none empty."""
    inst = draw(dags())
    fed = {a for a, _ in inst.edges}
    assume(sum(1 for layer in inst.layers if layer.name not in fed) == 1)
    order = Graph(inst).order
    # Cuts in a topological order: every stage convex, no edge backwards.
    inner = range(1, inst.num_layers)
    cuts = sorted(draw(st.sets(st.sampled_from(inner), max_size=len(inner)))) if inner else []
    bounds = [0, *cuts, inst.num_layers]
    partitions = [order[a:b] for a, b in zip(bounds, bounds[1:])]
    check_dag_plan(inst, partitions)
    return inst, partitions


@settings(max_examples=200, deadline=None)
@given(case=planned_dags())
def test_what_crosses_each_boundary_is_what_the_planner_counts(case):
    inst, partitions = case
    crossings = Graph(inst).crossings(partitions)
    sent = [sum(inst.layers[u].sent_bytes for u in crossing if u != INPUT) for crossing in crossings]
    assert sent == dag_cuts(inst, partitions)
    # A stage relays what crosses into it and out of it again; the planner holds it there, once
    # per micro-batch in flight, as it holds its layers' activations.
    for j, part in enumerate(partitions):
        into = set(crossings[j - 1]) if j > 0 else {INPUT}
        out = set(crossings[j]) if j < len(partitions) - 1 else set()
        relayed = sum(inst.layers[u].sent_bytes for u in into & out if u != INPUT)
        f = in_flight(inst, j, len(partitions))
        assert plan_loads(inst, partitions)[j] == sum(size_at(inst, v, f) for v in part) + f * relayed


class Mix(nn.Module):
    """A layer of any number of inputs, each weighted by its place (so that order matters)."""

    def __init__(self, width=4):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, *inputs):
        return torch.tanh(self.lin(sum((i + 1) * x for i, x in enumerate(inputs))))


@settings(max_examples=100, deadline=None)
@given(case=planned_dags())
def test_the_stages_in_turn_equal_the_whole_model(case):
    inst, partitions = case
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict((layer.name, Mix()) for layer in inst.layers))
    graph = Graph(inst)
    x = torch.randn(3, 4)
    carried: tuple = (x,)
    for j, part in enumerate(partitions):
        out = graph.stage(model, partitions, j)(*carried)
        carried = out if isinstance(out, tuple) else (out,)
    (result,) = carried
    assert torch.allclose(result, graph_forward(model, inst, x), atol=1e-6)


def test_a_layer_takes_its_producers_in_the_order_the_edges_list_them():
    from layerfit import Instance, Layer

    layers = [Layer(name, weight_bytes=1) for name in ("a", "b", "c")]
    inst = Instance(name="o", capacity=10, layers=layers, edges=(("b", "c"), ("a", "c"), ("a", "b")))
    graph = Graph(inst)
    assert graph.producers == [[], [0], [1, 0]] and graph.output == 2 and graph.inputs_of(0) == [INPUT]
    with pytest.raises(ModelError, match=r"^edges: the runtime runs a DAG with one output layer; 'b', 'c' feed no other"):
        Graph(Instance(name="two", capacity=10, layers=layers, edges=(("a", "b"), ("a", "c"))))
