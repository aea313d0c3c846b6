"""Plans: JSON round-trip, the gap formula, and validate_plan catching every broken rule."""

import dataclasses
import json

import pytest

from layerfit import Plan, PlanError, Status, solve, validate_plan

from helpers import make_instance

INST = make_instance([4, 4, 2, 6, 4], 10, activations=[1, 2, 1, 3, 1])


@pytest.mark.parametrize("method", ["greedy", "dp", "cpsat", "mip"])
def test_round_trip_through_json(method):
    plan = solve(INST, method)
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    validate_plan(INST, again)


def test_round_trip_of_an_infeasible_plan():
    inst = make_instance([20], 10)
    plan = solve(inst)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_status_is_a_string_enum():
    assert Status.OPTIMAL == "optimal" and str(Status.FEASIBLE) == "feasible"
    assert solve(INST).to_dict()["status"] == "optimal"


def test_gap_formula():
    plan = solve(INST, objective="min_bottleneck", num_partitions=3)
    assert plan.gap == 0.0
    loose = dataclasses.replace(plan, status=Status.FEASIBLE, bound=plan.objective * 0.75)
    assert loose.gap == pytest.approx(0.25)
    lex = solve(INST, "greedy")
    open_balance = dataclasses.replace(lex, secondary_objective=10, secondary_bound=8)
    assert open_balance.gap == pytest.approx(0.2)


def broken(**changes):
    return dataclasses.replace(solve(INST), **changes)


@pytest.mark.parametrize(
    "plan, message",
    [
        (broken(partitions=[[0, 1, 2], [4, 3]]), r"^partition 1: expected layer 3 next \(contiguous, in order\), got layer 4$"),
        (broken(partitions=[[0, 1, 2], [], [3, 4]]), r"^partition 1 is empty$"),
        (broken(partitions=[[0, 1, 2], [3]]), r"^the partitions cover layers 0\.\.3, the instance has 5$"),
        (broken(partitions=[[0, 1, 2, 3], [4]]), r"^partition 0 holds 16 B, over the capacity of 10 B by 6 B$"),
        (broken(objective=3), r"^objective 3 is not the number of partitions \(2\)$"),
        (broken(secondary_objective=9), r"^secondary objective 9 is not the largest partition \(10 B\)$"),
        (broken(bound=3), r"^bound 3 exceeds the plan's value 2$"),
        (broken(secondary_bound=9), r"^status optimal but objective 2 / bound 2, secondary 10 / bound 9$"),
        (broken(num_layers=4), r"^plan is for 4 layers, the instance has 5$"),
        (broken(status=Status.INFEASIBLE), r"^a plan with status infeasible must have no partitions, it has 2$"),
        (broken(status=Status.INFEASIBLE, partitions=[], explanation=None), r"^an infeasible plan must carry an explanation$"),
        (broken(metrics={}), r"^metrics\.memory_model does not match the partitions: None, recomputed 'seed'$"),
        (broken(num_partitions_requested=3), r"^3 partitions were requested, the plan has 2$"),
    ],
)
def test_validate_plan_names_the_broken_rule(plan, message):
    with pytest.raises(PlanError, match=message):
        validate_plan(INST, plan)


def test_metrics_that_do_not_match_are_caught():
    plan = solve(INST)
    metrics = json.loads(json.dumps(plan.metrics))
    metrics["communication"]["total_bytes"] += 1
    with pytest.raises(PlanError, match=r"^metrics\.communication does not match the partitions"):
        validate_plan(INST, dataclasses.replace(plan, metrics=metrics))


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], r"^plan: expected an object, got \[\]$"),
        ({**solve(INST).to_dict(), "colour": 1}, r"^plan: unknown key 'colour'$"),
        ({k: v for k, v in solve(INST).to_dict().items() if k != "partitions"}, r"^plan\.partitions: missing$"),
        ({**solve(INST).to_dict(), "status": "great"}, r"^plan\.status: unknown status 'great' \(allowed: optimal, feasible, infeasible, unknown\)$"),
        ({**solve(INST).to_dict(), "partitions": [[0, "1"]]}, r"^plan\.partitions: expected a list of lists of layer indices"),
        ({**solve(INST).to_dict(), "format_version": 7}, r"^plan\.format_version: expected 1, got 7$"),
    ],
)
def test_from_dict_rejects_malformed_plans(raw, message):
    with pytest.raises(PlanError, match=message):
        Plan.from_dict(raw)
