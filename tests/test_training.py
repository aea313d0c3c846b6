"""Training state: gradients and optimizer state per parameter, in every method's plans."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfit import Instance, InstanceError, Layer, Status, Training, load_instance, solve, validate_plan

from helpers import EXACT, EXACT_IDS, INSTANCES, oracle


def one_layer(dtype, training, params=1000):
    return Instance(name="t", capacity=10**9, dtype=dtype, training=training, layers=[Layer("a", params=params)])


@pytest.mark.parametrize(
    "dtype, training, total_per_param",
    [
        ("bf16", Training("adam"), 16),  # 2 weights + 2 gradients + 4 master + 4 + 4 moments
        ("bf16", Training("adam", master_weights=False), 12),
        ("fp32", Training("adam"), 16),  # 4 + 4 gradients + 8 moments, no master copy
        ("bf16", Training("sgd"), 12),  # 2 + 2 + 4 master + 4 momentum
        ("bf16", Training("none"), 4),  # weights and gradients
        ("fp16", Training(bytes_per_param=16), 16),
        ("bf16", None, 2),
    ],
)
def test_bytes_per_parameter(dtype, training, total_per_param):
    inst = one_layer(dtype, training)
    assert inst.sizes == (1000 * total_per_param,)
    fp = inst.footprint(0)
    assert fp.weight == 1000 * (4 if dtype == "fp32" else 2)
    assert fp.training_state == fp.total - fp.weight


def test_breakdown_in_the_metrics_and_json_round_trip():
    inst = Instance.from_dict({"name": "t", "capacity": "100GB", "dtype": "bf16", "training": {"optimizer": "adam"},
                               "layers": [{"name": f"l{i}", "params": 10**9} for i in range(4)]})
    plan = solve(inst)
    validate_plan(inst, plan)
    row = plan.metrics["partitions"][0]
    assert row["training_state_bytes"] == row["bytes"] - row["weight_bytes"] == 14 * 10**9 * row["num_layers"]
    assert Instance.from_dict(inst.to_dict()) == inst


@pytest.mark.parametrize(
    "training, message",
    [
        ({"optimizer": "adamw"}, r"^training\.optimizer: unknown optimizer 'adamw' \(allowed: none, sgd, adam\)$"),
        ({"optimizer": "sgd", "bytes_per_param": 16}, r"^training: give either bytes_per_param or optimizer/master_weights, not both$"),
        ({"bytes_per_param": -1}, r"^training\.bytes_per_param: expected a non-negative number, got -1$"),
        ({"bytes_per_param": 1}, r"^training\.bytes_per_param: 1 is less than the weights' own 2 bytes per parameter \(layer 'a'\)$"),
        ({"master_weights": "yes"}, r"^training\.master_weights: expected true or false, got 'yes'$"),
        ({"momentum": 0.9}, r"^training: unknown key 'momentum' \(allowed: optimizer, master_weights, bytes_per_param\)$"),
    ],
)
def test_bad_training_options(training, message):
    with pytest.raises(InstanceError, match=message):
        Instance.from_dict({"capacity": 10**9, "dtype": "bf16", "training": training, "layers": [{"name": "a", "params": 10}]})


def test_training_state_needs_params():
    with pytest.raises(InstanceError, match=r"^layers\[0\]\.params: layer 'a' has weights but no params"):
        Instance(name="t", capacity=100, training=Training(), layers=[Layer("a", weight_bytes=10)])


@st.composite
def training_instances(draw):
    n = draw(st.integers(1, 7))
    params = draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
    training = draw(st.sampled_from([Training("adam"), Training("sgd"), Training("none"), Training(bytes_per_param=5)]))
    inst = Instance(name="t", capacity=1, dtype="bf16", training=training,
                    layers=[Layer(f"l{i}", params=p) for i, p in enumerate(params)])
    capacity = draw(st.integers(max(inst.sizes), sum(inst.sizes)))
    return Instance(name="t", capacity=capacity, dtype="bf16", training=training, layers=inst.layers)


@pytest.mark.parametrize("method, options", EXACT, ids=EXACT_IDS)
@settings(max_examples=30)
@given(inst=training_instances())
def test_every_method_is_exact_with_training_state(method, options, inst):
    plan = solve(inst, method, **options)
    validate_plan(inst, plan)
    assert plan.status is Status.OPTIMAL
    assert (plan.objective, plan.secondary_objective) == oracle(inst)["lexicographic"]


def test_the_bundled_training_instance_beats_greedy_on_balance():
    inst = load_instance(INSTANCES / "llama-2-7b-train-adam-h100-hbm.json")
    greedy, best = solve(inst, "greedy"), solve(inst)
    assert greedy.num_partitions == best.num_partitions == 3
    assert best.secondary_objective < greedy.secondary_objective
    assert inst.total_params == 6_738_415_616
