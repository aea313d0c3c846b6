"""The bottleneck model as a MIP in PuLP, solved by CBC (default) or HiGHS.

    minimise    M
    subject to  Σ_p x[i, p] = 1                          every layer in one partition
                x[i, p] ≤ x[i−1, p] + x[i−1, p−1]         contiguity, partitions in order
                x[0, 0] = 1,  x[n−1, k−1] = 1            all k partitions used
                Σ_i s_i · x[i, p] ≤ M                     bottleneck
                L − ½ ≤ M ≤ cap + ½,  M continuous        capacity, with half a byte of room
                x[i, p] ∈ {0, 1}, 0 unless first_i ≤ p ≤ last_i   greedy bounds

M is continuous: it is integral at every solution anyway (the loads are integer sums of
0/1 variables), and an integer M ranging over 10^10 bytes made CBC branch on it without
end (a 3-layer model ran for minutes) or cut off the optimum by its tolerances.

Time limits are deadlines: the time spent building the model counts, and CBC (a
subprocess) is stopped from outside if it overruns its own ``-sec`` (it has been seen to
run 30 s past it in preprocessing): interrupted first, killed after a grace. A stopped
backend gives no answer; the caller keeps the warm start with its bound.

Known backend behaviours this module works around:
* CBC 2.10.3's preprocessing declared feasible models with coefficients of 10^10 infeasible
  (buffer reuse at the warm start's bound); it runs without it. Without it, CBC has crashed
  (a segfault) on models with no integer solution: then it runs once more with it. Its answers
  are checked: a count it calls infeasible that a warm start fills is not proven
  (layerfit.methods.count_search), and where the DP applies, an answer that contradicts it is
  never returned as proven (layerfit.solve).
* CBC 2.10.3 (bundled with PuLP) returns, on some large-coefficient models, "optimal"
  solutions whose binaries lie outside [0, 1] (seen with its preprocessing off, more
  often than with it on). Every MIP solution is checked to be 0/1 before it becomes a
  plan; one that is not is rejected and the warm start kept. Tests cross-check every
  backend against the DP.
* ``pulp.HiGHS`` has no warm start: the model is built, the start set with
  ``setSolution``, then run. It reports a time limit as "Optimal" with a solution status
  of "integer feasible", so optimality is read from HiGHS's own model status. Creating
  the first ``Highs`` object prints a banner, which is kept off standard output.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator

from .formulation import BackendResult, Formulation, add_rules, extra_terms, partitions_from_assignment

__all__ = ["BACKENDS", "solve_bottleneck", "run_backend", "chain_assignment", "assignment"]

BACKENDS = ("cbc", "highs")
_INTEGRALITY_TOL = 1e-6
ROOM = 0.5  # room on integral bounds (bytes in solver units): see solve_bottleneck


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null (native code prints past sys.stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def solve_bottleneck(
    form: Formulation, *, backend: str, time_limit: float | None, seed: int
) -> BackendResult:
    """Solve ``form`` with PuLP and ``backend``; the incumbent is kept on a time limit."""
    import pulp

    started = time.monotonic()

    n, k = form.num_layers, form.k
    prob = pulp.LpProblem("bottleneck", pulp.LpMinimize)

    # x[i, p] = 1 if layer i is in partition p (only inside the greedy bounds).
    x = chain_assignment(prob, form.ranges, k)
    # M: the bottleneck S_max (continuous: integral at every solution, see above); L ≤ M tightens the root.
    # Its bounds, like every capacity below, get half a unit of room: loads are integers, so no
    # plan changes, and a backend's rounding at 10^10 bytes no longer cuts off a plan exactly at
    # the bound (CBC called such models infeasible).
    bottleneck = prob.add_variable("M", form.lower - ROOM, form.cap + ROOM)
    prob += bottleneck
    members: list[list[tuple[int, pulp.LpVariable]]] = [[] for _ in range(k)]
    for i in range(n):
        for p, var in x[i].items():
            members[p].append((form.weight(i, p), var))
    def at_least(var, expression) -> None:  # type: ignore[no-untyped-def]
        nonlocal constraints
        constraints += 1
        prob.addConstraint(var >= expression, f"aux_{constraints}")

    constraints = 0
    extra = extra_terms(form, x, lambda name, upper: prob.add_variable(name.replace("[", "_").replace("]", "")
                                                                        .replace(",", "_"), 0, upper), at_least)
    def rule(lhs, sense, rhs) -> None:  # type: ignore[no-untyped-def]
        nonlocal constraints
        constraints += 1
        prob.addConstraint(lhs == rhs if sense == "==" else lhs <= rhs if sense == "<=" else lhs >= rhs,
                           f"rule_{constraints}")

    add_rules(form, x, rule)
    for p in range(k):
        load = pulp.lpSum([*(size * var for size, var in members[p]), *(c * var for c, var in extra[p])])
        prob += load <= bottleneck, f"load_{p}"
        if form.caps:
            prob += load <= form.cap_of(p) + ROOM, f"device_{p}"

    start: dict[str, float] = {}
    if form.hint is not None:
        hinted = {i: p for p, part in enumerate(form.hint) for i in part}
        for i in range(n):
            for p, var in x[i].items():
                start[var.name] = 1.0 if hinted[i] == p else 0.0
        start[bottleneck.name] = float(max(form.load(part, p) for p, part in enumerate(form.hint)))

    raw_status, bound = run_backend(prob, start, backend, time_limit, seed, started=started)
    bound = max(form.lower, bound)

    if prob.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        partition_of = assignment(x)
        partitions = None if partition_of is None else partitions_from_assignment(partition_of, k)
        if partitions is None:
            # Seen with CBC on large coefficients: "optimal" with binaries at -0.94 and 1.94.
            # Such a solution is discarded rather than rounded into a plan.
            return BackendResult(None, form.lower * form.scale, False, False, f"{raw_status} (solution rejected)")
        proven = prob.sol_status == pulp.LpSolutionOptimal and raw_status.lower().startswith("optimal")
        value = max(form.load(part, p) for p, part in enumerate(partitions))
        if proven:
            bound = value
        return BackendResult(partitions, bound * form.scale, proven, False, raw_status)
    if prob.sol_status == pulp.LpSolutionInfeasible or prob.status == pulp.LpStatusInfeasible:
        return BackendResult(None, form.lower * form.scale, False, True, raw_status)
    return BackendResult(None, bound * form.scale, False, False, raw_status)


def run_backend(prob, start: dict[str, float], backend: str, time_limit: float | None, seed: int, *,
                started: float | None = None) -> tuple[str, int]:
    """Run ``prob`` on CBC or HiGHS from ``start`` (variable name → value): the backend's
    status word and its proven integral lower bound (0 when the backend gives none).

    ``time_limit`` counts from ``started`` (``time.monotonic()`` when the model's building
    began; default now): what building took is taken off the backend's time. With no time
    left, the backend is not run and the answer is "no solution"."""
    import pulp

    left = None
    if time_limit is not None:
        left = time_limit - (time.monotonic() - (time.monotonic() if started is None else started))
        if left <= 0:
            prob.sol_status = pulp.LpSolutionNoSolutionFound
            return "time limit reached while building the model", 0
    if backend == "cbc":
        return _run_cbc(prob, start, left, seed)
    return _run_highs(prob, start, left, seed)


def chain_assignment(prob, ranges, k: int) -> list[dict]:  # type: ignore[no-untyped-def]
    """x[i][p] binary = layer i in partition p (p in its range): k contiguous partitions in order."""
    import pulp

    n = len(ranges)
    x = [{p: prob.add_variable(f"x_{i}_{p}", 0, 1, cat=pulp.LpBinary) for p in range(first, last + 1)}
         for i, (first, last) in enumerate(ranges)]
    for i in range(n):
        prob += pulp.lpSum(x[i].values()) == 1, f"assign_{i}"
    for i in range(1, n):
        for p, var in x[i].items():
            before = [x[i - 1][q] for q in (p, p - 1) if q in x[i - 1]]
            prob += var <= pulp.lpSum(before), f"contiguous_{i}_{p}"
    prob += x[0][0] == 1, "first_layer"
    prob += x[n - 1][k - 1] == 1, "last_layer"
    return x


def assignment(x: list[dict]) -> list[int] | None:
    """Each row's chosen key from its binaries, or None if they are not 0/1 within 1e-6 (one 1)."""
    partition_of = []
    for options in x:
        chosen = [p for p, var in options.items() if abs((var.value() or 0.0) - 1.0) <= _INTEGRALITY_TOL]
        rest_zero = all(abs(var.value() or 0.0) <= _INTEGRALITY_TOL for p, var in options.items() if p not in chosen)
        if len(chosen) != 1 or not rest_zero:
            return None
        partition_of.append(chosen[0])
    return partition_of


