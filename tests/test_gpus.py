"""GPUs by name (layerfit.model.gpus): the table, capacities given as GPU names and the reserve
they bring, the capacity a device pool makes optional, and Hugging Face's dtype spellings."""

from fractions import Fraction

import pytest

from helpers import INSTANCES
from layerfit import Constraints, Device, Instance, Layer, solve, validate_plan
from layerfit.errors import InstanceError
from layerfit.interop.hf_config import from_hf_config
from layerfit.model.gpus import GPUS, default_reserve, find_gpu, gpu_table, parse_capacity
from layerfit.model.memory import capacity_at, plan_loads, usable_capacity

MiB, GiB = 2**20, 2**30
KNOWN = "H100-80GB, H200, A100-40GB, A100-80GB, L40S, L4, RTX4090, B200, MI300X"
LLAMA_8B = INSTANCES / "configs" / "llama-3-8b.json"


def test_the_table_holds_what_the_drivers_report():
    assert ", ".join(GPUS) == KNOWN
    reported = {"H100-80GB": 81_559 * MiB, "H200": 143_771 * MiB, "A100-40GB": 40_960 * MiB,
                "A100-80GB": 81_920 * MiB, "L40S": 46_068 * MiB, "L4": 23_034 * MiB, "RTX4090": 24_564 * MiB, "B200": 183_359 * MiB,
                "MI300X": 205_822_885_888}
    assert {name: gpu.memory for name, gpu in GPUS.items()} == reported
    assert all(gpu.source for gpu in GPUS.values())


