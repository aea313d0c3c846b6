"""Explanations for instances with no plan: which layers, and how far over (what would fit
follows from :mod:`layerfit.report.remedies`)."""

from __future__ import annotations

from ..methods.dp import min_bottleneck
from ..model.instance import Instance
from ..model.units import DTYPE_BITS, format_bytes, format_size
from ..model.memory import usable_capacity

__all__ = ["explain_oversized", "explain_too_few_partitions"]

_LISTED = 8  # layers listed one by one before the rest are summarised


def _runs_of_equal_layers(instance: Instance, indices: list[int]) -> list[tuple[int, int]]:
    """Group consecutive indices whose layers have the same footprint and params."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i - 1 and _same(instance, runs[-1][0], i):
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _same(instance: Instance, a: int, b: int) -> bool:
    la, lb = instance.layers[a], instance.layers[b]
    return instance.footprint(a) == instance.footprint(b) and (la.params, la.dtype) == (lb.params, lb.dtype)


def _describe_oversized(instance: Instance, first: int, last: int) -> str:
    layer = instance.layers[first]
    fp = instance.footprint(first)
    capacity = usable_capacity(instance)
    if layer.weight_bytes is None and layer.params:
        dtype = layer.dtype or instance.dtype or ""
        weight = f"weights {format_size(fp.weight)} ({layer.params:,} params × {DTYPE_BITS[dtype] / 8:g} B, {dtype})"
    else:
        weight = f"weights {format_size(fp.weight)}"
    who = layer.name if first == last else f"{layer.name} … {instance.layers[last].name} ({last - first + 1} layers, each)"
    state = f" + training state {format_size(fp.training_state)}" if fp.training_state else ""
    return (
        f"{who}: {format_size(fp.total)} = {weight} + activation {format_size(fp.activation)} "
        f"+ buffer {format_size(fp.buffer)}{state}; over by {format_size(fp.total - capacity)} "
        f"({fp.total / capacity:.3g}× the capacity)"
    )


def explain_oversized(instance: Instance) -> str | None:
    """Why the instance is infeasible because some layer alone exceeds C, or None."""
    capacity = usable_capacity(instance)
    over = [i for i, size in enumerate(instance.sizes) if size > capacity]
    if not over:
        return None
    reserve = instance.constraints.reserve
    held = f", i.e. {format_size(instance.capacity)} less a reserve of {format_size(reserve)}," if reserve else ""
    lines = [
        f"{len(over)} of {instance.num_layers} layers are larger than the capacity of {format_bytes(capacity)}{held} "
        f"on their own, so no partition can hold them (the seed's greedy would open an over-capacity "
        f"partition for each; layerfit reports infeasible instead)."
    ]
    groups = _runs_of_equal_layers(instance, over)
    for first, last in groups[:_LISTED]:
        lines.append("  " + _describe_oversized(instance, first, last))
    if len(groups) > _LISTED:
        rest = [i for first, last in groups[_LISTED:] for i in range(first, last + 1)]
        largest = max(instance.sizes[i] for i in rest)
        lines.append(f"  ... and {len(rest)} more layers (the largest of them {format_size(largest)})")
    model = instance.model
    if model is not None:
        act_dtype = model.activation_dtype or model.dtype
        lines.append(
            f"Seed shorthand: one layer's activation is batch × seq × hidden = {model.batch_size} × "
            f"{model.seq_len} × {model.hidden_size} = {model.activation_elements:,} elements (the seed's "
            f"\"5.24GB\" counts these elements); in {act_dtype} they take "
            f"{format_size(instance.footprint(0).activation)}."
        )
    return "\n".join(lines)


def explain_too_few_partitions(instance: Instance, k: int, fewest: int) -> str:
    """Why ``k`` partitions cannot hold the instance when at least ``fewest`` are needed."""
    needed, _ = min_bottleneck(instance.sizes, k)
    return (
        f"{k} partition{'s' if k != 1 else ''} cannot hold the model under the capacity of "
        f"{format_bytes(usable_capacity(instance))}: the fewest partitions that fit is {fewest}. With {k}, the smallest "
        f"possible largest partition is {format_bytes(needed)}, the capacity that {k} would need."
    )
