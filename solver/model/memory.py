"""The memory model: every byte rule of layerfit, in one module.

A *footprint* is what a layer, or a partition of layers run as one pipeline stage, holds in
device memory at its peak, by component (:class:`Footprint`). Every method, metric,
validation and remedy asks this module; nothing else adds bytes up. The one question is
:func:`plan_footprints` — what does each stage of this plan hold? — and the rest are its
parts, named so that the methods that search over plans can use them without re-deriving
them (:func:`layer_parts`, :func:`size_at`, :func:`relay_bytes` are the additive terms of
the same rules, checked against :func:`plan_footprints` in the tests).

The methodology's model (named ``"seed"``, after the seed methodology this project starts
from): size(l) = weight + activation + buffer of layer l, and a partition P fits when
S(P) = Σ_{l ∈ P} size(l) ≤ C. It is additive, and on an additive chain the greedy count is
optimal (see :mod:`layerfit.methods.greedy`). The richer rules below are options of an
instance, each off by default, so an instance without them is the methodology's model exactly.

**Weights and training state.** A layer's weights are ``weight_bytes``, or ``params`` in its
dtype. Training (an instance's ``training`` option) adds, per parameter, the gradient and
the optimizer's state — still additive:

=====================  ====================================================================
``training``           bytes per parameter beyond the weights
=====================  ====================================================================
optimizer ``none``     gradient (the weight dtype)
optimizer ``sgd``      gradient + momentum (fp32, 4)
optimizer ``adam``     gradient + two moments (fp32, 4 + 4)
``master_weights``     + an fp32 copy of the weights (4); default on for 16-bit weights
                       with an optimizer
``bytes_per_param``    the whole per-parameter total, weights included (e.g. 16)
=====================  ====================================================================

Mixed-precision Adam on bf16 weights is the familiar 16 bytes per parameter:
2 (weights) + 2 (gradients) + 4 (master) + 4 + 4 (moments).

**Activations per schedule position.** With a pipeline schedule, ``activation_bytes`` is per
micro-batch and stage j of k holds it for the micro-batches in flight there
(:func:`in_flight`): m under GPipe, min(k − j, m) under 1F1B, 1 without a schedule.
With *recomputation* a stage holds, per micro-batch in flight, only its input (the previous
layer's output), and once the largest activation of its layers.

**Buffer reuse.** A partition's operator workspace is the largest of its layers' (it is
transient, reused layer after layer) instead of their sum.

**KV caches** (``kv_cache_bytes``, inference) are held once for the whole batch, whatever
the schedule.

**Tied weights.** A weight tied across layers (an embedding and its head) is held once per
partition however many members the partition holds.

**DAG relays.** On a DAG, a tensor whose last consumer sits in a later partition than its
producer is held, per micro-batch in flight, by every partition it passes through.

**Reserve and device capacity.** A partition may hold the instance's capacity less the
reserve (:func:`usable_capacity`); on a device pool, also its device's capacity less the
reserve (:func:`capacity_at`, :func:`device_capacity`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InstanceError
from .graph import consumers, partition_of
from .units import DTYPE_BITS, dtype_bytes

if TYPE_CHECKING:
    from .instance import Instance, Layer, Training

__all__ = ["MEMORY_MODEL", "OPTIMIZER_STATE_BYTES", "Footprint", "activations_held", "capacity_at",
           "device_capacity", "in_flight", "layer_footprint", "layer_parts", "partition_bytes",
           "partition_footprint", "plan_footprints", "plan_loads", "relay_bytes", "size_at", "tied_shares",
           "tied_savings", "training_state_bytes", "usable_capacity", "utilization_ppb"]

MEMORY_MODEL = "seed"
OPTIMIZER_STATE_BYTES = {"none": 0, "sgd": 4, "adam": 8}  # optimizer state bytes per parameter (fp32)


@dataclass(frozen=True)
class Footprint:
    """size(l) of one layer (or S(P) of a partition), by component, in bytes."""

    weight: int
    activation: int
    buffer: int
    training_state: int = 0  # gradients, optimizer state, master weights
    kv_cache: int = 0  # keys and values of past tokens, held for the whole batch

    @property
    def total(self) -> int:
        return self.weight + self.activation + self.buffer + self.training_state + self.kv_cache

    def __add__(self, other: Footprint) -> Footprint:
        return Footprint(
            self.weight + other.weight,
            self.activation + other.activation,
            self.buffer + other.buffer,
            self.training_state + other.training_state,
            self.kv_cache + other.kv_cache,
        )


# -- one layer ------------------------------------------------------------------------


def training_state_bytes(training: Training, params: int, weight_bits: int, where: str) -> int:
    """Bytes of training state for ``params`` parameters whose weights have ``weight_bits``."""
    if training.bytes_per_param is not None:
        total = math.ceil(params * training.bytes_per_param)
        weights = -(-params * weight_bits // 8)
        if total < weights:
            raise InstanceError(
                f"training.bytes_per_param: {training.bytes_per_param:g} is less than the weights' own "
                f"{weight_bits / 8:g} bytes per parameter ({where})"
            )
        return total - weights
    default_master = weight_bits == 16 and training.optimizer != "none"
    master = training.master_weights if training.master_weights is not None else default_master
    gradient = -(-params * weight_bits // 8)
    return gradient + params * (OPTIMIZER_STATE_BYTES[training.optimizer or "none"] + (4 if master else 0))


def layer_footprint(layer: Layer, index: int, dtype: str | None, training: Training | None) -> Footprint:
    """size(l) of ``layer`` (``layers[index]`` of an instance whose default dtype is ``dtype``),
    one micro-batch of activation."""
    dtype = layer.dtype or dtype
    if layer.weight_bytes is not None:
        weight = layer.weight_bytes
    else:
        if dtype is None and layer.params:
            raise InstanceError(
                f"layers[{index}].dtype: layer {layer.name!r} has params but neither it nor the instance gives a dtype"
            )
        weight = dtype_bytes(dtype, layer.params, f"layers[{index}].dtype") if layer.params else 0
    state = 0
    if training is not None and (layer.params or weight):
        if not layer.params:
            raise InstanceError(
                f"layers[{index}].params: layer {layer.name!r} has weights but no params, and training state is per parameter"
            )
        bits = DTYPE_BITS[dtype] if dtype in DTYPE_BITS else 8 * weight // layer.params
        state = training_state_bytes(training, layer.params, bits, f"layer {layer.name!r}")
    return Footprint(weight, layer.activation_bytes, layer.buffer_bytes, state, layer.kv_cache_bytes)


def tied_shares(layers: Sequence[Layer], footprints: Sequence[Footprint], groups: Sequence) -> tuple:  # type: ignore[type-arg]
    """Per tied group: its members' indices (sorted) and the shared weight's footprint (the
    group's ``params`` at the smallest member's bytes per parameter), paid once per partition."""
    index = {layer.name: i for i, layer in enumerate(layers)}
    out = []
    for group in groups:
        members = tuple(sorted(index[name] for name in group.layers))
        out.append((members, Footprint(
            min(footprints[i].weight * group.params // layers[i].params for i in members), 0, 0,
            min(footprints[i].training_state * group.params // layers[i].params for i in members),
        )))
    return tuple(out)


def size_at(instance: Instance, index: int, flight: int) -> int:
    """Layer ``index``'s bytes in a stage that holds ``flight`` micro-batches at once."""
    return instance.sizes[index] + (flight - 1) * instance.layers[index].activation_bytes


