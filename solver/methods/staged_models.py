"""CP-SAT and MIP beyond the additive chain: pipeline schedules (stage p of k holds f_p
micro-batches' activations), ordered device pools (partition p on device p, within its
capacity), buffer reuse, activation recomputation and tied weights (linear with auxiliary
variables, :func:`layerfit.methods.formulation.extra_terms`) and the structural rules — pins, layers
per partition, cut rules, tied groups kept together (:func:`layerfit.methods.formulation.add_rules`).

For a fixed k the chain model of :mod:`layerfit.methods.cpsat` and :mod:`layerfit.methods.mip` holds with
position-dependent weights, layer i weighing fixed_i + f_p · act_i in partition p, and a
capacity per partition (:func:`layerfit.methods.formulation.formulate`). The count is not greedy's
here (greedy cannot know its stage's place), so ``min_partitions`` proves every smaller k
infeasible — by the greedy bounds or by the backend — before it minimises the largest
partition at the first k that has a plan; with the DP's warm start (the default) the DP's
fewest count, itself exact, is taken and the model minimises the largest partition there.
"""

from __future__ import annotations

from .count_search import Attempt, deadline, search_counts
from .formulation import formulate
from ..model.instance import Instance
from ..model.plan import Status
from ..model.memory import boundary_bytes, capacity_at, in_flight, layer_parts, usable_capacity

__all__ = ["solve_staged_model"]


def solve_staged_model(instance: Instance, method: str, objective: str, k: int | None, finish, *,  # type: ignore[no-untyped-def]
                       time_limit: float | None, seed: int, num_workers: int, backend: str,
                       warm_start: str | None):
    """solve() with ``cpsat`` or ``mip`` on an instance with any of this module's options."""
    from .stages import greedy_walk, min_stage_bottleneck, min_stages

    fixed, acts, reused = layer_parts(instance)  # held once; per micro-batch; the workspace when reused
    options = {
        "peaks": reused if instance.buffer_reuse else None,
        "recompute": instance.activation_recompute,
        "boundary": [boundary_bytes(instance, i) for i in range(instance.num_layers)],
        "tied": [(members, shared.total) for members, shared in instance.tied_groups],
    }
    # The structural rules (pins resolved per count below).
    index = {layer.name: i for i, layer in enumerate(instance.layers)}
    c = instance.constraints
    closed = {index[name] for name in c.no_cut_after}
    for group, (members, _) in zip(c.tied, instance.tied_groups):
        if group.mode == "together":
            closed.update(range(members[0], members[-1]))
    rules = {"max_layers": c.max_layers_per_partition, "min_layers": c.min_layers_per_partition,
             "no_cut_after": sorted(closed), "must_cut_after": sorted(index[name] for name in c.must_cut_after)}
    # Greedy's walk ignores the structural rules: then it is neither a start nor a bound.
    walked = greedy_walk(instance) if warm_start == "greedy" and not instance.constraints.structural else None
    left = deadline(time_limit)

    def warm(count: int) -> list[list[int]] | None:
        if warm_start in (None, "dp"):
            solved = min_stage_bottleneck(instance, count)
            return None if solved is None else solved[1]
        if warm_start == "greedy" and walked is not None and len(walked) == count:
            return walked
        return None

    def run(form):  # type: ignore[no-untyped-def]
        if method == "cpsat":
            from . import cpsat

            return cpsat.solve_bottleneck(form, time_limit=left(), seed=seed, num_workers=num_workers)
        from . import mip

        return mip.solve_bottleneck(form, backend=backend, time_limit=left(), seed=seed)

    if objective == "min_bottleneck":
        counts = [int(k)]  # type: ignore[arg-type]
    elif warm_start in (None, "dp"):
        # The DP's fewest count is proven (layerfit.methods.stages): the model is left the balance.
        fewest = min_stages(instance)
        if fewest is None:
            return finish(Status.INFEASIBLE, objective=None, bound=None,
                          explanation="no number of stages holds the model within its capacity and rules (proven by "
                                      "the exact stage probe that warm-starts the model)")
        counts = [fewest[0]]
    else:  # the model proves the count itself: every smaller one infeasible
        counts = list(range(1, (len(walked) if walked is not None else instance.max_partitions) + 1))
    def attempt(count: int, hint) -> Attempt:  # type: ignore[no-untyped-def]
        pins = [(index[name], c.resolve_pin(where, count)) for name, where in c.pinned]
        form = None if any(not 0 <= p < count for _, p in pins) else formulate(
            fixed, count, usable_capacity(instance), hint[0] if hint else None, acts=acts,
            flights=[in_flight(instance, p, count) for p in range(count)],
            caps=[capacity_at(instance, p) for p in range(count)], pins=pins, **options, **rules)
        if form is None:  # a pin out of range, or the greedy bounds leave some layer no partition
            return Attempt("INFEASIBLE (bounds)", None, 0, True)
        result = run(form)
        return Attempt(result.backend_status, result.partitions, result.bound, result.proven_infeasible)

    def hint_for(count: int):  # type: ignore[no-untyped-def]
        parts = warm(count)
        return None if parts is None else (parts, None)

    what = f"{k} stages" if objective == "min_bottleneck" else "any number of stages"
    return search_counts(instance, objective, counts, attempt, hint_for, finish,
                         clock=left,
                         infeasible_why=f"no plan with {what} fits (proven by the {method} model and its greedy "
                                        f"bounds)")