# CBC gets this long past its own limit before it is interrupted, and as long again before it is killed.
_CBC_GRACE_S = 1.0


class _Watched:
    """``subprocess`` as PuLP's CBC runner sees it, with a deadline on the process it starts:
    past it, the process is interrupted (SIGINT: CBC stops and writes its incumbent), then
    killed. ``stopped`` says whether the watchdog had to act."""

    def __init__(self, limit: float | None) -> None:
        self._limit = limit
        self.stopped = False

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(subprocess, name)

    def Popen(self, *args, **kwargs):  # type: ignore[no-untyped-def]  # noqa: N802 - subprocess's name
        process = subprocess.Popen(*args, **kwargs)
        if self._limit is None:
            return process
        watched = self
        limit = self._limit

        class _Process:
            def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
                return getattr(process, name)

            def wait(self, timeout: float | None = None) -> int:
                try:
                    return process.wait(limit + _CBC_GRACE_S)
                except subprocess.TimeoutExpired:
                    watched.stopped = True
                    process.send_signal(signal.SIGINT)
                try:
                    return process.wait(_CBC_GRACE_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    return process.wait()

        return _Process()


def _run_cbc(prob, start: dict[str, float], time_limit: float | None, seed: int) -> tuple[str, int]:
    """CBC without its preprocessing, and, if it crashes (CBC 2.10.3 segfaults without
    preprocessing on some models that have no integer solution), once more with it."""
    began = time.monotonic()
    status, crashed = _cbc_once(prob, start, time_limit, seed, preprocess=False)
    left = None if time_limit is None else time_limit - (time.monotonic() - began)
    if crashed and (left is None or left > 0):
        # Its infeasibility proof is checked like every answer: a warm start or the DP that
        # contradicts it overrules it (layerfit.methods.count_search, layerfit.solve).
        status, crashed = _cbc_once(prob, start, left, seed, preprocess=True)
        status = f"{status} (rerun with preprocessing: CBC crashed without it)"
    return status, 0


def _cbc_once(prob, start: dict[str, float], time_limit: float | None, seed: int, *,  # type: ignore[no-untyped-def]
              preprocess: bool) -> tuple[str, bool]:
    """One CBC run under the watchdog: its status word, and whether it crashed (exited without
    a solution file, not stopped by the watchdog)."""
    import pulp
    from pulp.apis import coin_api

    for var in prob.variables():
        if var.name in start:
            var.setInitialValue(start[var.name])
    watched = _Watched(time_limit)
    with warnings.catch_warnings():
        # PuLP 3.3 marks its bundled CBC for removal in 4.0 (the range in pyproject stops at 4).
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(
            msg=False,
            timeLimit=None if time_limit is None else max(0.01, time_limit),
            warmStart=bool(start),
            gapRel=0.0,
            gapAbs=0.0,
            # CBC's preprocessing (CglPreProcess) declared feasible models with coefficients
            # of 10^10 "infeasible" (a 4-layer chain whose optimum it was given as its start);
            # the search without it proves them, and every answer is checked after.
            options=[f"randomCbcSeed {seed + 1}", *([] if preprocess else ["preprocess off"])],
        )
        saved = coin_api.subprocess
        coin_api.subprocess = watched  # type: ignore[assignment]
        try:
            prob.solve(solver)
        except pulp.PulpSolverError:
            # CBC stopped without a solution file: by the watchdog, at its own time limit inside
            # the root LP (seen), or by a crash. No answer from CBC; the caller keeps the warm start.
            prob.sol_status = pulp.LpSolutionNoSolutionFound
            return "CBC stopped without a solution" + (" (past its time limit)" if watched.stopped else ""), \
                not watched.stopped
        finally:
            coin_api.subprocess = saved
    if watched.stopped:
        # Interrupted: whatever it wrote is an incumbent at best, never a proof.
        if prob.sol_status == pulp.LpSolutionOptimal:
            prob.sol_status = pulp.LpSolutionIntegerFeasible
        return "Stopped past its time limit", False
    # PuLP does not read CBC's dual bound back; the caller falls back to L.
    return pulp.LpStatus[prob.status], False


def _run_highs(prob, start: dict[str, float], time_limit: float | None, seed: int) -> tuple[str, int]:
    import highspy
    import pulp

    solver = pulp.HiGHS(msg=False, timeLimit=time_limit, gapRel=0.0, gapAbs=0.0, random_seed=seed)
    with _quiet_stdout():
        solver.createAndConfigureSolver(prob)
    solver.buildSolverModel(prob)
    highs = prob.solverModel
    if start:
        columns = [var for var in prob.variables() if var.name in start]
        highs.setSolution(len(columns), [var.index for var in columns], [start[var.name] for var in columns])
    solver.callSolver(prob)
    status, sol_status = solver.findSolutionValues(prob)
    prob.assignStatus(status, sol_status)
    model_status = highs.getModelStatus()
    raw = highs.modelStatusToString(model_status)
    if model_status == highspy.HighsModelStatus.kOptimal:
        prob.sol_status = pulp.LpSolutionOptimal
    elif prob.sol_status == pulp.LpSolutionOptimal:
        prob.sol_status = pulp.LpSolutionIntegerFeasible
    dual_bound = highs.getInfo().mip_dual_bound
    if not math.isfinite(dual_bound):
        return raw, 0
    # The objective is integral: round the bound up, past floating-point noise only.
    return raw, math.ceil(dual_bound - 1e-6 - 1e-9 * abs(dual_bound))
