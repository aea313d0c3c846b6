"""solve() rejects misuse with one clear message naming the option and the value."""

import pytest

from layerfit import Device, Instance, Layer, OptionError, solve

from helpers import make_instance

INST = make_instance([4, 4, 2, 6, 4], 10)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("simplex",), {}, r"^method: unknown method 'simplex' \(allowed: auto, greedy, dp, cpsat, mip\)$"),
        ((), {"objective": "fastest"}, r"^objective: unknown objective 'fastest' \(allowed: min_partitions, min_bottleneck, min_stage_time, min_utilization, max_kv_tokens\)$"),
        (("dp",), {"backend": "highs"}, r"^backend: an option of method 'mip', not of method 'dp'$"),
        (("auto",), {"backend": "cbc"}, r"^backend: an option of method 'mip', not of method 'auto'$"),
        (("mip",), {"backend": "gurobi"}, r"^backend: unknown MIP backend 'gurobi' \(allowed: cbc, highs\)$"),
        (("mip",), {"num_workers": 4}, r"^num_workers: an option of method 'cpsat', not of method 'mip'$"),
        (("cpsat",), {"num_workers": 0}, r"^num_workers: must be a positive integer, got 0$"),
        (("dp",), {"warm_start": "greedy"}, r"^warm_start: an option of methods 'cpsat' and 'mip', not of method 'dp'$"),
        (("cpsat",), {"warm_start": "lucky"}, r"^warm_start: unknown warm start 'lucky' \(allowed: greedy, dp, none\)$"),
        ((), {"time_limit": 0}, r"^time_limit: must be a positive number of seconds, got 0$"),
        ((), {"time_limit": -1.5}, r"^time_limit: must be a positive number of seconds, got -1.5$"),
        ((), {"time_limit": float("nan")}, r"^time_limit: must be a positive number of seconds, got nan$"),
        ((), {"time_limit": "10"}, r"^time_limit: must be a positive number of seconds, got '10'$"),
        ((), {"seed": -1}, r"^seed: must be a non-negative integer, got -1$"),
        ((), {"num_partitions": 2}, r"^num_partitions: only with objective 'min_bottleneck'"),
        ((), {"objective": "min_bottleneck"}, r"^num_partitions: required with objective 'min_bottleneck'$"),
        ((), {"objective": "min_bottleneck", "num_partitions": 6},
         r"^num_partitions: must be an integer between 1 and the number of layers \(5\), got 6$"),
        ((), {"objective": "min_bottleneck", "num_partitions": 0},
         r"^num_partitions: must be an integer between 1 and the number of layers \(5\), got 0$"),
        (("greedy",), {"objective": "min_bottleneck", "num_partitions": 2},
         r"^method: 'greedy' \(the seed algorithm\) chooses its own count; use objective 'min_partitions'$"),
    ],
)
def test_bad_options(args, kwargs, message):
    with pytest.raises(OptionError, match=message):
        solve(INST, *args, **kwargs)


def test_instance_must_be_an_instance():
    with pytest.raises(OptionError, match=r"^instance: expected a layerfit.Instance, got dict$"):
        solve({"capacity": 1})


def test_device_pools_are_planned_by_the_models_or_refused_not_ignored():
    ordered = Instance(name="p", capacity=10, layers=[Layer("a", weight_bytes=1)], devices=(Device("g0", 10),))
    assert solve(ordered, "mip").status.value == "optimal" == solve(ordered).status.value
    free = Instance(name="p", capacity=10, layers=[Layer("a", weight_bytes=1)], devices=(Device("g0", 10),),
                    device_order="free", activation_recompute=True)
    with pytest.raises(OptionError, match=r"^activation_recompute: on a free device pool planned by method 'dp'"):
        solve(free, "mip")


def test_settings_are_recorded():
    plan = solve(INST, "cpsat", time_limit=5, seed=3)
    assert (plan.seed, plan.num_workers, plan.time_limit, plan.backend) == (3, 8, 5, "cp-sat")
    plan = solve(INST, "mip", backend="highs")
    assert (plan.backend, plan.num_workers) == ("highs", None)
    assert solve(INST, "mip").backend == "cbc"


def test_single_worker_cpsat_is_deterministic():
    import random

    rng = random.Random(0)
    sizes = [rng.randint(1, 10**6) for _ in range(300)]
    inst = make_instance(sizes, max(sizes) * 4)
    plans = [solve(inst, "cpsat", num_workers=1, warm_start="none", seed=5) for _ in range(2)]
    assert plans[0].partitions == plans[1].partitions
    assert plans[0].status.value == "optimal"