def test_the_default_reserve_is_2_gib_and_3_percent_rounded_up_to_a_gib():
    for gpu in GPUS.values():
        wanted = 2 * GiB + Fraction(3, 100) * gpu.memory
        assert gpu.reserve == default_reserve(gpu.memory) == -(-wanted // GiB) * GiB
        assert gpu.reserve % GiB == 0 and gpu.reserve - GiB < wanted <= gpu.reserve
    assert {name: gpu.reserve // GiB for name, gpu in GPUS.items()} == {
        "H100-80GB": 5, "H200": 7, "A100-40GB": 4, "A100-80GB": 5, "L40S": 4, "L4": 3, "RTX4090": 3, "B200": 8, "MI300X": 8}


def test_gpu_names_are_read_whatever_their_case_and_separators():
    assert find_gpu("h100 80gb", "capacity") is GPUS["H100-80GB"]
    assert find_gpu("RTX_4090", "capacity") is GPUS["RTX4090"]
    assert parse_capacity("H100-80GB", "capacity") == (85_520_809_984, GPUS["H100-80GB"])
    assert parse_capacity("80GB", "capacity") == (80_000_000_000, None)
    assert parse_capacity(1000, "capacity") == (1000, None)


@pytest.mark.parametrize("value, message", [
    ("H100", rf"^capacity: unknown GPU 'H100' \(known: {KNOWN}\)$"),
    ("A100", rf"^capacity: unknown GPU 'A100' \(known: {KNOWN}\)$"),
    ("twelve MB", r"^capacity: expected a size \(bytes as an integer, or a string such as '32MiB'\), got 'twelve MB'$"),
    ("12PB", r"^capacity: unknown unit 'PB' in '12PB'"),
])
def test_a_capacity_that_is_neither_a_size_nor_a_known_gpu_is_an_error(value, message):
    with pytest.raises(InstanceError, match=message):
        parse_capacity(value, "capacity")


def test_the_gpu_table_for_the_docs_has_a_row_per_gpu():
    table = gpu_table().splitlines()
    assert len(table) == 2 + len(GPUS)
    assert table[2].startswith("| `H100-80GB` | 81,559 MiB (85,520,809,984 B, 85.52 GB) | 5 GiB | 80.15 GB |")


def _layers(n=6, params=4 * 10**9):
    return [Layer(f"l{i}", params=params) for i in range(n)]


def test_a_gpu_capacity_is_its_memory_and_holds_back_its_default_reserve():
    inst = Instance(name="g", capacity="H100-80GB", dtype="bf16", layers=_layers())
    assert inst.capacity == 81_559 * MiB and inst.capacity_gpu is GPUS["H100-80GB"]
    assert inst.constraints.reserve == 5 * GiB
    assert usable_capacity(inst) == 81_559 * MiB - 5 * GiB
    plan = solve(inst)
    validate_plan(inst, plan)
    assert max(plan_loads(inst, plan.partitions)) <= 81_559 * MiB - 5 * GiB
    assert plan.num_partitions == 1  # 48 GB of weights
    # 82 GB of weights fit the driver's 85.52 GB, not the 80.15 GB the reserve leaves
    big = Instance(name="g", capacity="H100-80GB", dtype="bf16", layers=_layers(10, 41 * 10**8))
    assert solve(big).num_partitions == 2
    bare = Instance(name="g", capacity="H100-80GB", dtype="bf16", layers=_layers(10, 41 * 10**8),
                    constraints=Constraints(reserve=0))
    assert bare.constraints.reserve == 0 and solve(bare).num_partitions == 1


def test_the_reserve_the_user_gives_wins_zero_included():
    raw = {"name": "g", "capacity": "H200", "dtype": "bf16", "layers": [{"name": "a", "params": 10}]}
    assert Instance.from_dict(raw).constraints.reserve == 7 * GiB
    assert Instance.from_dict({**raw, "constraints": {"reserve": 0}}).constraints.reserve == 0
    assert Instance.from_dict({**raw, "constraints": {"reserve": "1GiB"}}).constraints.reserve == GiB
    assert Instance(name="g", capacity="H200", layers=[Layer("a")], constraints=Constraints(reserve="2GiB")) \
        .constraints.reserve == 2 * GiB
    # a size, not a GPU: no reserve unless given
    assert Instance.from_dict({**raw, "capacity": "80GB"}).constraints.reserve == 0


def test_device_capacities_may_be_gpu_names_and_the_largest_default_reserve_is_held_back():
    raw = {"name": "mixed", "dtype": "bf16", "layers": [{"name": f"l{i}", "params": 10**9} for i in range(4)],
           "devices": [{"name": "GPU0", "capacity": "RTX4090"}, {"name": "GPU1", "capacity": "A100-80GB"}]}
    inst = Instance.from_dict(raw)
    assert [d.capacity for d in inst.devices] == [24_564 * MiB, 81_920 * MiB]
    assert [d.gpu.name for d in inst.devices] == ["RTX4090", "A100-80GB"]
    assert inst.constraints.reserve == 5 * GiB  # the A100's, the larger of 3 and 5 GiB
    assert [capacity_at(inst, j) for j in range(2)] == [24_564 * MiB - 5 * GiB, 81_920 * MiB - 5 * GiB]
    with pytest.raises(InstanceError, match=rf"^devices\[1\]\.capacity: unknown GPU 'A100' \(known: {KNOWN}\)$"):
        Instance.from_dict({**raw, "devices": [raw["devices"][0], {"name": "GPU1", "capacity": "A100"}]})
    with pytest.raises(InstanceError, match=rf"^device 'g'\.capacity: unknown GPU 'H1OO' \(known: {KNOWN}\)$"):
        Device("g", "H1OO")


def test_to_dict_writes_bytes_and_the_reserve_and_round_trips():
    inst = Instance(name="g", capacity="H100-80GB", dtype="bf16", layers=_layers(3))
    data = inst.to_dict()
    assert data["capacity"] == 85_520_809_984 and data["constraints"] == {"reserve": 5 * GiB}
    back = Instance.from_dict(data)
    assert back == inst and back.constraints.reserve == 5 * GiB and back.capacity_gpu is None
    zero = Instance(name="g", capacity="H100-80GB", dtype="bf16", layers=_layers(3), constraints=Constraints(reserve=0))
    assert "constraints" not in zero.to_dict()
    assert Instance.from_dict(zero.to_dict()) == zero
    pool = Instance(name="p", dtype="bf16", layers=_layers(3), devices=[Device("GPU0", "L40S"), Device("GPU1", "L40S")])
    data = pool.to_dict()
    assert "capacity" not in data and [d["capacity"] for d in data["devices"]] == [46_068 * MiB] * 2
    assert data["constraints"] == {"reserve": 4 * GiB}
    assert Instance.from_dict(data) == pool and Instance.from_dict(data).to_dict() == data


def _pool_raw(**changes):
    raw = {"name": "pool", "dtype": "bf16",
           "layers": [{"name": f"l{i}", "params": p} for i, p in enumerate([3, 5, 2, 7, 4, 6, 1, 5])],
           "devices": [{"name": "a", "capacity": 30}, {"name": "b", "capacity": 40}, {"name": "c", "capacity": 24}]}
    raw.update(changes)
    return raw


@pytest.mark.parametrize("order", ["ordered", "free"])
@pytest.mark.parametrize("objective, k", [("min_partitions", None), ("min_bottleneck", 3)])
def test_without_a_capacity_a_pool_plans_as_with_its_largest_device(order, objective, k):
    without = Instance.from_dict(_pool_raw(device_order=order))
    with_largest = Instance.from_dict(_pool_raw(device_order=order, capacity=40))
    assert without.capacity == 40 and without.capacity_from_devices and not with_largest.capacity_from_devices
    assert "capacity" not in without.to_dict()
    assert Instance.from_dict(without.to_dict()) == without
    for method in ("dp", "cpsat", "greedy") if objective == "min_partitions" else ("dp", "cpsat"):
        a = solve(without, method, objective=objective, num_partitions=k)
        b = solve(with_largest, method, objective=objective, num_partitions=k)
        assert (a.status, a.partitions, a.objective, a.devices) == (b.status, b.partitions, b.objective, b.devices)
        validate_plan(without, a)
        assert a.status.has_plan and a.metrics["capacity"] == 40


def test_without_a_capacity_an_infeasible_pool_still_explains_itself():
    raw = _pool_raw(devices=[{"name": "a", "capacity": 12}, {"name": "b", "capacity": 13}])
    plan = solve(Instance.from_dict(raw))
    assert plan.status == "infeasible" and plan.explanation


def test_capacity_is_required_without_devices():
    message = (r"^capacity: missing \(the bytes one partition may hold, e.g. \"50MB\", or a GPU name such as "
               r"\"H100-80GB\"; optional when every device of 'devices' has one\)$")
    with pytest.raises(InstanceError, match=message):
        Instance.from_dict({"name": "x", "layers": [{"name": "a"}]})
    with pytest.raises(InstanceError, match=message):
        Instance(name="x", layers=[Layer("a")])


def test_hugging_face_dtype_spellings_are_accepted_and_normalised():
    raw = {"name": "d", "capacity": "1GB", "dtype": "bfloat16",
           "layers": [{"name": "a", "params": 10}, {"name": "b", "params": 10, "dtype": "float32"}]}
    inst = Instance.from_dict(raw)
    assert inst.dtype == "bf16" and inst.layers[1].dtype == "fp32" and inst.sizes == (20, 40)
    assert inst.to_dict()["dtype"] == "bf16" and Instance.from_dict(inst.to_dict()) == inst
    seed = Instance.from_dict({"capacity": "1TB", "model": {"num_layers": 2, "total_params": 10, "dtype": "float16",
                                                            "batch_size": 1, "seq_len": 1, "hidden_size": 1}})
    assert seed.dtype == "fp16" and seed.model.dtype == "fp16"
    assert Instance(name="d", capacity=100, dtype="float16", layers=[Layer("a", params=3)]).sizes == (6,)
    with pytest.raises(InstanceError, match=r"^dtype: unknown dtype 'float64' \(allowed: fp32, bf16, fp16, fp8, int8, "
                                            r"int4\)$"):
        Instance.from_dict({**raw, "dtype": "float64"})


def test_from_hf_config_takes_hugging_face_dtype_spellings():
    spelled = from_hf_config(LLAMA_8B, batch_size=1, seq_len=128, dtype="bfloat16", activation_dtype="float32")
    short = from_hf_config(LLAMA_8B, batch_size=1, seq_len=128, dtype="bf16", activation_dtype="fp32")
    assert spelled == short and spelled.dtype == "bf16"
    assert from_hf_config(LLAMA_8B, batch_size=1, seq_len=128, dtype="float16").dtype == "fp16"


def test_from_hf_config_takes_a_gpu_name_as_its_capacity():
    inst = from_hf_config(LLAMA_8B, batch_size=1, seq_len=128, capacity="A100-40GB")
    assert inst.capacity == 40_960 * MiB and inst.constraints.reserve == 4 * GiB


def test_the_reserve_is_settled_when_the_instance_is_built():
    import dataclasses

    inst = Instance(name="g", capacity="H100-80GB", dtype="bf16", layers=_layers(3))
    # a capacity replaced keeps the reserve (what remedies' probes at other capacities rely on)
    assert dataclasses.replace(inst, capacity="100GB").constraints.reserve == 5 * GiB
    plain = Instance(name="g", capacity="80GB", dtype="bf16", layers=_layers(3))
    assert dataclasses.replace(plain, capacity="H100-80GB").constraints.reserve == 0
    assert dataclasses.replace(plain, capacity="H100-80GB", constraints=Constraints()).constraints.reserve == 5 * GiB
