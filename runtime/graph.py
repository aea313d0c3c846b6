"""Running a DAG plan: its stages, and the tensors that cross each boundary.

A DAG instance (``edges``) is run with the layers of its model called by one convention: a
layer takes the outputs of its producers as positional arguments, in the order the edges
list them, and a layer with no producer takes the model's input. The model's output is the
one layer that feeds no other. A stage of a DAG plan is a convex set of layers; every
tensor produced at or before stage j and still needed after it crosses boundary j — a skip
connection is relayed through the stages in between, as the planner counts it (held there,
sent over every boundary it crosses). :class:`GraphStage` runs a stage's layers in
topological order, taking what crosses into it and returning what crosses out, so that
``torch.distributed.pipelining`` sends each boundary's tensors as one tuple.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from layerfit import Instance
from layerfit.model.graph import topological_order

from .errors import ModelError
from .stage import Stage, layer_modules, run_layer

__all__ = ["INPUT", "Graph", "GraphStage", "graph_forward"]

INPUT = -1  # the model's input, as a tensor that layers without producers consume


class Graph:
    """A DAG instance's wiring for the runtime: producers per layer, the output layer, order."""

    def __init__(self, instance: Instance) -> None:
        index = {layer.name: i for i, layer in enumerate(instance.layers)}
        self.names = [layer.name for layer in instance.layers]
        self.num_layers = instance.num_layers
        self.producers: list[list[int]] = [[] for _ in range(self.num_layers)]
        for a, b in instance.edges or ():
            self.producers[index[b]].append(index[a])
        fed = {index[a] for a, _ in instance.edges or ()}
        sinks = [i for i in range(self.num_layers) if i not in fed]
        if len(sinks) != 1:
            names = ", ".join(repr(self.names[i]) for i in sinks)
            raise ModelError(f"edges: the runtime runs a DAG with one output layer; {names} feed no other layer")
        self.output = sinks[0]
        self.order = topological_order(instance)
        self._position = {v: p for p, v in enumerate(self.order)}
        self._position[INPUT] = -1

    def inputs_of(self, layer: int) -> list[int]:
        return self.producers[layer] or [INPUT]

    def crossings(self, partitions: Sequence[Sequence[int]]) -> list[list[int]]:
        """Per boundary j (after stage j): the tensors produced at or before stage j and needed
        after it, the model's input (``INPUT``) first, then in topological order."""
        stage_of = {v: j for j, part in enumerate(partitions) for v in part}
        stage_of[INPUT] = -1
        last_use: dict[int, int] = {}
        for v in range(self.num_layers):
            for u in self.inputs_of(v):
                last_use[u] = max(last_use.get(u, -1), stage_of[v])
        return [sorted((u for u, last in last_use.items() if stage_of[u] <= j < last), key=self._position.__getitem__)
                for j in range(len(partitions) - 1)]

    def stage(self, root: nn.Module, partitions: Sequence[Sequence[int]], position: int) -> "GraphStage":
        """Stage ``position`` of ``partitions``, its layers found in ``root`` by the instance's names."""
        crossings = self.crossings(partitions)
        takes = [INPUT] if position == 0 else crossings[position - 1]
        gives = [self.output] if position == len(partitions) - 1 else crossings[position]
        return GraphStage(root, partitions[position], self, takes, gives)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose gradient is made contiguous: a stage's input gradients are sent as they
    are, and the gradient of an input that a layer concatenates or slices is a strided view."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.contiguous()


class GraphStage(Stage):
    """A stage of a DAG plan: its layers (found by the instance's names), run in topological
    order on the tensors that cross into it; returns those that cross out (one tensor, or a
    tuple). A tensor only passing through is returned as it came."""

    def __init__(self, root: nn.Module, indices: Sequence[int], graph: Graph, takes: Sequence[int],
                 gives: Sequence[int]) -> None:
        mine = set(indices)
        run = [v for v in graph.order if v in mine]
        super().__init__(root, [graph.names[v] for v in run])
        self._run = [(v, graph.names[v], layer_modules(root, graph.names[v])) for v in run]
        self._inputs = {v: graph.inputs_of(v) for v in indices}
        self.takes, self.gives = list(takes), list(gives)
        # Places among the outputs of the tensors held here only to be passed on (relayed skips).
        self.relayed = [i for i, u in enumerate(self.gives) if u in self.takes]

    def forward(self, *incoming: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        values = {u: _ContiguousGrad.apply(t) if t.requires_grad else t for u, t in zip(self.takes, incoming)}
        for v, name, modules in self._run:
            values[v] = run_layer(modules, *(values[u] for u in self._inputs[v]))
            self.observe(name, values[v])
        out = tuple(values[u] for u in self.gives)
        return out[0] if len(out) == 1 else out


def graph_forward(model: nn.Module, instance: Instance, inputs: torch.Tensor) -> torch.Tensor:
    """The whole DAG model in one process, by the runtime's calling convention: the reference
    that a pipelined run of it equals."""
    graph = Graph(instance)
    return GraphStage(model, range(instance.num_layers), graph, [INPUT], [graph.output])(inputs)
