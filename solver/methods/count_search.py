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


class Deadline:
    """``time_limit`` from now: called, the seconds the next solve may take (never below 10 ms,
    so a backend is always given a limit); ``expired`` once none are left.

    ``shares``: how many solves the time left is split among (the counts still to try, set by
    :func:`search_counts`), so that one count the backend cannot decide does not take the time
    of every later one; time a solve leaves unused goes to the next."""

    def __init__(self, time_limit: float | None) -> None:
        self.time_limit = time_limit
        self.started = time.perf_counter()
        self.shares = 1

    def __call__(self) -> float | None:
        if self.time_limit is None:
            return None
        return max(0.01, (self.time_limit - (time.perf_counter() - self.started)) / self.shares)

    @property
    def expired(self) -> bool:
        return self.time_limit is not None and time.perf_counter() - self.started >= self.time_limit


def deadline(time_limit: float | None) -> Deadline:
    """The seconds left of ``time_limit`` from now, at each call (never below 10 ms)."""
    return Deadline(time_limit)


def search_counts(instance: Instance, objective: str, counts: Sequence[int],
                  attempt: Callable[[int, Hint | None], Attempt], hint_for: Callable[[int], Hint | None],
                  finish, *, infeasible_why: str,  # type: ignore[no-untyped-def]
                  clock: Deadline | None = None) -> Plan:
    """Solve each count of ``counts`` in order; the first with a plan ends the search.

    A count the model does not decide within the time is skipped unless it is the last;
    then the warm start (``hint_for``), if any, is returned FEASIBLE. ``min_partitions``
    is OPTIMAL when every smaller count was proven infeasible and the largest partition
    meets its bound; ``min_bottleneck`` (one count) when it meets its bound.
    """
    proven = counts[0] if counts else 0  # no counts: the bounds already leave none
    for position, count in enumerate(counts):
        if clock is not None and clock.expired and position < len(counts) - 1:
            # Out of time (each model built costs time too): no count before the last is
            # tried; the last one's warm start, if any, is returned with the bound proven so far.
            continue
        hint = hint_for(count)
        if clock is not None:
            clock.shares = len(counts) - position
        result = attempt(count, hint) if clock is None or not clock.expired else \
            Attempt("time limit reached before the model was built", None, 0, False)
        if result.infeasible and hint is not None:
            # The warm start is a plan with this count: a backend that calls the count
            # infeasible contradicts it (CBC has, on coefficients of 10^10). No proof, keep the plan.
            result = Attempt(f"{result.status} (contradicted by the warm start)", None, result.bound, False,
                             result.devices)
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
