"""Joint mode: solve(..., topology=...) against exhaustive search and partition-then-map."""

import itertools
import random

import pytest

from layerfit import Instance, Layer, OptionError, Placement, Status, load_topology, map_plan, solve
from layerfit.placement.topology import gpus, link


def mixed_pool(name, memories_gb):
    topology = load_topology(name)
    for g, memory in zip(gpus(topology), memories_gb):
        topology.nodes[g]["memory"] = memory * 10**9
    return topology


def brute_force(inst, topology, k, objective):
    best, names, n = None, gpus(topology), inst.num_layers
    for cuts in itertools.combinations(range(1, n), k - 1):
        bounds = [0, *cuts, n]
        parts = [list(range(bounds[j], bounds[j + 1])) for j in range(k)]
        loads = [sum(inst.sizes[i] for i in p) for p in parts]
        if max(loads) > inst.capacity:
            continue
        for perm in itertools.permutations(names, k):
            if any(loads[j] > topology.nodes[perm[j]]["memory"] for j in range(k)):
                continue
            times = []
            for j in range(k - 1):
                _, bandwidth, latency = link(topology, perm[j], perm[j + 1])
                times.append(latency + inst.layers[parts[j][-1]].activation_bytes / bandwidth)
            value = max(times) if objective == "min_bottleneck" else sum(times)
            best = value if best is None else min(best, value)
    return best


@pytest.mark.parametrize("preset, memories", [("pcie-6gpu", [6, 6, 6, 6, 20, 20]), ("dgx1-v100", [10] * 4 + [30] * 4)])
def test_joint_matches_exhaustive_search(preset, memories):
    topology = mixed_pool(preset, memories)
    for seed in range(25):
        rng = random.Random(seed)
        n = rng.randint(4, 7)
        layers = [Layer(f"l{i}", weight_bytes=rng.randint(1, 6) * 10**9,
                        activation_bytes=rng.choice([10**6, 10**8, 10**9])) for i in range(n)]
        inst = Instance(name="j", capacity="20GB", layers=layers)
        k = rng.randint(2, min(n, 4))
        objective = rng.choice(["min_bottleneck", "min_total"])
        placement = solve(inst, topology=topology, num_partitions=k, objective=objective, seed=seed)
        expected = brute_force(inst, topology, k, objective)
        if expected is None:
            assert placement.status is Status.INFEASIBLE
            continue
        assert placement.status is Status.OPTIMAL
        assert placement.objective == pytest.approx(expected, rel=1e-4)
        assert len(placement.partitions) == k and len(set(placement.devices)) == k
        for part, device, size in zip(placement.partitions, placement.devices, placement.partition_bytes):
            assert size == sum(inst.sizes[i] for i in part) <= topology.nodes[device]["memory"]


def test_joint_is_never_worse_than_partition_then_map():
    topology = mixed_pool("dgx1-v100", [10] * 4 + [30] * 4)
    for seed in range(15):
        rng = random.Random(100 + seed)
        n = rng.randint(8, 16)
        layers = [Layer(f"l{i}", weight_bytes=rng.randint(1, 5) * 10**9,
                        activation_bytes=rng.randint(10**6, 10**9)) for i in range(n)]
        inst = Instance(name="j", capacity="30GB", layers=layers)
        k = rng.randint(2, 6)
        plan = solve(inst, objective="min_bottleneck", num_partitions=k)
        if not plan.status.has_plan:
            continue
        before = map_plan(inst, plan, topology)
        joint = solve(inst, topology=topology, num_partitions=k)
        if before.status.has_plan:
            assert joint.objective <= before.objective * (1 + 1e-12)


def test_joint_moves_a_cut_off_a_big_activation():
    # Six equal layers, two GPUs: the balanced cut (3 + 3) sends layer 2's 1 GB activation;
    # 2 + 4 layers also fit and send 1 MB.
    acts = [10**6, 10**6, 10**9, 10**6, 10**6, 0]
    inst = Instance(name="cut", capacity="40GB", layers=[Layer(f"l{i}", weight_bytes=5 * 10**9, activation_bytes=a)
                                                          for i, a in enumerate(acts)])
    topology = load_topology("pcie-6gpu")
    before = map_plan(inst, solve(inst, objective="min_bottleneck", num_partitions=2), topology)
    joint = solve(inst, topology=topology, num_partitions=2)
    assert before.partitions == [[0, 1, 2], [3, 4, 5]]
    assert joint.boundaries[0]["bytes"] == 10**6
    assert joint.objective < before.objective / 100
    assert isinstance(joint, Placement) and joint.method == "joint-cpsat"


def test_joint_options():
    inst = Instance(name="o", capacity="40GB", layers=[Layer(f"l{i}", weight_bytes=10**9) for i in range(4)])
    topology = load_topology("dgx-h100")
    assert len(solve(inst, topology=topology).partitions) == 1  # defaults to the fewest partitions
    with pytest.raises(OptionError, match=r"^topology: joint partitioning and placement is a CP-SAT model; use method 'auto' or 'cpsat', not 'dp'$"):
        solve(inst, "dp", topology=topology)
    with pytest.raises(OptionError, match=r"^objective: with a topology, one of min_bottleneck, min_total \(transfer time\), got 'min_partitions'$"):
        solve(inst, topology=topology, objective="min_partitions")
    with pytest.raises(OptionError, match=r"^backend: not an option of the joint model"):
        solve(inst, topology=topology, backend="highs")
    with pytest.raises(OptionError, match=r"^num_partitions: 9 partitions but topology 'dgx-h100' has 8 GPUs$"):
        solve(Instance(name="o", capacity="40GB", layers=[Layer(f"l{i}", weight_bytes=1) for i in range(9)]),
              topology=topology, num_partitions=9)


def test_the_joint_model_refuses_options_it_does_not_plan():
    import pytest as _pytest

    from layerfit import Instance, Layer, OptionError, load_topology, solve

    inst = Instance(name="j", capacity="80GB", layers=[Layer(f"l{i}", weight_bytes=10**9) for i in range(4)],
                    schedule="1f1b", micro_batches=2)
    with _pytest.raises(OptionError, match=r"^topology: the joint model plans the seed's additive chain in this "
                                           r"version, not schedule; plan with solve\(\) and place the plan with map_plan\(\)$"):
        solve(inst, topology=load_topology("dgx-h100"))
