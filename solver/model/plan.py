"""The result of :func:`layerfit.solve`: a frozen, JSON round-tripping partition plan."""

from __future__ import annotations

import enum
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ..errors import PlanError

__all__ = ["Status", "Plan", "OBJECTIVES", "MAXIMIZED", "PLAN_FORMAT_VERSION", "check_plan_fields"]

OBJECTIVES = ("min_partitions", "min_bottleneck", "min_stage_time", "min_utilization", "max_kv_tokens")
MAXIMIZED = ("max_kv_tokens",)  # the objectives whose bound is an upper bound
PLAN_FORMAT_VERSION = 1


class Status(str, enum.Enum):
    """Outcome of a solve, at python-mip's granularity.

    OPTIMAL: the plan's objective equals the proven bound. FEASIBLE: a valid plan, not
    proven optimal (time limit, or a method that proves nothing). INFEASIBLE: proven that
    no plan exists (see ``Plan.explanation``). UNKNOWN: no plan found and nothing proven.
    """

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    @property
    def has_plan(self) -> bool:
        return self in (Status.OPTIMAL, Status.FEASIBLE)


def _relative_gap(value: float | None, bound: float | None) -> float | None:
    if value is None or bound is None:
        return None
    if value == bound:
        return 0.0
    return (value - bound) / abs(value) if value else math.inf


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


