import json
import math

import pytest
from hypothesis import given

from layerfit import Device, Instance, InstanceError, Layer, SeedModel, load_instance

from helpers import small_instances
from layerfit.model.memory import partition_bytes

SEED = {
    "num_layers": 16,
    "total_params": 30e9,
    "dtype": "bf16",
    "batch_size": 128,
    "seq_len": 10000,
    "hidden_size": 4096,
}


def test_layer_sizes_follow_the_seed_formula():
    inst = Instance.from_dict(
        {
            "name": "example",
            "capacity": "50MB",
            "dtype": "bf16",
            "layers": [
                {"name": "embed", "params": 131072000},
                {"name": "block0", "params": 202383360, "activation_bytes": "32MiB", "buffer_bytes": 0, "time": 0.0012},
                {"name": "head", "params": 1000, "dtype": "fp32", "buffer_bytes": "1kB"},
                {"name": "given", "params": 10, "weight_bytes": 7},
                {"name": "q4", "params": 3, "dtype": "int4"},
            ],
        }
    )
    assert inst.capacity == 50_000_000
    assert inst.sizes == (262_144_000, 404_766_720 + 33_554_432, 4000 + 1000, 7, 2)
    assert inst.footprint(1).activation == 33_554_432
    assert inst.layers[1].time == 0.0012
    assert inst.total_params == 131072000 + 202383360 + 1000 + 10 + 3


def test_seed_shorthand_expands_by_the_seed_formulas():
    inst = Instance.from_dict({"capacity": "80GB", "model": SEED}, name="seed")
    assert inst.num_layers == 16
    fp = inst.footprint(0)
    assert fp.weight == 3_750_000_000  # 30e9 params × 2 B / 16 layers
    assert fp.activation == 128 * 10000 * 4096 * 2  # elements × bf16: 10.49 GB, not the seed's "5.24GB"
    assert inst.model is not None and inst.model.activation_elements == 5_242_880_000
    assert inst.total_params == 30_000_000_000


def test_shorthand_remainder_goes_to_the_first_layers():
    inst = Instance.from_dict(
        {"capacity": 10**9, "model": {**SEED, "num_layers": 3, "total_params": 10, "batch_size": 0}}
    )
    assert [layer.params for layer in inst.layers] == [4, 3, 3]


def test_shorthand_activation_dtype():
    inst = Instance.from_dict({"capacity": 10**12, "model": {**SEED, "activation_dtype": "fp32"}})
    assert inst.footprint(0).activation == 5_242_880_000 * 4


@given(small_instances())
def test_round_trip(inst):
    assert Instance.from_dict(inst.to_dict()) == inst
    assert Instance.from_dict(json.loads(json.dumps(inst.to_dict()))) == inst


def test_round_trip_of_shorthand_devices_and_description():
    inst = Instance.from_dict(
        {"name": "s", "description": "d", "capacity": "80GB", "model": SEED,
         "devices": [{"name": "gpu0", "capacity": "80GB"}, {"name": "gpu1", "capacity": "40GB", "speed": 2}]}
    )
    again = Instance.from_dict(inst.to_dict())
    assert again == inst
    assert again.devices == (Device("gpu0", 80 * 10**9), Device("gpu1", 40 * 10**9, 2.0))
    assert "layers" not in inst.to_dict()


def test_python_construction_accepts_unit_strings():
    inst = Instance(name="py", capacity="1KiB", dtype="fp16", layers=[Layer("a", params=10, activation_bytes="1kB")])
    assert inst.capacity == 1024 and inst.sizes == (1020,)


