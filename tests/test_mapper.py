"""map_plan against brute force, capacity-aware placement, clusters against their bound."""

import itertools
import json
import random

import pytest

from layerfit import Instance, Layer, OptionError, Placement, Status, load_topology, map_plan, solve
from layerfit.placement.topology import gpus, link


def chain_instance(boundary_bytes, part_bytes=None, capacity="2GB"):
    """One layer per partition: layer j's activation is boundary j's bytes."""
    n = len(boundary_bytes) + 1
    part_bytes = part_bytes or [10**6 + (boundary_bytes[j] if j < n - 1 else 0) for j in range(n)]
    layers = [Layer(f"l{j}", weight_bytes=part_bytes[j] - (boundary_bytes[j] if j < n - 1 else 0),
                    activation_bytes=boundary_bytes[j] if j < n - 1 else 0) for j in range(n)]
    inst = Instance(name="chain", capacity=capacity, layers=layers)
    return inst, solve(inst, objective="min_bottleneck", num_partitions=n)


def brute_force(topology, cuts, objective):
    best = None
    for perm in itertools.permutations(gpus(topology), len(cuts) + 1):
        times = []
        for j, nbytes in enumerate(cuts):
            _, bw, lat = link(topology, perm[j], perm[j + 1])
            times.append(lat + nbytes / bw)
        value = max(times) if objective == "min_bottleneck" else sum(times)
        best = value if best is None else min(best, value)
    return best


@pytest.mark.parametrize("objective", ["min_bottleneck", "min_total"])
@pytest.mark.parametrize("preset", ["dgx1-v100", "pcie-6gpu"])
def test_exact_against_all_permutations(preset, objective):
    topology = load_topology(preset)
    count = len(gpus(topology))
    for seed in range(4):
        rng = random.Random(seed)
        cuts = [rng.randint(1, 10**9) for _ in range(rng.randint(count - 3, count - 1))]
        inst, plan = chain_instance(cuts, [10**9 + 10**6] * (len(cuts) + 1))
        placement = map_plan(inst, plan, topology, objective)
        assert placement.status is Status.OPTIMAL and placement.method == "subset-dp"
        assert len(set(placement.devices)) == len(placement.devices)
        assert placement.objective == pytest.approx(brute_force(topology, cuts, objective), rel=1e-12)
        assert placement.naive_ratio >= 1 - 1e-12
        times = [b["time"] for b in placement.boundaries]
        assert placement.objective == pytest.approx(max(times) if objective == "min_bottleneck" else sum(times))


def test_the_big_cut_goes_on_the_fat_link():
    inst, plan = chain_instance([10**9, 10**6, 10**6])
    placement = map_plan(inst, plan, load_topology("dgx1-v100"))
    assert placement.boundaries[0]["kind"] == "NV2"
    assert placement.naive_ratio == pytest.approx(2.0, rel=1e-3)


def test_ties_keep_rank_order():
    inst, plan = chain_instance([10**6] * 7)
    assert map_plan(inst, plan, load_topology("dgx-h100")).devices == [f"GPU{i}" for i in range(8)]


def test_capacity_aware_on_a_mixed_pool(tmp_path):
    topology = load_topology("pcie-6gpu")
    for g, memory in zip(gpus(topology), [8, 8, 8, 8, 40, 40]):
        topology.nodes[g]["memory"] = memory * 10**9
    inst, plan = chain_instance([10**6, 10**6, 10**6], [5 * 10**9, 30 * 10**9, 5 * 10**9, 30 * 10**9], capacity="40GB")
    placement = map_plan(inst, plan, topology)
    assert placement.status is Status.OPTIMAL
    assert {placement.devices[1], placement.devices[3]} == {"GPU4", "GPU5"}
    assert placement.naive_objective is None and placement.naive_ratio is None  # rank order does not fit
    inst, plan = chain_instance([10**6] * 2, [30 * 10**9] * 3, capacity="40GB")
    assert map_plan(inst, plan, topology).status is Status.INFEASIBLE


def test_hierarchical_on_a_four_host_cluster_against_its_bound():
    topology = load_topology("4×dgx-h100")
    rng = random.Random(7)
    cuts = [rng.choice([10**6, 10**8, 10**9]) for _ in range(29)]
    inst, plan = chain_instance(cuts, [2 * 10**9] * 30, capacity="80GB")
    for objective in ("min_bottleneck", "min_total"):
        placement = map_plan(inst, plan, topology, objective)
        assert placement.method == "hierarchical"
        assert placement.status in (Status.OPTIMAL, Status.FEASIBLE)
        assert 0 < placement.bound <= placement.objective <= placement.naive_objective
        assert len(set(placement.devices)) == 30
        crossings = sum(b["kind"] == "IB" for b in placement.boundaries)
        assert crossings >= 3  # 30 partitions on hosts of 8 GPUs
        # Crossings land on small cuts; the 1 GB ones stay on NVLink.
        assert max(b["bytes"] for b in placement.boundaries if b["kind"] == "IB") <= 10**8
    # NVSwitch hosts: runs packed into hosts (revisits allowed) meet the bound.
    assert map_plan(inst, plan, topology, "min_bottleneck").status is Status.OPTIMAL


def test_a_cluster_that_fits_in_one_host_is_proven():
    inst, plan = chain_instance([10**6] * 5, [10**9] * 6, capacity="80GB")
    placement = map_plan(inst, plan, load_topology("2×dgx-h100"))
    assert placement.status is Status.OPTIMAL and all(d.startswith("node0:") for d in placement.devices)


def test_placement_round_trips_through_json():
    inst, plan = chain_instance([10**9, 10**6])
    placement = map_plan(inst, plan, load_topology("dgx1-v100"), "min_total")
    assert Placement.from_dict(json.loads(json.dumps(placement.to_dict()))) == placement


def test_bad_input():
    inst, plan = chain_instance([10**6] * 9)
    with pytest.raises(OptionError, match=r"^plan: 10 partitions but topology 'dgx-h100' has 8 GPUs"):
        map_plan(inst, plan, load_topology("dgx-h100"))
    with pytest.raises(OptionError, match=r"^objective: unknown mapping objective 'fast'"):
        map_plan(inst, plan, load_topology("2×dgx-h100"), "fast")
    inst, plan = chain_instance([10**6], [90 * 10**9, 10**9], capacity="100GB")
    with pytest.raises(OptionError, match=r"^plan: partition 0 holds 90 GB \(90,000,000,000 B\), more than any GPU's memory"):
        map_plan(inst, plan, load_topology("dgx-h100"))
    infeasible = solve(Instance(name="x", capacity=1, layers=[Layer("a", weight_bytes=2)]))
    with pytest.raises(OptionError, match=r"^plan: status infeasible has no partitions to place$"):
        map_plan(Instance(name="x", capacity=1, layers=[Layer("a", weight_bytes=2)]), infeasible, load_topology("dgx-h100"))
