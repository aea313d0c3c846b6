"""``solve(instance, method=...)``: one entry point, the algorithm as a parameter.

Methods
-------
greedy  GreedyLayerPartition, the reference greedy of the methodology, exactly. Its count is optimal on an additive
        chain (layerfit.methods.greedy); its largest partition usually is not.
dp      Exact for chains (layerfit.methods.dp): both objectives, in O(k log n · log max s).
cpsat   OR-Tools CP-SAT model (layerfit.methods.cpsat), warm-started by DP or greedy, bounded by greedy.
mip     The same model in PuLP (layerfit.methods.mip): CBC by default, HiGHS with backend="highs".
auto    The fastest exact method that honours the instance: dp; CP-SAT for DAGs and for free
        pools of more device mixes than the DP tracks.

Which method honours which option is one table, layerfit.methods.capabilities: the refusals
below come from it, and so does the docs' table. solve() checks the options, picks the
method, runs it, and finishes the plan (metrics, and remedies when nothing fits).

Objectives
----------
min_partitions  Fewest partitions, then the smallest largest partition (lexicographic).
min_bottleneck  With ``num_partitions=k``, the smallest largest partition S_max.
min_stage_time  With ``num_partitions=k`` and a ``time`` on every layer, the smallest
                slowest-stage time (on its device's speed), every stage within its memory.
min_utilization With ``num_partitions=k``, the smallest largest share of a stage's own
                device capacity (mixed pools: a 24 GB and an 80 GB GPU balanced by share).
max_kv_tokens   With ``num_partitions=k`` and the instance's ``kv_tokens``, the most tokens of
                KV cache the pipeline serves: the least any stage's free memory buys for its
                own layers (layerfit.methods.kv_tokens). The one objective maximised.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .methods.dp import bottleneck_lower_bound, min_bottleneck, min_partitions, split_to
from .errors import OptionError
from .methods.capabilities import refuse_unless
from .report.explain import explain_oversized, explain_too_few_partitions
from .methods.formulation import BackendResult, formulate
from .methods.greedy import greedy_partition
from .model.instance import Instance
from .report.metrics import plan_metrics
from .placement.placement import Placement
from .report.remedies import remedies
from .model.plan import MAXIMIZED, OBJECTIVES, Plan, Status
from .model.units import format_bytes
from .model.memory import partition_bytes, plan_loads, usable_capacity, with_kv_tokens

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["METHODS", "WARM_STARTS", "solve"]

log = logging.getLogger(__name__)

METHODS = ("auto", "greedy", "dp", "cpsat", "mip")
WARM_STARTS = ("greedy", "dp", "none")
MIP_BACKENDS = ("cbc", "highs")
# CP-SAT runs one search strategy with two workers or fewer and may never prove a bound;
# eight portfolio workers prove these models even on a two-core machine.
DEFAULT_CPSAT_WORKERS = 8


def _check_options(
    instance: object,
    method: object,
    objective: object,
    num_partitions: object,
    time_limit: object,
    seed: object,
    num_workers: object,
    backend: object,
    warm_start: object,
) -> None:
    """Every check of solve()'s arguments, in one place."""
    if not isinstance(instance, Instance):
        raise OptionError(f"instance: expected a layerfit.Instance, got {type(instance).__name__}")
    if method not in METHODS:
        raise OptionError(f"method: unknown method {method!r} (allowed: {', '.join(METHODS)})")
    if objective not in OBJECTIVES:
        raise OptionError(f"objective: unknown objective {objective!r} (allowed: {', '.join(OBJECTIVES)})")
    if time_limit is not None and (
        isinstance(time_limit, bool)
        or not isinstance(time_limit, (int, float))
        or not math.isfinite(time_limit)
        or time_limit <= 0
    ):
        raise OptionError(f"time_limit: must be a positive number of seconds, got {time_limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise OptionError(f"seed: must be a non-negative integer, got {seed!r}")
    if num_workers is not None:
        refuse_unless(method, "num_workers")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise OptionError(f"num_workers: must be a positive integer, got {num_workers!r}")
    if backend is not None:
        refuse_unless(method, "backend")
        if backend not in MIP_BACKENDS:
            raise OptionError(f"backend: unknown MIP backend {backend!r} (allowed: {', '.join(MIP_BACKENDS)})")
    if warm_start is not None:
        refuse_unless(method, "warm_start")
        if warm_start not in WARM_STARTS:
            raise OptionError(f"warm_start: unknown warm start {warm_start!r} (allowed: {', '.join(WARM_STARTS)})")
    if objective == "min_partitions":
        if num_partitions is not None:
            raise OptionError(
                "num_partitions: only with objective 'min_bottleneck' (min_partitions chooses the count)"
            )
    else:
        refuse_unless(method, "fixed_count")
        if num_partitions is None:
            raise OptionError(f"num_partitions: required with objective {objective!r}")
        n = instance.num_layers
        if isinstance(num_partitions, bool) or not isinstance(num_partitions, int) or not 1 <= num_partitions <= n:
            raise OptionError(
                f"num_partitions: must be an integer between 1 and the number of layers ({n}), got {num_partitions!r}"
            )
    if objective in ("min_stage_time", "min_utilization"):
        refuse_unless(method, "stage_objectives", objective=objective)
    if objective == "max_kv_tokens":
        _check_kv_tokens(instance, method)
    if objective == "min_stage_time":
        untimed = [layer.name for i, layer in enumerate(instance.layers) if instance.layer_seconds(i) is None]
        if untimed:
            raise OptionError(f"objective: 'min_stage_time' needs a time (or flops) on every layer; layer {untimed[0]!r} has none")
    if instance.constraints.structural:
        refuse_unless(method, "structural")
    if instance.edges is not None:
        refuse_unless(method, "edges")
        if objective in ("min_stage_time", "min_utilization", "max_kv_tokens"):
            raise OptionError(f"objective: {objective!r} is not planned on a DAG instance in this version")
    _check_model_range(instance, _pick_method(instance, method), objective)
    if instance.free_pool:
        if instance.constraints.structural:
            raise OptionError("constraints: pinned layers, layer counts, cut rules and tied groups kept together are "
                              "not planned on a free device pool in this version")
        if instance.buffer_reuse:
            refuse_unless(method, "free_pool_buffer_reuse", option="buffer_reuse")
        for option, on in (("activation_recompute", instance.activation_recompute),
                           ("constraints.tied", bool(instance.constraints.tied))):
            if on:
                refuse_unless(method, "free_pool_rules", option=option)
        if method == "dp":
            from .methods.pools import MAX_MIXES, device_kinds, mixes

            if mixes(instance) > MAX_MIXES:
                raise OptionError(
                    f"devices: a free pool of {len(instance.devices or ())} devices in {len(device_kinds(instance))} "
                    f"kinds has {mixes(instance):,} mixes of devices, more than the DP tracks ({MAX_MIXES:,}); use "
                    f"method 'cpsat'"
                )


def _check_kv_tokens(instance: Instance, method: object) -> None:
    """What ``max_kv_tokens`` needs: the tokens the KV bytes are for, a KV cache, and a method
    that plans it (CP-SAT: on free pools)."""
    from .model.memory import kv_token_bytes

    if instance.edges is not None:
        raise OptionError("objective: 'max_kv_tokens' is not planned on a DAG instance in this version")
    refuse_unless(method, "kv_tokens")  # type: ignore[arg-type]
    if instance.kv_tokens is None:
        raise OptionError("objective: 'max_kv_tokens' needs the instance's kv_tokens, the tokens its layers' "
                          "kv_cache_bytes hold (from_hf_config sets it: batch × sequence)")
    if not any(kv_token_bytes(instance)):
        raise OptionError("objective: 'max_kv_tokens' needs a KV cache: no layer has kv_cache_bytes")
    if method == "cpsat" and not instance.free_pool:
        raise OptionError("objective: 'max_kv_tokens' on a chain or an ordered pool is planned by method 'dp' "
                          "(exact); 'cpsat' plans it on free device pools")


# The largest byte count a model may hold: CP-SAT's integers are int64 (with room for its sums);
# the MIP backends compute in doubles, exact on integers up to 2^53.
MODEL_RANGE = {"cpsat": 2**62, "mip": 2**53}


def _check_model_range(instance: Instance, method: str, objective: str) -> None:
    """Refuse, before building it, a CP-SAT or MIP model whose numbers its backend cannot hold
    exactly: the most bytes any partition may reach (every layer at once, at the most
    micro-batches), in the models' unit (the sizes' greatest common divisor)."""
    if method not in MODEL_RANGE or objective not in ("min_partitions", "min_bottleneck", "max_kv_tokens"):
        return
    from .model.memory import ample_capacity, byte_unit

    top = ample_capacity(instance)
    if objective == "max_kv_tokens":  # T · K_p reaches a capacity: every device's at most
        top = max(top, sum(d.capacity for d in instance.devices or ()) + instance.capacity)
    limit = MODEL_RANGE[method]
    if top <= limit:
        return
    unit = byte_unit(instance)
    if top // unit <= limit:
        return
    what = "int64 integers" if method == "cpsat" else "doubles, exact to 2^53"
    instead = "'greedy'" if instance.edges is not None else "'dp' (exact, any size)"
    raise OptionError(f"method: {method!r} computes in {what}; a partition of this instance may reach "
                      f"{format_bytes(top)} ({top // unit:.3g} in its unit of {unit:,} B), beyond {limit:.3g}; use "
                      f"method {instead}")


def solve(
    instance: Instance,
    method: str = "auto",
    *,
    objective: str | None = None,
    num_partitions: int | None = None,
    time_limit: float | None = None,
    seed: int = 0,
    num_workers: int | None = None,
    backend: str | None = None,
    warm_start: str | None = None,
    topology: nx.Graph | None = None,
) -> Plan | Placement:
    """Partition ``instance`` into contiguous partitions that each fit its capacity.

    The program (additive chain, sizes s_i, capacity C)::

        min_partitions:  lexmin ( k,  max_j S(P_j) )    s.t.  S(P_j) = Σ_{i∈P_j} s_i ≤ C
        min_bottleneck:  min max_j S(P_j)  over exactly k = num_partitions partitions, S(P_j) ≤ C

    where P_1 … P_k are contiguous, non-empty and cover the layers in order.

    Parameters
    ----------
    instance:
        The :class:`~layerfit.Instance`.
    method:
        ``"auto"`` (default), ``"greedy"``, ``"dp"``, ``"cpsat"`` or ``"mip"``.
    objective:
        ``"min_partitions"`` (default) or ``"min_bottleneck"``. With ``topology``, the
        placement objective: ``"min_bottleneck"`` (default: the slowest boundary's
        transfer) or ``"min_total"``.
    num_partitions:
        k, required by ``min_bottleneck``.
    time_limit:
        Seconds for the CP-SAT/MIP search. On expiry the best plan so far is returned
        FEASIBLE with its bound; UNKNOWN only when there is none.
    seed:
        Random seed of the search (recorded in the plan).
    num_workers:
        CP-SAT workers (default 8). ``num_workers=1`` without a time limit is deterministic.
    backend:
        MIP solver, ``"cbc"`` (default) or ``"highs"``; only with ``method="mip"``.
    warm_start:
        ``"dp"`` (default), ``"greedy"`` or ``"none"``: the plan that hints CP-SAT and
        starts the MIP; only with ``cpsat`` and ``mip``. The model keeps every plan at
        least as good as the warm start, so the DP's optimum leaves the solver only the
        proof (fast); ``"greedy"`` (the seed's plan, split to k partitions for
        ``min_bottleneck``) and ``"none"`` make the search find the optimum itself.
    topology:
        Joint mode (layerfit.placement.joint): choose the partitions and their GPUs together with
        CP-SAT (``method`` ``"auto"`` or ``"cpsat"``), each partition fitting the capacity
        and its GPU's memory; ``num_partitions`` defaults to the fewest that fit. Returns a
        :class:`~layerfit.Placement`, never worse than ``map_plan`` of the DP's plan.

    Returns
    -------
    Plan
        Infeasible inputs give status INFEASIBLE with ``plan.explanation``. With
        ``topology``, a Placement.

    Raises
    ------
    OptionError
        For an unknown method or objective, a backend option without its method, a
        non-positive time limit, and similar misuse.

    Examples
    --------
    >>> from layerfit import Instance, Layer, solve
    >>> inst = Instance(name="demo", capacity=10, layers=[Layer(f"l{i}", weight_bytes=s)
    ...                 for i, s in enumerate([4, 4, 2, 6, 4])])
    >>> plan = solve(inst)
    >>> plan.status.value, plan.partitions, plan.secondary_objective
    ('optimal', [[0, 1, 2], [3, 4]], 10)
    """
    if topology is not None:
        return _solve_joint(instance, method, objective, num_partitions, time_limit, seed, num_workers, backend,
                            warm_start, topology)
    objective = objective or "min_partitions"
    _check_options(instance, method, objective, num_partitions, time_limit, seed, num_workers, backend, warm_start)
    method = _pick_method(instance, method)
    if method == "cpsat" and num_workers is None:
        num_workers = DEFAULT_CPSAT_WORKERS
    if method == "mip" and backend is None:
        backend = "cbc"
    if method in ("cpsat", "mip") and warm_start is None:
        warm_start = "dp"
    finish = _finisher(instance, objective, num_partitions, {
        "objective_name": objective,
        "method": method,
        "instance_name": instance.name,
        "num_layers": instance.num_layers,
        "backend": "cp-sat" if method == "cpsat" else backend,
        "seed": seed,
        "num_workers": num_workers,
        "time_limit": time_limit,
        "num_partitions_requested": num_partitions,
    })
    oversized = explain_oversized(with_kv_tokens(instance, 0) if objective == "max_kv_tokens" else instance)
    if oversized is not None:
        return finish(Status.INFEASIBLE, objective=None, bound=None, explanation=oversized)
    if num_partitions is not None and instance.devices is not None and num_partitions > len(instance.devices):
        # Every method, before any model: each partition needs a device of its own.
        pool = ", ".join(d.name for d in instance.devices)
        return finish(Status.INFEASIBLE, objective=None, bound=None, explanation=(
            f"{num_partitions} partitions need {num_partitions} devices, one each; the pool has "
            f"{len(instance.devices)} ({pool})"))
    search = {"time_limit": time_limit, "seed": seed, "num_workers": num_workers or DEFAULT_CPSAT_WORKERS}
    if objective == "max_kv_tokens":
        from .methods.kv_tokens import solve_kv_tokens

        plan = solve_kv_tokens(instance, method, int(num_partitions), finish,  # type: ignore[arg-type]
                               warm_start=warm_start, **search)
        return _checked_by_dp(instance, plan, objective, num_partitions)
    if instance.edges is not None:
        from .methods.dag import solve_dag

        return solve_dag(instance, method, objective, num_partitions, finish, backend=backend, **search)
    if instance.free_pool:
        from .methods.pools import solve_free_pool

        plan = solve_free_pool(instance, method, objective, num_partitions, finish, warm_start=warm_start,
                               backend=backend, **search)
    elif not _additive_chain(instance) or objective in ("min_stage_time", "min_utilization"):
        if method not in ("cpsat", "mip"):
            return _solve_by_stages(instance, method, objective, num_partitions, finish)
        from .methods.staged_models import solve_staged_model

        plan = solve_staged_model(instance, method, objective, num_partitions, finish, backend=backend or "cbc",
                                  warm_start=warm_start, **search)
    else:
        plan = _solve_chain(instance, method, objective, num_partitions, finish, warm_start=warm_start,
                            backend=backend, **search)
    return _checked_by_dp(instance, plan, objective, num_partitions)


def _checked_by_dp(instance: Instance, plan: Plan, objective: str, num_partitions: int | None) -> Plan:
    """A CP-SAT or MIP plan held against the DP's, where the DP applies (chains, and free pools
    of few enough device mixes): a backend's answer that contradicts the DP is never returned
    as proven.

    The DP's optimum is a proven bound, so the plan's bounds are raised to it. A plan no worse
    than the DP's is then OPTIMAL; a worse one stays FEASIBLE (a time limit's incumbent), unless
    the backend claimed it optimal, or claimed that no plan exists, or gave none: then the
    backend was wrong (CBC has been, on coefficients of 10^10) and the DP's plan is returned,
    the backend's word kept in ``backend_status``.
    """
    if plan.method not in ("cpsat", "mip"):
        return plan
    if instance.free_pool:
        from .methods.pools import MAX_MIXES, mixes

        if mixes(instance) > MAX_MIXES:
            return plan
    reference = solve(instance, "dp", objective=objective, num_partitions=num_partitions)
    lexicographic = objective == "min_partitions"

    def key(p: Plan) -> tuple:  # type: ignore[type-arg]  # smaller is better
        if objective in MAXIMIZED:
            return (-p.objective,)  # type: ignore[operator]
        return (p.objective, p.secondary_objective) if lexicographic else (p.objective,)

    if not reference.status.has_plan:
        return plan  # the DP proves there is none; a backend's plan would fail validate_plan
    contradicted = None
    if not plan.status.has_plan:
        contradicted = f"{plan.backend_status}: {plan.status}" if plan.backend_status else str(plan.status)
    elif key(plan) > key(reference) and (plan.status is Status.OPTIMAL or plan.time_limit is None):
        contradicted = f"{plan.backend_status}: {plan.status}, {'/'.join(str(v) for v in key(plan))}"
    if contradicted is not None:
        return dataclasses.replace(
            reference, method=plan.method, backend=plan.backend, seed=plan.seed, num_workers=plan.num_workers,
            time_limit=plan.time_limit, solve_time_s=plan.solve_time_s,
            backend_status=f"{plan.backend_status} (contradicted by the DP)",
            explanation=f"the {plan.method} backend's answer ({contradicted}) contradicts the exact DP's optimum; the "
                        f"DP's plan is returned",
        )
    if lexicographic:
        bounds = {"bound": reference.objective, "secondary_bound": reference.secondary_objective
                  if plan.objective == reference.objective else plan.secondary_bound}
    else:
        bounds = {"bound": reference.objective}
    raised = dataclasses.replace(plan, **bounds)
    optimal = key(plan) == key(reference)
    return dataclasses.replace(raised, status=Status.OPTIMAL if optimal else Status.FEASIBLE)


def _pick_method(instance: Instance, method: str) -> str:
    """``"auto"``: the fastest exact method that honours the instance — the DP, or CP-SAT for a
    DAG and for a free pool of more device mixes than the DP tracks."""
    if method != "auto":
        return method
    if instance.edges is not None:
        return "cpsat"
    if instance.free_pool:
        from .methods.pools import MAX_MIXES, mixes

        return "cpsat" if mixes(instance) > MAX_MIXES else "dp"
    return "dp"


def _additive_chain(instance: Instance) -> bool:
    """The methodology's own model: a chain whose partitions' bytes are sums of layer sizes, one
    capacity, no placement rules (greedy's count is optimal here; the fast DP applies)."""
    return not (instance.schedule != "none" or instance.devices is not None or instance.buffer_reuse
                or instance.activation_recompute or instance.constraints.tied or instance.constraints.structural)


def _finisher(instance: Instance, objective: str, num_partitions: int | None, common: dict[str, object]):  # type: ignore[no-untyped-def]
    """finish(status, partitions, **fields): the Plan, with its metrics, its time since now, and
    the remedies appended to an infeasible plan's explanation."""
    started = time.perf_counter()

    def finish(status: Status, partitions: Sequence[Sequence[int]] = (), **fields: object) -> Plan:
        parts = [list(p) for p in partitions]
        tokens = fields.pop("kv_tokens", None)  # max_kv_tokens: the stages hold the plan's tokens
        if status is Status.INFEASIBLE and fields.get("explanation"):
            k = None if objective == "min_partitions" else num_partitions
            # max_kv_tokens: what would hold the model at all (the cache takes what is left).
            bare = with_kv_tokens(instance, 0) if objective == "max_kv_tokens" else instance
            fields["explanation"] = "\n".join([str(fields["explanation"]), *remedies(bare, k)])
        return Plan(
            status=status,
            partitions=parts,
            metrics=plan_metrics(instance, parts, fields.get("devices"), kv_tokens=tokens),  # type: ignore[arg-type]
            solve_time_s=time.perf_counter() - started,
            **common,  # type: ignore[arg-type]
            **fields,  # type: ignore[arg-type]
        )

    return finish


def _solve_chain(instance: Instance, method: str, objective: str, num_partitions: int | None, finish, *,  # type: ignore[no-untyped-def]
                 warm_start: str | None, backend: str | None, time_limit: float | None, seed: int,
                 num_workers: int) -> Plan:
    """The additive chain: greedy's count is optimal (layerfit.methods.greedy); the DP is exact
    for both objectives; CP-SAT and the MIP solve the shared formulation."""
    sizes = instance.sizes
    capacity = usable_capacity(instance)
    greedy_plan = greedy_partition(sizes, capacity)
    fewest = len(greedy_plan)  # optimal by the stay-ahead theorem (layerfit.methods.greedy)

    if objective == "min_partitions":
        if method == "greedy":
            largest = max(plan_loads(instance, greedy_plan))
            lower = bottleneck_lower_bound(sizes, fewest)
            status = Status.OPTIMAL if largest == lower else Status.FEASIBLE
            return finish(
                status, greedy_plan, objective=fewest, bound=fewest,
                secondary_objective=largest, secondary_bound=lower,
            )
        if method == "dp":
            count, value, partitions = min_partitions(sizes, capacity)  # type: ignore[misc]
            return finish(
                Status.OPTIMAL, partitions, objective=count, bound=count,
                secondary_objective=value, secondary_bound=value,
            )
        hint = _warm_start(warm_start, sizes, fewest, greedy_plan)
        result = _run_model(method, sizes, fewest, capacity, hint, time_limit, seed, num_workers, backend)
        return _model_plan(finish, instance, result, hint, fewest, lexicographic=True)

    k = int(num_partitions)  # type: ignore[arg-type]  # checked: required with min_bottleneck
    if k < fewest:
        return finish(
            Status.INFEASIBLE, objective=None, bound=None,
            explanation=explain_too_few_partitions(instance, k, fewest),
        )
    if method == "dp":
        value, partitions = min_bottleneck(sizes, k)
        return finish(Status.OPTIMAL, partitions, objective=value, bound=value)
    hint = _warm_start(warm_start, sizes, k, greedy_plan)
    result = _run_model(method, sizes, k, capacity, hint, time_limit, seed, num_workers, backend)
    return _model_plan(finish, instance, result, hint, k, lexicographic=False)


def _solve_joint(instance, method, objective, num_partitions, time_limit, seed, num_workers, backend,  # type: ignore[no-untyped-def]
                 warm_start, topology) -> Placement:
    """solve(..., topology=...): partitions and GPUs together (layerfit.placement.joint)."""
    from .placement.placement import MAP_OBJECTIVES

    refuse_unless(method, "topology")
    objective = objective or "min_bottleneck"
    if objective not in MAP_OBJECTIVES:
        raise OptionError(
            f"objective: with a topology, one of {', '.join(MAP_OBJECTIVES)} (transfer time), got {objective!r}"
        )
    for name, value in (("backend", backend), ("warm_start", warm_start)):
        if value is not None:
            raise OptionError(f"{name}: not an option of the joint model (topology=...)")
    _check_options(instance, "cpsat", "min_partitions", None, time_limit, seed, num_workers, None, None)
    beyond = [name for name, on in (
        ("schedule", instance.schedule != "none"), ("devices", instance.devices is not None),
        ("buffer_reuse", instance.buffer_reuse), ("activation_recompute", instance.activation_recompute),
        ("constraints", instance.constraints != type(instance.constraints)(reserve=0)),
        ("edges", instance.edges is not None),
    ) if on]
    if beyond:
        raise OptionError(f"topology: the joint model plans the seed's additive chain in this version, not "
                          f"{beyond[0]}; plan with solve() and place the plan with map_plan()")
    if num_partitions is None:
        oversized = explain_oversized(instance)
        if oversized is not None:
            raise OptionError(f"num_partitions: cannot default to the fewest partitions: {oversized.splitlines()[0]}")
        num_partitions = len(greedy_partition(instance.sizes, usable_capacity(instance)))
    elif isinstance(num_partitions, bool) or not isinstance(num_partitions, int) or not 1 <= num_partitions <= instance.num_layers:
        raise OptionError(
            f"num_partitions: must be an integer between 1 and the number of layers ({instance.num_layers}), "
            f"got {num_partitions!r}"
        )
    from .placement.joint import solve_joint

    return solve_joint(instance, topology, num_partitions=num_partitions, objective=objective, time_limit=time_limit,
                       seed=seed, num_workers=num_workers or DEFAULT_CPSAT_WORKERS)


def _solve_by_stages(instance: Instance, method: str, objective: str, num_partitions: int | None, finish) -> Plan:  # type: ignore[no-untyped-def]
    """Beyond the additive chain (schedule memory, buffer reuse, constraints, an ordered pool):
    exact by the reachable-cut probe of layerfit.methods.stages; greedy walks the same memory model."""
    from .methods.stages import greedy_walk, min_stage_bottleneck, min_stage_time, min_stage_utilization, min_stages

    fewest = min_stages(instance)
    if objective in ("min_bottleneck", "min_stage_time", "min_utilization"):
        k = int(num_partitions)  # type: ignore[arg-type]
        optimum = {"min_bottleneck": min_stage_bottleneck, "min_stage_time": min_stage_time,
                   "min_utilization": min_stage_utilization}[objective]
        solved = optimum(instance, k)
        if solved is None:
            why = f"{k} stages cannot hold the model" + (
                f" under {instance.schedule} with {instance.micro_batches} micro-batches" if instance.schedule != "none" else ""
            ) + (" within its constraints" if instance.constraints.structural else "")
            why += f"; the fewest that can is {fewest[0]}" if fewest else "; no number of stages can"
            return finish(Status.INFEASIBLE, objective=None, bound=None, explanation=why)
        value, parts = solved
        if objective == "min_stage_time":
            value = max(instance.stage_time(p, j) for j, p in enumerate(parts))
        elif objective == "min_utilization":
            value = value * 1e-9
        return finish(Status.OPTIMAL, parts, objective=value, bound=value)
    if fewest is None:
        if instance.devices is not None and instance.schedule == "none" and not instance.constraints.structural:
            why = (f"the device pool ({', '.join(f'{d.name} {format_bytes(d.capacity)}' for d in instance.devices)}) "
                   f"cannot hold the model with partition j on device j; {format_bytes(instance.total_bytes)} in all")
        elif instance.schedule == "none":
            why = ("no plan satisfies the constraints (pinned layers, layers per partition, cut rules) or the device "
                   "pool within the capacity; relax one of them or add capacity")
        else:
            why = (f"under {instance.schedule} with {instance.micro_batches} micro-batches no number of stages fits "
                   f"the capacity: the first stages hold too many micro-batches' activations.")
        return finish(Status.INFEASIBLE, objective=None, bound=None, explanation=why)
    count = fewest[0]
    best, best_parts = min_stage_bottleneck(instance, count)  # type: ignore[misc]
    if method != "greedy":
        return finish(Status.OPTIMAL, best_parts, objective=count, bound=count,
                      secondary_objective=best, secondary_bound=best)
    # The seed's greedy cannot know its stage's position: it plans every stage for m micro-batches.
    parts = greedy_walk(instance)
    if parts is None:
        planned = (f", each stage planned for the {instance.micro_batches} micro-batches the busiest holds"
                   if instance.schedule != "none" else "")
        return finish(Status.UNKNOWN, objective=None, bound=count, explanation=(
            f"greedy (filling the stages in order{planned}) found no plan; the exact method 'dp' finds {count} stages"))
    k = len(parts)
    largest = max(partition_bytes(instance, p, j, k) for j, p in enumerate(parts))
    lower = min_stage_bottleneck(instance, k)
    secondary_bound = lower[0] if lower is not None else largest
    status = Status.OPTIMAL if k == count and largest == secondary_bound else Status.FEASIBLE
    return finish(status, parts, objective=k, bound=count, secondary_objective=largest,
                  secondary_bound=min(secondary_bound, largest))


def _warm_start(kind: str | None, sizes: Sequence[int], k: int, greedy_plan: list[list[int]]) -> list[list[int]] | None:
    """The plan that hints the exact models: greedy's (split to k partitions), DP's, or none."""
    if kind == "greedy":
        return split_to(greedy_plan, sizes, k)
    if kind == "dp":
        return min_bottleneck(sizes, k)[1]
    return None


def _run_model(
    method: str,
    sizes: Sequence[int],
    k: int,
    capacity: int,
    hint: list[list[int]] | None,
    time_limit: float | None,
    seed: int,
    num_workers: int | None,
    backend: str | None,
) -> BackendResult | None:
    """Build the shared formulation and run it on CP-SAT or PuLP (imported lazily)."""
    form = formulate(sizes, k, capacity, hint)
    if form is None:
        return None
    log.debug("%s model: %d layers, %d partitions, %d assignment variables", method, len(sizes), k, form.num_assignment_vars)
    if method == "cpsat":
        from .methods import cpsat

        return cpsat.solve_bottleneck(form, time_limit=time_limit, seed=seed, num_workers=num_workers or 1)
    from .methods import mip

    return mip.solve_bottleneck(form, backend=backend or "cbc", time_limit=time_limit, seed=seed)


def _model_plan(finish, instance, result, hint, k, *, lexicographic: bool) -> Plan:  # type: ignore[no-untyped-def]
    """Turn a backend result into a plan, never losing the warm start."""
    def objectives(value: int, bound: int) -> dict[str, object]:
        if lexicographic:
            return {"objective": k, "bound": k, "secondary_objective": value, "secondary_bound": bound}
        return {"objective": value, "bound": bound}

    if result is None:  # the greedy bounds left a layer no partition: cannot happen with k ≥ fewest
        return finish(Status.INFEASIBLE, objective=None, bound=None,
                      explanation=f"no plan with {k} partitions fits (greedy bounds)")
    partitions = result.partitions
    note = None
    if partitions is None and hint is not None:
        partitions = hint
        note = f"the backend returned no plan ({result.backend_status}); the warm start is returned"
    if partitions is None:
        fields = objectives(0, result.bound)
        fields["objective"] = None
        if lexicographic:
            fields["secondary_objective"] = None
        return finish(Status.UNKNOWN, backend_status=result.backend_status,
                      explanation="no plan found within the time limit", **fields)
    value = max(plan_loads(instance, partitions))
    bound = min(result.bound, value)
    status = Status.OPTIMAL if bound == value else Status.FEASIBLE
    return finish(status, partitions, backend_status=result.backend_status, explanation=note,
                  **objectives(value, bound))
