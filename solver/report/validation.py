"""An independent checker of plans: every test runs it on every plan.

It recomputes everything from the instance and trusts nothing the solver wrote but the
partitions themselves.
"""

from __future__ import annotations

from ..errors import PlanError
from ..model.instance import Instance
from .metrics import plan_metrics
from ..model.plan import MAXIMIZED, Plan, Status, check_plan_fields
from ..model.units import format_bytes, shown
from ..placement.placement import Placement, check_placement_fields
from ..model.graph import check_dag_plan
from ..model.memory import (capacity_at, device_capacity, plan_kv_tokens, plan_loads, utilization_ppb,
                            with_kv_tokens)

__all__ = ["validate_plan", "validate_placement"]


def _check_constraints(instance: Instance, partitions: list[list[int]]) -> None:
    c = instance.constraints
    count = len(partitions)
    where = {i: j for j, part in enumerate(partitions) for i in part}
    index = {layer.name: i for i, layer in enumerate(instance.layers)}
    for name, pin in c.pinned:
        target = c.resolve_pin(pin, count)
        if where[index[name]] != target:
            raise PlanError(f"layer {name!r} is pinned to partition {pin}, the plan puts it in {where[index[name]]}")
    for j, part in enumerate(partitions):
        if c.max_layers_per_partition and len(part) > c.max_layers_per_partition:
            raise PlanError(f"partition {j} has {len(part)} layers, more than max_layers_per_partition {c.max_layers_per_partition}")
        if c.min_layers_per_partition and len(part) < c.min_layers_per_partition:
            raise PlanError(f"partition {j} has {len(part)} layers, fewer than min_layers_per_partition {c.min_layers_per_partition}")
    ends = {part[-1] for part in partitions[:-1]}
    for name in c.no_cut_after:
        if index[name] in ends:
            raise PlanError(f"the plan cuts after {name!r}, which no_cut_after forbids")
    for name in c.must_cut_after:
        if index[name] not in ends:
            raise PlanError(f"the plan does not cut after {name!r}, which must_cut_after asks for")
    for group in c.tied:
        held = sorted({where[index[name]] for name in group.layers})
        if group.mode == "together" and len(held) > 1:
            raise PlanError(f"tied group {list(group.layers)} is kept together, the plan splits it over partitions {held}")


def _check_shape(instance: Instance, partitions: list[list[int]]) -> None:
    """Non-empty partitions that cover every layer once: contiguous runs in order on a chain,
    ordered convex sets on a DAG."""
    if not partitions:
        raise PlanError("a plan with a solution has at least one partition, it has none")
    if instance.edges is not None:  # a DAG: ordered convex sets, not runs of the listed order
        check_dag_plan(instance, partitions)
        return
    expected = 0
    for j, part in enumerate(partitions):
        if not part:
            raise PlanError(f"partition {j} is empty")
        for index in part:
            if index != expected:
                raise PlanError(
                    f"partition {j}: expected layer {expected} next (contiguous, in order), got layer {index}"
                )
            expected += 1
    if expected != instance.num_layers:
        raise PlanError(f"the partitions cover layers 0..{expected - 1}, the instance has {instance.num_layers}")


def _check_count(instance: Instance, partitions: list[list[int]], what: str) -> int:
    """The partitions' shape (non-empty, in order, every layer once) and their number against the
    device pool; returns that number."""
    _check_shape(instance, partitions)
    count = len(partitions)
    if count > instance.max_partitions:
        raise PlanError(f"the {what} has {count} partitions, the device pool {instance.max_partitions} devices")
    return count


def _check_fit(instance: Instance, partitions: list[list[int]], devices: list[str] | None) -> list[int]:
    """Every partition within its capacity (its place's, or on ``devices``, a free pool's chosen
    ones, each device's) and the constraints; returns the partitions' bytes."""
    loads = plan_loads(instance, partitions)
    for j, load in enumerate(loads):
        limit = device_capacity(instance, devices[j]) if devices is not None else capacity_at(instance, j)
        if load > limit:
            raise PlanError(f"partition {j} holds {format_bytes(load)}, over the capacity of {format_bytes(limit)} by "
                            f"{format_bytes(load - limit)}")
    _check_constraints(instance, partitions)
    return loads


def validate_placement(instance: Instance, placement: Placement) -> None:
    """Raise :class:`PlanError` if ``placement`` breaks a rule of ``instance``, checked like a
    plan: its fields' kinds, the layer count, partitions that are non-empty, contiguous, in
    order and cover every layer once (convex sets on a DAG), each within its capacity (at its
    place in the schedule), the constraints, one GPU per partition, and each partition's
    recorded bytes equal to those recomputed."""
    check_placement_fields(placement)
    if placement.num_layers != instance.num_layers:
        raise PlanError(f"placement is for {placement.num_layers} layers, the instance has {instance.num_layers}")
    if not placement.status.has_plan:
        if placement.partitions:
            raise PlanError(f"a placement with status {placement.status} must have no partitions")
        return
    count = _check_count(instance, placement.partitions, "placement")
    if instance.free_pool:
        raise PlanError("a placement of a free device pool's plan is not supported in this version")
    loads = _check_fit(instance, placement.partitions, None)
    if len(placement.devices) != count:
        raise PlanError(f"placement.devices: {len(placement.devices)} GPUs for {count} partitions")
    if len(set(placement.devices)) != count:
        raise PlanError(f"placement.devices: a GPU runs two partitions ({placement.devices})")
    if placement.partition_bytes != loads:
        raise PlanError(f"placement.partition_bytes: {shown(placement.partition_bytes)} does not match the "
                        f"partitions, recomputed {shown(loads)}")


