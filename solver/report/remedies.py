"""What would make an infeasible instance fit: :func:`remedies`, the lines that follow an
explanation.

Each remedy is found by re-planning a changed instance exactly (the stage probe), not by a
rule of thumb:

* the smallest capacity at which it becomes feasible (for the requested number of
  partitions, or for any), by bisection over the capacity;
* the largest batch — or, with a schedule, micro-batch — that fits: activations, outputs
  and KV caches scale with it (operator workspaces are kept), by bisection over the scale;
* whether buffer reuse or activation recomputation would make it fit, by switching them on;
* for layers whose weights alone exceed the capacity, how many pieces a finer split needs.

Instances of more than :data:`MAX_LAYERS` layers get the cheap remedies only. On a DAG the
capacity is the least largest partition (relayed tensors included) that CP-SAT proves for
each partition count, and the batch is bisected with that test; DAGs of more than
:data:`MAX_DAG_LAYERS` layers get the cheap remedies only.
"""

from __future__ import annotations

import dataclasses
import math

from ..model.instance import Instance
from ..model.units import format_bytes, format_size
from ..model.memory import ample_capacity, partition_bytes, plan_loads, usable_capacity

__all__ = ["remedies", "fits"]

MAX_LAYERS = 500  # above this the bisections cost more than the explanation is worth
MAX_DAG_LAYERS = 40  # a DAG's remedies solve the CP-SAT model once per partition count, per step
_STEPS = 12  # bisection steps over the batch scale: a resolution of 1/4096


def fits(instance: Instance, k: int | None = None) -> bool:
    """Whether ``instance`` has a plan (with exactly ``k`` partitions, when given)."""
    from ..methods.stages import min_stages, probe_stages

    if instance.edges is not None:
        return _dag_fits(instance, k)
    if instance.free_pool:
        from ..methods.pools import min_free_devices, probe_free

        return (probe_free(instance, usable_capacity(instance), k) if k is not None
                else min_free_devices(instance)) is not None
    if k is not None:
        return probe_stages(instance, usable_capacity(instance), k) is not None
    plain = (instance.schedule == "none" and instance.devices is None and not instance.constraints.structural)
    if plain:  # an additive (or monotone) chain fits iff every layer alone fits
        return all(partition_bytes(instance, [i], 0, 1) <= usable_capacity(instance) for i in range(instance.num_layers))
    return min_stages(instance) is not None


def _dag_fits(instance: Instance, k: int | None) -> bool:
    from ..methods.dag import cpsat_dag, greedy_dag

    usable = usable_capacity(instance)
    if max(instance.sizes) > usable:
        return False  # a partition holds at least each of its layers
    if k is not None:
        return cpsat_dag(instance, k, hint=None, time_limit=None, seed=0, num_workers=8)[1] is not None
    if not instance.constraints.structural and greedy_dag(instance) is not None:
        return True  # greedy's plan is a plan (it keeps no rules, so only when there are none)
    lowest = max(1, math.ceil(sum(instance.sizes) / usable))
    return any(cpsat_dag(instance, count, hint=None, time_limit=None, seed=0, num_workers=8)[1] is not None
               for count in range(lowest, instance.num_layers + 1))


def _dag_least_bottleneck(instance: Instance, k: int | None) -> int | None:
    """The least largest partition of the DAG (relayed tensors included) with ``k`` partitions,
    or with the best count; None when there is no plan of that count (more than the layers)."""
    from ..methods.dag import cpsat_dag

    # A capacity no partition can reach, so that CP-SAT's bottleneck is bounded by the plans alone.
    roomy = ample_capacity(instance)
    unbounded = dataclasses.replace(instance, capacity=roomy, model=None)
    least = None
    for count in ([k] if k is not None else range(1, instance.num_layers + 1)):
        _, parts, _, _, _ = cpsat_dag(unbounded, count, hint=None, time_limit=None, seed=0, num_workers=8)
        if parts is not None:
            largest = max(plan_loads(unbounded, parts))
            least = largest if least is None else min(least, largest)
            if least == max(instance.sizes):
                break  # no count does better than the largest layer alone
    return least


def _with_capacity(instance: Instance, capacity: int) -> Instance:
    devices = instance.devices
    if devices is not None:  # the pool's devices grow with the capacity asked about
        devices = tuple(dataclasses.replace(d, capacity=max(d.capacity, capacity)) for d in devices)
    return dataclasses.replace(instance, capacity=capacity, devices=devices, model=None)


def _scaled(instance: Instance, scale: float) -> Instance:
    """The instance with every activation, output and KV cache scaled (a smaller batch)."""
    layers = tuple(
        dataclasses.replace(
            layer,
            activation_bytes=math.floor(layer.activation_bytes * scale),
            kv_cache_bytes=math.floor(layer.kv_cache_bytes * scale),
            output_bytes=None if layer.output_bytes is None else math.floor(layer.output_bytes * scale),
        )
        for layer in instance.layers
    )
    return dataclasses.replace(instance, layers=layers, model=None, dtype=instance.dtype)