def layer_parts(instance: Instance) -> tuple[list[int], list[int], list[int]]:
    """The additive terms of a chain stage, per layer: the bytes held once (weights, training
    state, KV cache, and buffers unless they are reused), the activation (per micro-batch in
    flight), and the buffer when the partition reuses one workspace (its largest counts)."""
    acts = [layer.activation_bytes for layer in instance.layers]
    reused = [layer.buffer_bytes if instance.buffer_reuse else 0 for layer in instance.layers]
    return [s - a - r for s, a, r in zip(instance.sizes, acts, reused)], acts, reused


def relay_bytes(instance: Instance) -> list[int]:
    """Per layer, what its output costs each partition it passes through, per micro-batch in
    flight (a DAG's relayed tensor; on a chain, what crosses the next cut)."""
    return [layer.sent_bytes for layer in instance.layers]


def boundary_bytes(instance: Instance, first: int) -> int:
    """What a stage starting at layer ``first`` receives: the previous layer's output."""
    return instance.layers[first - 1].sent_bytes if first > 0 else 0


# -- one stage ------------------------------------------------------------------------


def in_flight(instance: Instance, position: int, count: int) -> int:
    """Micro-batches whose activations stage ``position`` of ``count`` holds at once."""
    if instance.schedule == "gpipe":
        return instance.micro_batches
    if instance.schedule == "1f1b":
        return min(count - position, instance.micro_batches)
    return 1


def activations_held(instance: Instance, layers: Sequence[int], position: int, count: int) -> int:
    """The activation bytes a stage holds at its peak: each layer's for every micro-batch in
    flight, or with recomputation its input per micro-batch and its largest layer's once."""
    if not layers:
        return 0
    f = in_flight(instance, position, count)
    if instance.activation_recompute:
        return f * boundary_bytes(instance, layers[0]) + max(instance.layers[i].activation_bytes for i in layers)
    return f * sum(instance.layers[i].activation_bytes for i in layers)


