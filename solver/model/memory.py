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
reserve (:func:`capacity_at`, :func:`device_capacity`). With ``gpu_memory_utilization`` u
(vLLM's option), only ⌊capacity · u⌋ of each capacity counts, less the reserve.

**KV tokens** (the objective ``max_kv_tokens``). A layer's ``kv_cache_bytes`` hold the
instance's ``kv_tokens`` tokens, and T tokens take ``kv_cache_bytes · T / kv_tokens``: a stage
whose other bytes are L and whose layers' KV bytes are K holds T tokens when
L + T · K / kv_tokens ≤ its capacity, so at most ⌊(capacity − L) · kv_tokens / K⌋
(:func:`stage_kv_tokens`); a pipeline serves the least of its stages' (:func:`plan_kv_tokens`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate
from typing import TYPE_CHECKING

from ..errors import InstanceError
from .graph import consumers, partition_of
from .units import DTYPE_BITS, dtype_bytes

if TYPE_CHECKING:
    from .instance import Instance, Layer, Training

__all__ = [
    "MEMORY_MODEL", "OPTIMIZER_STATE_BYTES", "Footprint", "RunCosts", "activations_held", "ample_capacity",
    "boundary_bytes", "byte_unit", "capacity_at", "capacity_within", "device_capacity", "in_flight", "layer_footprint",
    "layer_parts", "order_run_bytes", "partition_bytes", "partition_footprint", "plan_footprints", "plan_loads",
    "relay_bytes", "size_at", "tied_shares", "tied_savings", "training_state_bytes", "usable_capacity",
    "utilization_ppb", "kv_token_bytes", "with_kv_tokens", "stage_kv_tokens", "plan_kv_tokens",
]

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


# -- every run of a chain at once (what the probes sweep) ---------------------------


class RunCosts:
    """What a run of layers [a, b) costs as one stage, under the instance's memory model,
    and how far a run from each start may reach (:meth:`ends`).

    A run's cost only grows when it grows at its end; without recomputation it also only
    shrinks when its start moves right, so the furthest ends are monotone and one sweep with
    two pointers finds them all, O(n). With recomputation the stage's input depends on the
    start, so each start binary-searches its end over sparse-table maxima, O(n log n).
    """

    def __init__(self, instance: Instance):
        self.instance = instance
        fixed, self.acts, self.reused = layer_parts(instance)
        self.n = n = len(fixed)
        self.F = [0, *accumulate(fixed)]
        self.A = [0, *accumulate(self.acts)]
        self.P = [0, *accumulate(instance.layer_picoseconds)]
        # Tied weights count once per partition: prefix counts of each group's members.
        self.tied = []
        for members, shared in instance.tied_groups:
            member = set(members)
            self.tied.append(([0, *accumulate(1 if i in member else 0 for i in range(n))], shared.total))
        self.recompute = instance.activation_recompute
        self.top_buffer = _RangeMax(self.reused)
        if self.recompute:
            self.boundary = [boundary_bytes(instance, a) for a in range(n)]
            self.top_act = _RangeMax(self.acts)

    def savings(self, a: int, b: int) -> int:
        return sum(shared * max(0, counts[b] - counts[a] - 1) for counts, shared in self.tied)

    def cost(self, a: int, b: int, f: int) -> int:
        """S([a, b)) as one stage holding ``f`` micro-batches: :func:`partition_bytes` of the
        run at a position with ``f`` in flight, in O(1) (the terms :meth:`ends` sweeps)."""
        if self.recompute:
            return (self.F[b] - self.F[a] + f * self.boundary[a] + self.top_act(a, b) + self.top_buffer(a, b)
                    - self.savings(a, b))
        return self.F[b] - self.F[a] + f * (self.A[b] - self.A[a]) + self.top_buffer(a, b) - self.savings(a, b)

    def ends(self, f: int, limit: int, time_limit: int | None = None) -> list[int]:
        """For every start a, the furthest b such that [a, b) fits ``limit`` bytes with ``f``
        micro-batches in flight (and ``time_limit`` picoseconds, if given); b = a if none."""
        n, F, P = self.n, self.F, self.P
        if self.recompute:
            out = []
            for a in range(n):
                lo, hi = a, n  # [a, lo) fits; nothing past hi does
                while lo < hi:
                    b = (lo + hi + 1) // 2
                    cost = (F[b] - F[a] + f * self.boundary[a] + self.top_act(a, b) + self.top_buffer(a, b)
                            - self.savings(a, b))
                    if cost <= limit and (time_limit is None or P[b] - P[a] <= time_limit):
                        lo = b
                    else:
                        hi = b - 1
                out.append(lo)
            return out
        A, reused = self.A, self.reused
        out = []
        far = 0
        window: deque[int] = deque()  # layers of [a, far) by decreasing reused buffer: its front is the max
        for a in range(n):
            if far < a:
                far = a
                window.clear()
            while window and window[0] < a:
                window.popleft()
            while far < n:
                peak = max(reused[far], reused[window[0]] if window else 0)
                if (F[far + 1] - F[a]) + f * (A[far + 1] - A[a]) + peak - self.savings(a, far + 1) > limit:
                    break
                if time_limit is not None and P[far + 1] - P[a] > time_limit:
                    break
                while window and reused[window[-1]] <= reused[far]:
                    window.pop()
                window.append(far)
                far += 1
            out.append(far)
        return out


class _RangeMax:
    """max(values[a:b]) in O(1) after O(n log n): a sparse table (0 for an empty range)."""

    def __init__(self, values: list[int]):
        self.table = [list(values)]
        width = 1
        while 2 * width <= len(values):
            prev = self.table[-1]
            self.table.append([max(prev[i], prev[i + width]) for i in range(len(values) - 2 * width + 1)])
            width *= 2

    def __call__(self, a: int, b: int) -> int:
        if b <= a:
            return 0
        level = (b - a).bit_length() - 1
        row = self.table[level]
        return max(row[a], row[b - (1 << level)])


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


def order_run_bytes(instance: Instance, order: Sequence[int], a: int, b: int, flight: int) -> int:
    """S of the stage holding ``order[a:b]`` (a topological order's run) with ``flight``
    micro-batches in flight, every layer before it in earlier stages and every layer after it in
    later ones: its layers, and the tensors made before it that are still needed after it
    (:func:`plan_footprints`' relays)."""
    position = {v: p for p, v in enumerate(order)}
    relays = relay_bytes(instance)
    users = consumers(instance)
    passing = sum(relays[u] for u in order[:a] if max((position[v] for v in users[u]), default=-1) >= b)
    return sum(size_at(instance, v, flight) for v in order[a:b]) + flight * passing


def plan_loads(instance: Instance, partitions: Sequence[Sequence[int]]) -> list[int]:
    """S(P) of every partition of a plan, in bytes (:func:`plan_footprints`)."""
    return [fp.total for fp in plan_footprints(instance, partitions)]


# -- what a partition may hold --------------------------------------------------------


def usable_capacity(instance: Instance) -> int:
    """What a partition may hold: the capacity (its ``gpu_memory_utilization`` share) less the reserve."""
    return _within(instance, instance.capacity)


def _within(instance: Instance, capacity: int) -> int:
    """⌊capacity · gpu_memory_utilization⌋ − reserve (exact: the fraction as the float it is)."""
    share = instance.constraints.gpu_memory_utilization
    held = capacity if share is None else math.floor(capacity * Fraction(share))
    return held - instance.constraints.reserve


def capacity_within(instance: Instance, capacity: int) -> int:
    """What a partition on a device of ``capacity`` bytes may hold: that capacity (its
    ``gpu_memory_utilization`` share) less the reserve, and at most the usable capacity."""
    return min(usable_capacity(instance), _within(instance, capacity))


def device_capacity(instance: Instance, name: str) -> int:
    """What a partition on device ``name`` may hold (:func:`capacity_within` its capacity)."""
    device = next(d for d in instance.devices or () if d.name == name)
    return capacity_within(instance, device.capacity)


def capacity_at(instance: Instance, position: int) -> int:
    """What partition ``position`` may hold: the usable capacity, and with an ordered device
    pool also device ``position``'s capacity less the reserve (a free pool: the largest
    device's, the most any position may hold)."""
    if instance.devices is None:
        return usable_capacity(instance)
    if instance.free_pool:
        return max(device_capacity(instance, d.name) for d in instance.devices)
    return capacity_within(instance, instance.devices[position].capacity)


def ample_capacity(instance: Instance) -> int:
    """A capacity no stage of any plan can exceed: every layer and every relayed tensor held at
    once, for the most micro-batches any stage holds, plus the reserve."""
    most = instance.micro_batches if instance.schedule != "none" else 1
    return most * (sum(instance.sizes) + sum(relay_bytes(instance))) + instance.constraints.reserve


def byte_unit(instance: Instance) -> int:
    """The greatest common divisor of every byte count a stage's load is made of (each layer's
    parts, relayed tensors): the exact models count in this unit. Every load is a multiple of
    it, so a capacity floors to it exactly (load ≤ cap ⇔ load/unit ≤ ⌊cap/unit⌋). The capacities
    stay out of the divisor on purpose: sizes that share a large factor the capacity lacks
    (10^9 + 7, say) made CP-SAT 9.15's presolve prove a wrong optimum; divided out, they cannot."""
    fixed, acts, reused = layer_parts(instance)
    return math.gcd(*instance.sizes, *fixed, *acts, *reused, *relay_bytes(instance)) or 1


def utilization_ppb(load: int, capacity: int) -> int:
    """load / capacity in whole parts per billion, rounded up: the exact integer that the
    ``min_utilization`` objective minimises."""
    return -(-load * 10**9 // capacity)


# -- KV tokens: the cache a stage's free memory buys ------------------------------------


def kv_token_bytes(instance: Instance) -> list[int]:
    """Per layer, the bytes one token of KV cache takes: ``kv_cache_bytes / kv_tokens`` (a
    whole number: the instance checks it when built); all 0 without ``kv_tokens``."""
    if instance.kv_tokens is None:
        return [0] * instance.num_layers
    return [layer.kv_cache_bytes // instance.kv_tokens for layer in instance.layers]


def with_kv_tokens(instance: Instance, tokens: int) -> Instance:
    """``instance`` with every layer holding ``tokens`` tokens of KV cache (its bytes a token
    times ``tokens``): every other rule of this module then applies unchanged."""
    import dataclasses

    per_token = kv_token_bytes(instance)
    layers = tuple(layer if layer.kv_cache_bytes == per * tokens else
                   dataclasses.replace(layer, kv_cache_bytes=per * tokens)
                   for layer, per in zip(instance.layers, per_token))
    return dataclasses.replace(instance, layers=layers, kv_tokens=tokens or None, model=None)


def stage_kv_tokens(footprint: Footprint, per_token: int, capacity: int) -> int | None:
    """The most tokens of KV cache a stage serves: it holds ``footprint`` (its KV at any token
    count: only the other components count) and ``per_token`` bytes a token, within
    ``capacity``: ⌊(capacity − others) / per_token⌋, negative when the others alone do not fit;
    None (any number) for a stage with no KV cache that fits."""
    others = footprint.total - footprint.kv_cache
    if per_token == 0:
        return None if others <= capacity else -1
    return (capacity - others) // per_token


def plan_kv_tokens(instance: Instance, partitions: Sequence[Sequence[int]],
                   devices: Sequence[str] | None = None) -> tuple[int | None, list[int | None]]:
    """The tokens of KV cache a plan serves, and each stage's own: a pipeline serves as many
    as its tightest stage holds (vLLM allocates every rank the same number of blocks, the
    least any rank's free memory buys). None: no stage holds KV cache."""
    per_token = kv_token_bytes(instance)
    footprints = plan_footprints(instance, partitions)
    stages = []
    for j, (part, fp) in enumerate(zip(partitions, footprints)):
        capacity = device_capacity(instance, devices[j]) if devices else capacity_at(instance, j)
        stages.append(stage_kv_tokens(fp, sum(per_token[i] for i in part), capacity))
    held = [t for t in stages if t is not None]
    return (min(held) if held else None), stages