def _smallest_capacity(instance: Instance, k: int | None) -> int | None:
    """The least capacity (reserve included) at which the instance fits; None if none does."""
    if instance.edges is not None:
        least = _dag_least_bottleneck(instance, k)
        return None if least is None else least + instance.constraints.reserve
    # No stage of any plan exceeds the ample capacity: what does not fit there fits nowhere
    # (the rules themselves contradict), however large the layers are.
    lo, hi = instance.capacity + 1, max(instance.capacity + 1, ample_capacity(instance))
    if not fits(_with_capacity(instance, hi), k):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(_with_capacity(instance, mid), k):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _largest_scale(instance: Instance, k: int | None) -> float:
    """The largest s in [0, 1) (to 1/4096) at which the scaled instance fits; 0 if none."""
    if not fits(_scaled(instance, 0.0), k):
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(_STEPS):
        mid = (lo + hi) / 2
        if fits(_scaled(instance, mid), k):
            lo = mid
        else:
            hi = mid
    return lo


def remedies(instance: Instance, k: int | None = None) -> list[str]:
    """What would make ``instance`` fit (with ``k`` partitions, when given), one line each."""
    lines: list[str] = []
    want = f"{k} partition{'s' if k != 1 else ''}" if k is not None else "any number of partitions"
    capacity = usable_capacity(instance)
    weights_over = [i for i in range(instance.num_layers)
                    if instance.footprint(i).weight + instance.footprint(i).training_state > capacity]
    if weights_over:
        worst = max(weights_over, key=lambda i: instance.footprint(i).weight + instance.footprint(i).training_state)
        fp = instance.footprint(worst)
        pieces = math.ceil((fp.weight + fp.training_state) / capacity)
        lines.append(
            f"Remedy: no batch size fits: the weights{' and training state' if fp.training_state else ''} of "
            f"{len(weights_over)} layer{'s' if len(weights_over) != 1 else ''} exceed the capacity alone "
            f"({instance.layers[worst].name}: {format_size(fp.weight + fp.training_state)}). A finer split of those "
            f"layers would need at least {pieces} pieces each (a transformer block's attention and MLP apart: "
            f"split='sublayer' in from_hf_config; past that, tensor parallelism within the layer)."
        )
    if instance.edges is not None and instance.num_layers > MAX_DAG_LAYERS:
        lines.append(f"(Capacity and batch remedies are computed for DAG instances of up to {MAX_DAG_LAYERS} layers.)")
        return lines
    if instance.num_layers > MAX_LAYERS:
        lines.append(f"(Capacity and batch remedies are computed for instances of up to {MAX_LAYERS} layers.)")
        return lines
    smallest = _smallest_capacity(instance, k)
    if smallest is None:  # then no memory remedy can help either
        why = ("the pins, layer counts and cut rules cannot all be kept" if instance.constraints.structural
               else "no plan of that shape exists")
        lines.append(f"Remedy: no capacity makes it fit with {want}: {why}.")
        return lines
    lines.append(f"Remedy: the smallest capacity at which it fits with {want} is {format_bytes(smallest)}"
                 + (f" (the reserve of {format_size(instance.constraints.reserve)} included)"
                    if instance.constraints.reserve else "") + ".")
    if not weights_over:
        scale = _largest_scale(instance, k)
        what = "micro-batch" if instance.schedule != "none" else "batch"
        model = instance.model
        if scale > 0 and model is not None:
            batch = math.floor(model.batch_size * scale)
            lines.append(f"Remedy: the largest batch that fits is {batch} (of {model.batch_size}), activations "
                         f"scaling with it." if batch >= 1 else
                         f"Remedy: not even a batch of 1 fits (activations of {scale:.2%} of these would).")
        elif scale > 0:
            lines.append(f"Remedy: a {what} of at most {math.floor(scale * 1000) / 10:g} % of this one fits "
                         f"(activations, outputs and KV caches scale with it; workspaces kept).")
        else:
            lines.append(f"Remedy: no {what} size fits: weights, training state and workspaces alone are too large.")
    if instance.edges is not None:
        return lines  # a DAG instance takes neither buffer reuse nor recomputation in this version
    for option, label, needs in (
        ("buffer_reuse", "buffer reuse (buffer_reuse: true, one workspace a partition)", "buffer_bytes"),
        ("activation_recompute", "activation recomputation (activation_recompute: true)", "activation_bytes"),
    ):
        if not getattr(instance, option) and any(getattr(layer, needs) for layer in instance.layers):
            turned = dataclasses.replace(instance, model=None, **{option: True})
            lines.append(f"Remedy: {label} {'makes it fit' if fits(turned, k) else 'is not enough on its own'}.")
    return lines