# Each field's kind, as a plan file must hold it: (test, what the message says is expected).
_KINDS: dict[str, tuple[Any, str]] = {
    "objective_name": (lambda v: v in OBJECTIVES, f"one of {', '.join(OBJECTIVES)}"),
    "objective": (lambda v: v is None or _is_number(v), "a number or null"),
    "bound": (lambda v: v is None or _is_number(v), "a number or null"),
    "secondary_objective": (lambda v: v is None or _is_number(v), "a number or null"),
    "secondary_bound": (lambda v: v is None or _is_number(v), "a number or null"),
    "method": (lambda v: isinstance(v, str), "a string"),
    "instance_name": (lambda v: isinstance(v, str), "a string"),
    "num_layers": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "backend": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "backend_status": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "solve_time_s": (lambda v: _is_number(v) and v >= 0, "a non-negative number"),
    "metrics": (lambda v: isinstance(v, dict), "an object"),
    "explanation": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "seed": (lambda v: v is None or (_is_int(v) and v >= 0), "a non-negative integer or null"),
    "num_workers": (lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer or null"),
    "time_limit": (lambda v: v is None or (_is_number(v) and v > 0), "a positive number or null"),
    "num_partitions_requested": (lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer or null"),
    "devices": (lambda v: v is None or (isinstance(v, list) and all(isinstance(d, str) for d in v)),
                "a list of device names or null"),
}


def check_plan_fields(plan: object, what: str = "plan") -> None:
    """Raise :class:`PlanError` naming the first field of ``plan`` (a :class:`Plan`) whose value
    is not of its kind: a plan read from a file, or built by hand, is checked before it is used."""
    from .units import shown

    if not isinstance(plan, Plan):
        raise PlanError(f"{what}: expected a layerfit.Plan, got {type(plan).__name__}")
    if not isinstance(plan.status, Status):
        raise PlanError(f"{what}.status: expected a Status, got {shown(plan.status)}")
    parts = plan.partitions
    if not isinstance(parts, list) or not all(
        isinstance(p, list) and all(_is_int(i) for i in p) for p in parts
    ):
        raise PlanError(f"{what}.partitions: expected a list of lists of layer indices, got {shown(parts)}")
    for name, (test, expected) in _KINDS.items():
        value = getattr(plan, name)
        if not test(value):
            raise PlanError(f"{what}.{name}: expected {expected}, got {shown(value)}")


@dataclass(frozen=True)
class Plan:
    """A partition plan and how it was found.

    Attributes
    ----------
    status:
        :class:`Status`.
    partitions:
        Layer indices of each partition, in execution order (empty unless a plan exists).
    objective_name:
        ``"min_partitions"`` or ``"min_bottleneck"``.
    objective, bound:
        The plan's objective value and a proven lower bound on the optimum.
        ``min_partitions``: the number of partitions. ``min_bottleneck``: the largest
        partition's bytes, S_max = max_j S(P_j). ``min_stage_time``: the slowest stage's
        time in seconds (:meth:`layerfit.Instance.stage_time`). ``min_utilization``: the largest
        partition's share of its own device's capacity (whole parts per billion, as a fraction).
        ``max_kv_tokens``: the tokens of KV cache the pipeline serves, and ``bound`` a proven
        *upper* bound (the one objective maximised).
    secondary_objective, secondary_bound:
        ``min_partitions`` is lexicographic: among plans with the fewest partitions, the
        smallest S_max. These hold S_max and its proven lower bound (given the count);
        None for ``min_bottleneck``.
    method, backend:
        The method (``greedy``, ``dp``, ``cpsat``, ``mip``) and the solver behind it.
    backend_status:
        The backend's own status word, kept beside ours.
    solve_time_s:
        Wall time of the solve, in seconds.
    metrics:
        Memory, communication and balance of the plan (see :func:`layerfit.report.metrics.plan_metrics`).
    explanation:
        Why no plan exists (INFEASIBLE), or a note on what was proven.
    seed, num_workers, time_limit:
        The settings that decide reproducibility, recorded as used.
    instance_name, num_layers, num_partitions_requested:
        What was solved.
    devices:
        On a free device pool, the device of each partition (the planner's choice); None
        otherwise (an ordered pool puts partition j on device j).
    """

    status: Status
    partitions: list[list[int]]
    objective_name: str
    objective: float | None
    bound: float | None
    method: str
    instance_name: str
    num_layers: int
    secondary_objective: float | None = None
    secondary_bound: float | None = None
    backend: str | None = None
    backend_status: str | None = None
    solve_time_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    explanation: str | None = None
    seed: int | None = None
    num_workers: int | None = None
    time_limit: float | None = None
    num_partitions_requested: int | None = None
    devices: list[str] | None = None

    @property
    def num_partitions(self) -> int:
        return len(self.partitions)

    @property
    def gap(self) -> float | None:
        """Relative gap of the first objective still open.

        gap = (objective − bound) / |objective| (``max_kv_tokens``: (bound − objective) /
        |objective|); for ``min_partitions`` once the count is proven, the same formula over the
        secondary objective. 0.0 means proven optimal.
        """
        if self.objective_name in MAXIMIZED:
            gap = _relative_gap(self.objective, self.bound)
            return None if gap is None else abs(gap)
        primary = _relative_gap(self.objective, self.bound)
        if primary == 0.0 and self.secondary_objective is not None:
            return _relative_gap(self.secondary_objective, self.secondary_bound)
        return primary

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON (``Plan.from_dict(plan.to_dict()) == plan``)."""
        out = asdict(self)
        out["status"] = self.status.value
        out["gap"] = self.gap
        out["num_partitions"] = self.num_partitions
        out["format_version"] = PLAN_FORMAT_VERSION
        return out

    @classmethod
    def from_dict(cls, raw: object) -> Plan:
        """Read a plan written by :meth:`to_dict`.

        Raises
        ------
        PlanError
            If a field is missing, unknown or of the wrong kind.
        """
        from .units import shown

        if not isinstance(raw, dict):
            raise PlanError(f"plan: expected an object, got {shown(raw)}")
        data = dict(raw)
        version = data.pop("format_version", PLAN_FORMAT_VERSION)
        if version != PLAN_FORMAT_VERSION:
            raise PlanError(f"plan.format_version: expected {PLAN_FORMAT_VERSION}, got {shown(version)}")
        for derived in ("gap", "num_partitions"):
            data.pop(derived, None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PlanError(f"plan: unknown key {shown(unknown[0])}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        for name in required:
            if name not in data:
                raise PlanError(f"plan.{name}: missing")
        try:
            data["status"] = Status(data["status"])
        except (ValueError, TypeError):
            allowed = ", ".join(s.value for s in Status)
            raise PlanError(f"plan.status: unknown status {shown(data['status'])} (allowed: {allowed})") from None
        if data["objective_name"] not in OBJECTIVES:
            raise PlanError(f"plan.objective_name: unknown objective {shown(data['objective_name'])}")
        plan = cls(**data)
        check_plan_fields(plan)
        return plan