def validate_plan(instance: Instance, plan: Plan) -> None:
    """Raise :class:`PlanError` with a precise message if ``plan`` breaks a rule of ``instance``.

    Checked: the plan is for this instance (layer count); a plan with status OPTIMAL or
    FEASIBLE has partitions that are non-empty, contiguous, in order and cover every
    layer once; every partition fits, S(P) ≤ C less the reserve (at its place in the
    schedule, if any); the constraints hold (pins, layer counts, cut rules, tied groups); the objective is the plan's own value
    (count, or S_max) and the bound does not exceed it; OPTIMAL means objective = bound
    (and, for ``min_partitions``, secondary objective = secondary bound); a requested
    number of partitions is met; the metrics equal those recomputed from the partitions.
    A plan without a solution (INFEASIBLE, UNKNOWN) has no partitions, and an
    INFEASIBLE one carries an explanation.
    """
    check_plan_fields(plan)
    if plan.num_layers != instance.num_layers:
        raise PlanError(f"plan is for {plan.num_layers} layers, the instance has {instance.num_layers}")
    if not plan.status.has_plan:
        if plan.partitions:
            raise PlanError(f"a plan with status {plan.status} must have no partitions, it has {plan.num_partitions}")
        if plan.status is Status.INFEASIBLE and not plan.explanation:
            raise PlanError("an infeasible plan must carry an explanation")
        return
    count = _check_count(instance, plan.partitions, "plan")
    if instance.free_pool:
        names = [d.name for d in instance.devices or ()]
        chosen = plan.devices or []
        if len(chosen) != count:
            raise PlanError(f"a plan on a free device pool names a device per partition: {count} partitions, "
                            f"{len(chosen)} devices")
        for name in chosen:
            if name not in names:
                raise PlanError(f"device {name!r} is not in the pool")
        if len(set(chosen)) != len(chosen):
            raise PlanError(f"the plan puts two partitions on one device ({chosen})")
    elif plan.devices is not None:
        raise PlanError("plan.devices: only a free device pool has devices chosen by the plan")
    held = instance  # a max_kv_tokens plan's stages hold its tokens of KV cache
    if plan.objective_name == "max_kv_tokens" and isinstance(plan.objective, int) and plan.objective >= 0 \
            and instance.kv_tokens is not None:
        held = with_kv_tokens(instance, plan.objective)
    loads = _check_fit(held, plan.partitions, plan.devices if instance.free_pool else None)
    if plan.num_partitions_requested is not None and plan.num_partitions != plan.num_partitions_requested:
        raise PlanError(f"{plan.num_partitions_requested} partitions were requested, the plan has {plan.num_partitions}")
    if plan.objective_name == "min_partitions":
        if plan.objective != plan.num_partitions:
            raise PlanError(f"objective {plan.objective} is not the number of partitions ({plan.num_partitions})")
        if plan.secondary_objective != max(loads):
            raise PlanError(f"secondary objective {plan.secondary_objective} is not the largest partition ({max(loads)} B)")
    elif plan.objective_name == "min_stage_time":
        on = plan.devices or [None] * count
        slowest = max(instance.stage_time(part, j, on[j]) for j, part in enumerate(plan.partitions))
        if plan.objective != slowest:
            raise PlanError(f"objective {plan.objective} is not the slowest stage's time ({slowest} s)")
    elif plan.objective_name == "min_utilization":
        caps = [device_capacity(instance, name) for name in plan.devices] if plan.devices else \
            [capacity_at(instance, j) for j in range(count)]
        share = max(utilization_ppb(load, cap) for load, cap in zip(loads, caps)) * 1e-9
        if plan.objective != share:
            raise PlanError(f"objective {plan.objective} is not the largest utilization ({share})")
    elif plan.objective_name == "max_kv_tokens":
        if instance.kv_tokens is None:
            raise PlanError("a max_kv_tokens plan needs the instance's kv_tokens")
        served = plan_kv_tokens(instance, plan.partitions, plan.devices)[0]
        if plan.objective != served:
            raise PlanError(f"objective {plan.objective} is not the tokens of KV cache the plan serves ({served})")
        if plan.bound is not None and plan.bound < plan.objective:
            raise PlanError(f"bound {plan.bound} is below the plan's value {plan.objective} (an upper bound)")
    elif plan.objective != max(loads):
        raise PlanError(f"objective {plan.objective} is not the largest partition ({max(loads)} B)")
    for value, bound, what in (
        (None if plan.objective_name in MAXIMIZED else plan.objective, plan.bound, "bound"),
        (plan.secondary_objective, plan.secondary_bound, "secondary bound"),
    ):
        if bound is not None and value is not None and bound > value:
            raise PlanError(f"{what} {bound} exceeds the plan's value {value}")
    if plan.status is Status.OPTIMAL:
        if plan.bound != plan.objective or plan.secondary_bound != plan.secondary_objective:
            raise PlanError(
                f"status optimal but objective {plan.objective} / bound {plan.bound}, "
                f"secondary {plan.secondary_objective} / bound {plan.secondary_bound}"
            )
    recomputed = plan_metrics(instance, plan.partitions, plan.devices,
                              kv_tokens=plan.objective if held is not instance else None)  # type: ignore[arg-type]
    for key, value in recomputed.items():
        if plan.metrics.get(key) != value:
            raise PlanError(f"metrics.{key} does not match the partitions: {plan.metrics.get(key)!r}, recomputed {value!r}")
    if set(plan.metrics) != set(recomputed):
        raise PlanError(f"metrics has keys {sorted(set(plan.metrics) - set(recomputed))} that no partition gives")
