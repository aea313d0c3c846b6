"""A placement: which GPU runs each partition of a plan, and what each boundary costs.

Plain data with a JSON round-trip, so a placement made on a laptop runs on a cluster.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ..errors import PlanError
from ..model.plan import Status

__all__ = ["Placement", "MAP_OBJECTIVES", "check_placement_fields"]

MAP_OBJECTIVES = ("min_bottleneck", "min_total")


@dataclass(frozen=True)
class Placement:
    """The GPU of each partition and the cost of every boundary between partitions.

    Attributes
    ----------
    status:
        OPTIMAL when the objective equals the proven bound, FEASIBLE otherwise,
        INFEASIBLE when no assignment fits the GPUs' memory.
    devices:
        The GPU name of each partition, in order (partition j runs on ``devices[j]``).
    objective_name, objective, bound:
        ``min_bottleneck``: the slowest boundary's transfer time (s); ``min_total``: the sum
        over boundaries (s). ``bound`` is a proven lower bound.
    boundaries:
        Per boundary j (between partitions j and j+1): ``from``/``to`` devices, link
        ``kind``, ``bandwidth`` (bytes/s, one way), ``bytes`` and ``time`` (s) =
        latency + bytes / bandwidth.
    naive_devices, naive_objective, naive_ratio:
        Partition j on the j-th GPU in rank order, its objective, and naive / chosen.
    method:
        ``subset-dp`` (exact) or ``hierarchical`` (hosts first, then GPUs in a host).
    partitions, partition_bytes:
        The plan's partitions (layer indices) and S(P) of each, so the placement runs alone.
    """

    status: Status
    objective_name: str
    objective: float | None
    bound: float | None
    devices: list[str]
    boundaries: list[dict[str, Any]]
    method: str
    topology_name: str
    instance_name: str
    num_layers: int
    partitions: list[list[int]]
    partition_bytes: list[int]
    naive_devices: list[str] | None = None
    naive_objective: float | None = None
    naive_ratio: float | None = None
    solve_time_s: float = 0.0
    explanation: str | None = None
    totals: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        return out

    @classmethod
    def from_dict(cls, raw: object) -> Placement:
        """Read a placement written by :meth:`to_dict`; PlanError naming the first field that
        is missing, unknown or of the wrong kind."""
        from ..model.units import shown

        if not isinstance(raw, dict):
            raise PlanError(f"placement: expected an object, got {shown(raw)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted((key for key in raw if key not in known), key=str)
        if unknown:
            raise PlanError(f"placement: unknown key {shown(unknown[0])}")
        for name in ("status", "objective_name", "devices", "boundaries", "partitions"):
            if name not in raw:
                raise PlanError(f"placement.{name}: missing")
        data = dict(raw)
        try:
            data["status"] = Status(data["status"])
        except (ValueError, TypeError):
            raise PlanError(f"placement.status: unknown status {shown(data['status'])}") from None
        missing = [f.name for f in fields(cls) if f.name not in data and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing:
            raise PlanError(f"placement.{missing[0]}: missing")
        placement = cls(**data)
        check_placement_fields(placement)
        return placement


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


def _names(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(name, str) for name in value)


_KINDS: dict[str, tuple[Any, str]] = {
    "objective_name": (lambda v: v in MAP_OBJECTIVES, f"one of {', '.join(MAP_OBJECTIVES)}"),
    "objective": (lambda v: v is None or _is_number(v), "a number or null"),
    "bound": (lambda v: v is None or _is_number(v), "a number or null"),
    "devices": (_names, "a list of GPU names"),
    "boundaries": (lambda v: isinstance(v, list) and all(isinstance(b, dict) for b in v), "a list of objects"),
    "method": (lambda v: isinstance(v, str), "a string"),
    "topology_name": (lambda v: isinstance(v, str), "a string"),
    "instance_name": (lambda v: isinstance(v, str), "a string"),
    "num_layers": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "partitions": (lambda v: isinstance(v, list) and all(isinstance(p, list) and all(_is_int(i) for i in p)
                                                          for p in v), "a list of lists of layer indices"),
    "partition_bytes": (lambda v: isinstance(v, list) and all(_is_int(b) for b in v), "a list of integers"),
    "naive_devices": (lambda v: v is None or _names(v), "a list of GPU names or null"),
    "naive_objective": (lambda v: v is None or _is_number(v), "a number or null"),
    "naive_ratio": (lambda v: v is None or _is_number(v), "a number or null"),
    "solve_time_s": (lambda v: _is_number(v) and v >= 0, "a non-negative number"),
    "explanation": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "totals": (lambda v: isinstance(v, dict), "an object"),
}


def check_placement_fields(placement: object) -> None:
    """Raise PlanError naming the first field of ``placement`` whose value is not of its kind."""
    from ..model.units import shown

    if not isinstance(placement, Placement):
        raise PlanError(f"placement: expected a layerfit.Placement, got {type(placement).__name__}")
    if not isinstance(placement.status, Status):
        raise PlanError(f"placement.status: expected a Status, got {shown(placement.status)}")
    for name, (test, expected) in _KINDS.items():
        value = getattr(placement, name)
        if not test(value):
            raise PlanError(f"placement.{name}: expected {expected}, got {shown(value)}")