def tied_savings(instance: Instance, layers: Sequence[int]) -> Footprint:
    """What a partition holding ``layers`` saves by storing each tied weight once, not once per member."""
    weight = state = 0
    held = set(layers)
    for members, shared in instance.tied_groups:
        copies = max(0, sum(1 for i in members if i in held) - 1)
        weight += copies * shared.weight
        state += copies * shared.training_state
    return Footprint(weight, 0, 0, state)


def partition_footprint(instance: Instance, layers: Sequence[int], position: int = 0, count: int = 1) -> Footprint:
    """S(P) of a chain's partition holding ``layers`` at ``position`` of ``count`` stages, by
    component: the methodology's sum, with the activations held under the schedule, the
    workspace reused when the instance says so, and a tied weight counted once."""
    total = Footprint(0, 0, 0, 0, 0)
    for index in layers:
        total = total + instance.footprint(index)
    buffer = max((instance.layers[i].buffer_bytes for i in layers), default=0) if instance.buffer_reuse else total.buffer
    saved = tied_savings(instance, layers)
    return Footprint(total.weight - saved.weight, activations_held(instance, layers, position, count), buffer,
                     total.training_state - saved.training_state, total.kv_cache)


def partition_bytes(instance: Instance, layers: Sequence[int], position: int = 0, count: int = 1) -> int:
    """S(P) of a chain's partition (:func:`partition_footprint`), in bytes."""
    return partition_footprint(instance, layers, position, count).total


# -- a whole plan ---------------------------------------------------------------------


def plan_footprints(instance: Instance, partitions: Sequence[Sequence[int]]) -> list[Footprint]:
    """What each stage of a plan holds, by component: the one function of the memory model.

    On a chain, :func:`partition_footprint` of each partition at its position. On a DAG
    (an instance with ``edges``), each partition also holds, per micro-batch in flight, every
    tensor passing through it on its way to a later partition (counted as activation):

        S(P_j) = Σ_{v ∈ P_j} (size(v) + (f_j − 1) act(v)) + Σ_{u : x[u] < j < last(u)} f_j out(u)
    """
    k = len(partitions)
    if instance.edges is None:
        return [partition_footprint(instance, part, j, k) for j, part in enumerate(partitions)]
    users = consumers(instance)
    where = partition_of(partitions, instance.num_layers)
    relays = relay_bytes(instance)
    flights = [in_flight(instance, j, k) for j in range(k)]
    relayed = [0] * k
    for u, after in enumerate(users):
        last = max((where[v] for v in after), default=where[u])
        for j in range(where[u] + 1, last):
            relayed[j] += relays[u]
    out = []
    for j, part in enumerate(partitions):
        total = Footprint(0, 0, 0, 0, 0)
        for index in part:
            total = total + instance.footprint(index)
        out.append(Footprint(total.weight, flights[j] * (total.activation + relayed[j]), total.buffer,
                             total.training_state, total.kv_cache))
    return out


def plan_loads(instance: Instance, partitions: Sequence[Sequence[int]]) -> list[int]:
    """S(P) of every partition of a plan, in bytes (:func:`plan_footprints`)."""
    return [fp.total for fp in plan_footprints(instance, partitions)]


# -- what a partition may hold --------------------------------------------------------


def usable_capacity(instance: Instance) -> int:
    """What a partition may hold: the capacity less the reserve."""
    return instance.capacity - instance.constraints.reserve


def device_capacity(instance: Instance, name: str) -> int:
    """What a partition on device ``name`` may hold: its capacity less the reserve, and at
    most the usable capacity."""
    device = next(d for d in instance.devices or () if d.name == name)
    return min(usable_capacity(instance), device.capacity - instance.constraints.reserve)


def capacity_at(instance: Instance, position: int) -> int:
    """What partition ``position`` may hold: the usable capacity, and with an ordered device
    pool also device ``position``'s capacity less the reserve (a free pool: the largest
    device's, the most any position may hold)."""
    if instance.devices is None:
        return usable_capacity(instance)
    if instance.free_pool:
        return max(device_capacity(instance, d.name) for d in instance.devices)
    return min(usable_capacity(instance), instance.devices[position].capacity - instance.constraints.reserve)


def utilization_ppb(load: int, capacity: int) -> int:
    """load / capacity in whole parts per billion, rounded up: the exact integer that the
    ``min_utilization`` objective minimises."""
    return -(-load * 10**9 // capacity)
