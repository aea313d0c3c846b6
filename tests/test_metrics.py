"""Metrics by hand on a small instance."""

import pytest

from layerfit import Instance, Layer, plan_metrics, solve


def test_metrics_by_hand():
    inst = Instance(
        name="m",
        capacity=100,
        layers=[
            Layer("a", weight_bytes=30, activation_bytes=10, buffer_bytes=5, time=0.5),
            Layer("b", weight_bytes=20, activation_bytes=4, time=0.25),
            Layer("c", weight_bytes=50, activation_bytes=8, buffer_bytes=2, time=1.0),
        ],
    )
    m = plan_metrics(inst, [[0, 1], [2]])
    assert m["memory_model"] == "seed"
    first, second = m["partitions"]
    assert (first["bytes"], first["weight_bytes"], first["activation_bytes"], first["buffer_bytes"]) == (69, 50, 14, 5)
    assert (second["bytes"], second["utilization"]) == (60, 0.6)
    assert first["first_layer"] == "a" and first["last_layer"] == "b" and first["num_layers"] == 2
    # One cut, after b: b's activation crosses it.
    assert m["communication"] == {"transfers": 1, "total_bytes": 4, "max_bytes": 4, "cuts": [{"after_layer": "b", "bytes": 4}]}
    b = m["balance"]
    assert b["mean_bytes"] == 64.5
    assert b["variance"] == pytest.approx(20.25)  # population variance of (69, 60)
    assert b["std_bytes"] == pytest.approx(4.5)
    assert b["cv"] == pytest.approx(4.5 / 64.5)
    assert b["max_over_mean"] == pytest.approx(69 / 64.5)
    assert first["time"] == 0.75 and m["max_time"] == 1.0
    assert m["max_utilization"] == 0.69


def test_metrics_are_attached_to_every_plan():
    inst = Instance(name="m", capacity=10, layers=[Layer(f"l{i}", weight_bytes=4) for i in range(5)])
    for method in ("greedy", "dp", "cpsat", "mip"):
        plan = solve(inst, method)
        assert plan.metrics == plan_metrics(inst, plan.partitions)
        assert "max_time" not in plan.metrics  # no layer has a time