def _raw(**changes):
    base = {"name": "x", "capacity": "1GB", "dtype": "bf16", "layers": [{"name": "a", "params": 10}]}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "raw, message",
    [
        (_raw(capcity=1), r"^instance: unknown key 'capcity' \(allowed: name, description, capacity, dtype, layers, model, devices, edges, constraints, training, schedule, micro_batches, buffer_reuse, activation_recompute, device_order, flops_per_s, kv_tokens\)$"),
        ({"name": "x", "layers": [{"name": "a"}]}, r"^capacity: missing \(the bytes one partition may hold, e.g. \"50MB\", or a "
         r"GPU name such as \"H100-80GB\"; optional when every device of 'devices' has one\)$"),
        (_raw(capacity=-5), r"^capacity: must not be negative, got -5$"),
        (_raw(capacity=0), r"^capacity: must be positive, got 0$"),
        (_raw(capacity="twelve MB"), r"^capacity: expected a size \(bytes as an integer, or a string such as '32MiB'\), got 'twelve MB'$"),
        (_raw(capacity="12PB"), r"^capacity: unknown unit 'PB' in '12PB'"),
        (_raw(layers=[]), r"^layers: the list is empty \(an instance needs at least one layer\)$"),
        (_raw(layers={"a": 1}), r"^layers: expected a list, got \{'a': 1\}$"),
        ({"capacity": 1}, r"^layers: missing \(give a list of layers, or the seed shorthand 'model'\)$"),
        (_raw(layers=[{"name": "a"}, {"name": "a"}]), r"^layers\[1\]\.name: duplicate layer name 'a' \(also layers\[0\]\)$"),
        (_raw(layers=[{"name": "a", "activation_bytes": -1}]), r"^layers\[0\]\.activation_bytes: must not be negative, got -1$"),
        (_raw(layers=[{"name": "a", "activation_bytes": math.nan}]), r"^layers\[0\]\.activation_bytes: expected a finite number, got nan$"),
        (_raw(layers=[{"name": "a", "buffer_bytes": math.inf}]), r"^layers\[0\]\.buffer_bytes: expected a finite number, got inf$"),
        (_raw(layers=[{"name": "a", "weight_bytes": "lots"}]), r"^layers\[0\]\.weight_bytes: expected a size"),
        (_raw(layers=[{"name": "a", "params": "7"}]), r"^layers\[0\]\.params: expected a whole number, got '7'$"),
        (_raw(layers=[{"name": "a", "params": 1.5}]), r"^layers\[0\]\.params: expected a whole number, got 1.5$"),
        (_raw(layers=[{"name": "a", "dtype": "fp64"}]), r"^layers\[0\]\.dtype: unknown dtype 'fp64' \(allowed: fp32, bf16, fp16, fp8, int8, int4\)$"),
        (_raw(dtype="float64"), r"^dtype: unknown dtype 'float64' \(allowed: fp32, bf16, fp16, fp8, int8, int4\)$"),
        (_raw(dtype=None), r"^layers\[0\]\.dtype: layer 'a' has params but neither it nor the instance gives a dtype$"),
        (_raw(layers=[{"name": "a", "time": -1}]), r"^layers\[0\]\.time: must not be negative, got -1$"),
        (_raw(layers=[{"name": "a", "tim": 1}]), r"^layers\[0\]: unknown key 'tim' \(allowed: name, params, weight_bytes, activation_bytes, buffer_bytes, kv_cache_bytes, output_bytes, dtype, time, flops, modules\)$"),
        (_raw(layers=[{"params": 1}]), r"^layers\[0\]\.name: expected a non-empty string, got None$"),
        (_raw(layers=[{"name": "a", "modules": "a.norm"}]), r"^layers\[0\]\.modules: expected a list of module names, got 'a.norm'$"),
        (_raw(layers=[{"name": "a", "modules": ["a.norm", ""]}]), r"^layers\[0\]\.modules\[1\]: expected a module name, got ''$"),
        (_raw(layers=[{"name": "a", "modules": ["a.x", "a.x"]}]), r"^layers\[0\]\.modules: module 'a.x' listed twice$"),
        (_raw(layers=[{"name": "a", "modules": ["x"]}, {"name": "b", "modules": ["x"]}]), r"^layers\[1\]\.modules: module 'x' is also held by layers\[0\] \('a'\)$"),
        (_raw(layers=["a"]), r"^layers\[0\]: expected an object, got 'a'$"),
        (_raw(edges=[[0, 1]]), r"^edges\[0\]: expected \[producer, consumer\] layer names, got \[0, 1\]$"),
        (_raw(layers=None, model={**SEED, "hidden": 1}), r"^model: unknown key 'hidden'"),
        (_raw(layers=None, model={k: v for k, v in SEED.items() if k != "seq_len"}), r"^model\.seq_len: missing$"),
        (_raw(layers=None, model={**SEED, "num_layers": 0}), r"^model\.num_layers: must be at least 1, got 0$"),
        (_raw(model=SEED), r"^layers: give either 'layers' or the seed shorthand 'model', not both$"),
        (_raw(layers=None, dtype="fp32", model=SEED), r"^dtype: 'fp32' conflicts with model.dtype 'bf16'$"),
        (_raw(devices=[{"name": "g", "capacity": "1GB"}, {"name": "g", "capacity": "1GB"}]), r"^devices\[1\]\.name: duplicate device name 'g'$"),
        (_raw(devices=[{"name": "g"}]), r"^devices\[0\]\.capacity: missing$"),
        (_raw(devices=[{"name": "g", "capacity": 1, "speed": 0}]), r"^devices\[0\]\.speed: expected a positive finite number, got 0$"),
        ([1, 2], r"^instance: expected an object, got \[1, 2\]$"),
    ],
)
def test_bad_input_raises_naming_field_and_value(raw, message):
    with pytest.raises(InstanceError, match=message):
        Instance.from_dict(raw)


