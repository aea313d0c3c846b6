"""The structure of a DAG instance (one with ``edges``): who consumes whose output, a
topological order, which partition holds each layer, whether a plan keeps every edge
forwards, and what crosses each cut. Bytes held are the memory model's
(:func:`layerfit.model.memory.plan_footprints`)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import PlanError

if TYPE_CHECKING:
    from .instance import Instance

__all__ = ["consumers", "topological_order", "partition_of", "dag_cuts", "check_dag_plan"]


def consumers(instance: Instance) -> list[list[int]]:
    """Per layer, the indices of the layers that consume its output."""
    index = {layer.name: i for i, layer in enumerate(instance.layers)}
    out: list[list[int]] = [[] for _ in instance.layers]
    for a, b in instance.edges or ():
        out[index[a]].append(index[b])
    return out


def topological_order(instance: Instance) -> list[int]:
    """The listed order when no edge runs backwards in it, else Kahn's order (ties by index)."""
    users = consumers(instance)
    n = instance.num_layers
    if all(v > u for u in range(n) for v in users[u]):
        return list(range(n))
    indegree = [0] * n
    for u in range(n):
        for v in users[u]:
            indegree[v] += 1
    ready = [i for i in range(n) if indegree[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        u = heapq.heappop(ready)
        order.append(u)
        for v in users[u]:
            indegree[v] -= 1
            if indegree[v] == 0:
                heapq.heappush(ready, v)
    return order


def partition_of(partitions: Sequence[Sequence[int]], n: int) -> list[int]:
    where = [-1] * n
    for j, part in enumerate(partitions):
        for i in part:
            where[i] = j
    return where


def dag_cuts(instance: Instance, partitions: Sequence[Sequence[int]]) -> list[int]:
    """Bytes crossing each boundary j → j+1: every tensor produced at or before j and needed after it."""
    users = consumers(instance)
    where = partition_of(partitions, instance.num_layers)
    cuts = [0] * max(0, len(partitions) - 1)
    for u, after in enumerate(users):
        last = max((where[v] for v in after), default=where[u])
        for j in range(where[u], last):
            cuts[j] += instance.layers[u].sent_bytes  # traffic: what the layer sends
    return cuts


def check_dag_plan(instance: Instance, partitions: Sequence[Sequence[int]]) -> None:
    """Raise PlanError unless every layer is in one non-empty partition and no edge runs backwards."""
    n = instance.num_layers
    seen = [0] * n
    for j, part in enumerate(partitions):
        if not part:
            raise PlanError(f"partition {j} is empty")
        for i in part:
            if not 0 <= i < n:
                raise PlanError(f"partition {j}: layer index {i} is not in the instance")
            seen[i] += 1
    missing = [i for i in range(n) if seen[i] != 1]
    if missing:
        raise PlanError(f"layer {instance.layers[missing[0]].name!r} is in {seen[missing[0]]} partitions, not one")
    where = partition_of(partitions, n)
    index = {layer.name: i for i, layer in enumerate(instance.layers)}
    for a, b in instance.edges or ():
        ia, ib = index[a], index[b]
        if where[ia] > where[ib]:
            raise PlanError(f"edge {a} → {b} runs backwards: partition {where[ia]} feeds partition {where[ib]}")
