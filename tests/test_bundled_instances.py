"""The bundled instances: each loads, round-trips, and is solved alike by every exact method."""

import json

import pytest

from layerfit import Instance, OptionError, Status, load_instance, solve, validate_plan

from helpers import EXACT, EXACT_IDS, INSTANCES

FILES = sorted(INSTANCES.glob("*.json"))


def test_there_are_at_least_twenty_and_each_has_a_readme_line():
    assert len(FILES) >= 20
    readme = (INSTANCES / "README.md").read_text()
    for path in FILES:
        assert f"`{path.name}`" in readme, path.name


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_loads_and_round_trips(path):
    inst = load_instance(path)
    assert inst.name == path.stem
    assert Instance.from_dict(json.loads(json.dumps(inst.to_dict()))) == inst


def refused_by(inst, method):
    """The option an exact method does not honour on this instance (the capability table, layerfit.methods.capabilities), or None."""
    if inst.edges is not None:
        return "edges" if method == "dp" else None
    if method == "dp":
        return None
    if inst.constraints.structural and inst.free_pool:
        return "constraints"
    if inst.free_pool:
        for option, on in (("activation_recompute", inst.activation_recompute), ("buffer_reuse", inst.buffer_reuse),
                           (r"constraints\.tied", bool(inst.constraints.tied))):
            if on:
                return option
    return None


@pytest.mark.parametrize("method, options", EXACT, ids=EXACT_IDS)
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_exact_methods_agree_and_never_lose_to_greedy(path, method, options):
    inst = load_instance(path)
    refusal = refused_by(inst, method)
    if refusal is not None:  # the method says so, naming the option, rather than plan without it
        with pytest.raises(OptionError, match=rf"^{refusal}: "):
            solve(inst, method, **options)
        return
    plan = solve(inst, method, **options)
    validate_plan(inst, plan)
    if inst.constraints.structural:  # greedy does not honour pins and cut rules; nothing to compare
        assert plan.status is Status.OPTIMAL
        return
    greedy = solve(inst, "greedy")
    validate_plan(inst, greedy)
    reference = solve(inst)  # the default exact method
    assert plan.status is reference.status
    if plan.status is Status.INFEASIBLE:
        assert greedy.status is Status.INFEASIBLE
        return
    assert plan.status is Status.OPTIMAL
    assert (plan.objective, plan.secondary_objective) == (reference.objective, reference.secondary_objective)
    if inst.schedule == "none" and not inst.free_pool:
        # The theorem: greedy's count is optimal whenever a shorter run never costs more (tied
        # weights held once per partition keep that).
        assert greedy.num_partitions == plan.num_partitions
        assert greedy.secondary_objective >= plan.secondary_objective
    else:  # stage memory depends on the schedule, or greedy fills a free pool as listed: more stages, or none
        assert greedy.status is Status.UNKNOWN or greedy.num_partitions >= plan.num_partitions


def test_real_model_parameter_totals():
    totals = {
        "llama-2-7b-h100-hbm": 6_738_415_616,
        "llama-3.1-70b-h100-hbm": 70_553_706_496,
        "gpt2-int8-rtx4090-l2": 124_439_808,
        "bert-large-fp8-a100-l2": 335_141_888,
        "seed-30b-h100-hbm": 30_000_000_000,
    }
    for name, total in totals.items():
        assert load_instance(INSTANCES / f"{name}.json").total_params == total


def test_the_seed_example_on_hbm_is_feasible_and_balanced_by_the_optimum():
    inst = load_instance(INSTANCES / "seed-30b-h100-hbm.json")
    greedy, best = solve(inst, "greedy"), solve(inst)
    assert [len(p) for p in greedy.partitions] == [5, 5, 5, 1]
    assert [len(p) for p in best.partitions] == [4, 4, 4, 4]


def test_a_model_that_fits_in_l2():
    inst = load_instance(INSTANCES / "seed-small-h100-l2.json")
    plan = solve(inst)
    assert plan.status is Status.OPTIMAL and inst.capacity == 52_428_800
    assert plan.metrics["max_utilization"] <= 1.0