def test_python_layer_validation_names_the_layer():
    with pytest.raises(InstanceError, match=r"^layer 'a'\.activation_bytes: must not be negative, got -3$"):
        Layer("a", activation_bytes=-3)


def test_seed_model_validation():
    with pytest.raises(InstanceError, match=r"^model\.dtype: unknown dtype 'bf17'"):
        SeedModel(num_layers=1, total_params=1, dtype="bf17", batch_size=1, seq_len=1, hidden_size=1)


def test_load_instance_errors(tmp_path):
    with pytest.raises(InstanceError, match=r"missing\.json: no such file$"):
        load_instance(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"capacity": 1,, }')
    with pytest.raises(InstanceError, match=r"bad\.json: not valid JSON \(Expecting property name enclosed in double quotes at line 1, column 16\)$"):
        load_instance(bad)


def test_load_instance_names_by_file_stem(tmp_path):
    path = tmp_path / "my-model.json"
    path.write_text(json.dumps({"capacity": 10, "layers": [{"name": "a", "weight_bytes": 1}]}))
    assert load_instance(path).name == "my-model"


def test_kv_cache_and_output_bytes():
    raw = {"capacity": "1GB", "dtype": "bf16", "layers": [
        {"name": "a", "params": 10, "activation_bytes": 100, "kv_cache_bytes": "1kB", "output_bytes": 7},
        {"name": "b", "params": 10, "activation_bytes": 100}]}
    inst = Instance.from_dict(raw)
    assert inst.sizes == (20 + 100 + 1000, 120)
    assert inst.layers[0].sent_bytes == 7 and inst.layers[1].sent_bytes == 100
    assert Instance.from_dict(inst.to_dict()) == inst
    scheduled = Instance.from_dict({**raw, "schedule": "gpipe", "micro_batches": 4})
    assert partition_bytes(scheduled, [0], 0, 2) == 20 + 4 * 100 + 1000  # the KV cache is not per micro-batch
    from layerfit.report.metrics import plan_metrics

    m = plan_metrics(inst, [[0], [1]])
    assert m["partitions"][0]["kv_cache_bytes"] == 1000
    assert m["communication"]["cuts"] == [{"after_layer": "a", "bytes": 7}]
    raw["layers"][1]["kv_cache_bytes"] = -1
    with pytest.raises(InstanceError, match=r"^layers\[1\]\.kv_cache_bytes: "):
        Instance.from_dict(raw)
