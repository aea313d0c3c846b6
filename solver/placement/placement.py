"""A placement: which GPU runs each partition of a plan, and what each boundary costs.

Plain data with a JSON round-trip, so a placement made on a laptop runs on a cluster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import PlanError
from ..model.plan import Status

__all__ = ["Placement", "MAP_OBJECTIVES"]

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
        if not isinstance(raw, dict):
            raise PlanError(f"placement: expected an object, got {raw!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise PlanError(f"placement: unknown key {unknown[0]!r}")
        for name in ("status", "objective_name", "devices", "boundaries", "partitions"):
            if name not in raw:
                raise PlanError(f"placement.{name}: missing")
        data = dict(raw)
        try:
            data["status"] = Status(data["status"])
        except ValueError:
            raise PlanError(f"placement.status: unknown status {data['status']!r}") from None
        return cls(**data)
