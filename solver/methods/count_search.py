"""The fewest partitions with a model (CP-SAT or MIP), when greedy's count is not known to be
optimal: try each count in turn, each one the model proves infeasible raises the bound,
and the first with a plan is balanced by the same solve. Shared by the staged chain models,
free device pools and DAGs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..model.instance import Instance
from ..model.plan import Plan, Status
from ..model.memory import plan_loads

__all__ = ["Attempt", "deadline", "search_counts"]


@dataclass(frozen=True)
class Attempt:
    """What one solve with exactly ``count`` partitions gave: the backend's word, a plan (and
    its devices, on a free pool) or None, a proven lower bound on the largest partition in
    bytes, and whether it proved the count infeasible."""

    status: str
    parts: list[list[int]] | None
    bound: int
    infeasible: bool
    devices: list[str] | None = None


Hint = tuple[list[list[int]], list[str] | None]


def deadline(time_limit: float | None) -> Callable[[], float | None]:
    """The seconds left of ``time_limit`` from now, at each call (never below 10 ms)."""
    started = time.perf_counter()
    return lambda: None if time_limit is None else max(0.01, time_limit - (time.perf_counter() - started))


def search_counts(instance: Instance, objective: str, counts: Sequence[int],
                  attempt: Callable[[int, Hint | None], Attempt], hint_for: Callable[[int], Hint | None],
                  finish, *, infeasible_why: str) -> Plan:  # type: ignore[no-untyped-def]
    """Solve each count of ``counts`` in order; the first with a plan ends the search.

    A count the model does not decide within the time is skipped unless it is the last;
    then the warm start (``hint_for``), if any, is returned FEASIBLE. ``min_partitions``
    is OPTIMAL when every smaller count was proven infeasible and the largest partition
    meets its bound; ``min_bottleneck`` (one count) when it meets its bound.
    """
    proven = counts[0] if counts else 0  # no counts: the bounds already leave none
    for count in counts:
        hint = hint_for(count)
        result = attempt(count, hint)
        if result.parts is None and result.infeasible:
            proven = count + 1
            continue
        if result.parts is None and count != counts[-1]:
            continue  # not decided within the time: a larger count may still have a plan
        parts, devices, note = result.parts, result.devices, None
        if parts is None:
            if hint is None:
                return finish(Status.UNKNOWN, objective=None, bound=None, backend_status=result.status,
                              explanation="no plan found within the time limit")
            parts, devices = [list(p) for p in hint[0]], hint[1]
            note = f"the backend returned no plan ({result.status}); the warm start is returned"
        largest = max(plan_loads(instance, parts))
        bound = min(result.bound, largest)
        extra = {"devices": devices} if devices else {}
        if objective == "min_bottleneck":
            done = Status.OPTIMAL if bound == largest else Status.FEASIBLE
            return finish(done, parts, objective=largest, bound=bound, backend_status=result.status,
                          explanation=note, **extra)
        done = Status.OPTIMAL if proven == count and bound == largest else Status.FEASIBLE
        return finish(done, parts, objective=count, bound=proven, secondary_objective=largest, secondary_bound=bound,
                      backend_status=result.status, explanation=note, **extra)
    return finish(Status.INFEASIBLE, objective=None, bound=None, backend_status="INFEASIBLE",
                  explanation=infeasible_why)
