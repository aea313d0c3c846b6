"""Writes the hostile-input corpus beside this file (issue #15): instances, plans, placements and
topologies, malformed as an attacker or a careless user would make them.

    python tests/hostile/make_corpus.py

Each file is named ``<kind>-<case>.<ext>``; kind is what the command reads (instance, plan,
placement, topology). An instance named ``...-for-METHOD.json`` is solved with that method; a
plan named ``...-for-map.json`` is mapped (``layerfit map``) rather than exported.
tests/test_hostile.py runs each through ``layerfit`` and expects exit 2 and exactly the one line
of ``expected.json`` on stderr. The files are committed; this script is
how they were made (byte-exact, so non-UTF-8 and huge inputs are reproducible).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

BASE = {"name": "base", "capacity": 100, "layers": [{"name": f"l{i}", "weight_bytes": 30} for i in range(4)]}
# The plan of BASE that `layerfit solve base-instance.json --json` prints (dp): [[0, 1, 2], [3]].
PLAN = {
    "status": "optimal", "partitions": [[0, 1, 2], [3]], "objective_name": "min_partitions", "objective": 2,
    "bound": 2, "method": "dp", "instance_name": "base", "num_layers": 4, "secondary_objective": 90,
    "secondary_bound": 90, "metrics": {},
}


def layer(**fields: object) -> dict:
    return {"name": "a", "weight_bytes": 1, **fields}


def instance(**fields: object) -> bytes:
    raw = {"name": "x", "capacity": 100, "layers": [layer()]}
    raw.update(fields)
    return json.dumps(raw).encode()


def seed(**model: object) -> bytes:
    raw = {"num_layers": 4, "total_params": 1000, "dtype": "bf16", "batch_size": 1, "seq_len": 1, "hidden_size": 1}
    raw.update(model)
    return json.dumps({"model": raw, "capacity": "50MB"}).encode()


def plan(**fields: object) -> bytes:
    raw = copy.deepcopy(PLAN)
    raw.update(fields)
    return json.dumps({k: v for k, v in raw.items() if v is not ...}).encode()


def placement(**fields: object) -> bytes:
    raw = {"status": "optimal", "objective_name": "min_bottleneck", "objective": 0.0, "bound": 0.0,
           "devices": ["GPU0", "GPU1"], "boundaries": [], "method": "subset-dp", "topology_name": "dgx-h100",
           "instance_name": "base", "num_layers": 4, "partitions": [[0, 1, 2], [3]], "partition_bytes": [90, 30]}
    raw.update(fields)
    return json.dumps({k: v for k, v in raw.items() if v is not ...}).encode()


CASES: dict[str, bytes] = {
    # -- instances: the reader ------------------------------------------------------
    "instance-empty.json": b"",
    "instance-not-json.json": b"capacity: 100\nlayers: []\n",
    "instance-truncated.json": b'{"capacity": 100, "layers": [{"name": "a", ',
    "instance-bad-utf8-name.json": b'{"capacity": 100, "layers": [{"name": "a\xff\xfe", "weight_bytes": 1}]}',
    "instance-latin1.json": '{"capacity": 100, "layers": [{"name": "ç", "weight_bytes": 1}]}'.encode("latin-1"),
    "instance-utf16.json": '{"capacity": 100}'.encode("utf-16"),
    "instance-nested-200000.json": b"[" * 200_000 + b"]" * 200_000,
    "instance-nested-objects.json": b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    "instance-int-5000-digits.json": b'{"capacity": 100, "layers": [{"name": "a", "weight_bytes": '
                                     + b"7" * 5000 + b"}]}",
    "instance-nul-byte.json": b'{"capacity": 100, "layers": [{"name": "a\x00", "weight_bytes": 1}]}',
    "instance-top-level-list.json": b"[1, 2, 3]",
    "instance-top-level-string.json": b'"capacity"',
    # -- instances: sizes -----------------------------------------------------------
    "instance-capacity-1e400GB.json": instance(capacity="1e400GB"),
    "instance-capacity-1e999999999B.json": instance(capacity="1e999999999B"),
    "instance-capacity-tiny-exponent.json": instance(capacity="1e-999999999B"),
    "instance-capacity-long-string.json": instance(capacity="1" * 100_000 + "B"),
    "instance-capacity-float-1e400.json": b'{"capacity": 1e400, "layers": [{"name": "a", "weight_bytes": 1}]}',
    "instance-capacity-huge-int.json": instance(capacity=10**60),
    "instance-capacity-negative.json": instance(capacity=-5),
    "instance-capacity-zero.json": instance(capacity=0),
    "instance-capacity-nan.json": b'{"capacity": NaN, "layers": [{"name": "a", "weight_bytes": 1}]}',
    "instance-capacity-infinity.json": b'{"capacity": Infinity, "layers": [{"name": "a", "weight_bytes": 1}]}',
    "instance-capacity-bad-unit.json": instance(capacity="12 parsecs"),
    "instance-capacity-list.json": instance(capacity=[100]),
    "instance-capacity-bool.json": instance(capacity=True),
    "instance-capacity-half-byte.json": instance(capacity="0.5B"),
    "instance-capacity-missing.json": json.dumps({"layers": [layer()]}).encode(),
    "instance-weight-1e999999999B.json": instance(layers=[layer(weight_bytes="1e999999999B")]),
    "instance-activation-negative.json": instance(layers=[layer(activation_bytes="-1MB")]),
    "instance-params-huge.json": instance(dtype="bf16", layers=[{"name": "a", "params": 10**50}]),
    "instance-params-float.json": instance(dtype="bf16", layers=[{"name": "a", "params": 1.5}]),
    "instance-time-huge-int.json": instance(layers=[layer(time=10**400)]),
    "instance-flops-huge-int.json": instance(layers=[layer(flops=10**400)]),
    "instance-time-string.json": instance(layers=[layer(time="fast")]),
    # -- instances: structure -------------------------------------------------------
    "instance-layers-empty.json": instance(layers=[]),
    "instance-layers-object.json": instance(layers={"a": 1}),
    "instance-layer-not-object.json": instance(layers=[42]),
    "instance-layer-no-name.json": instance(layers=[{"weight_bytes": 1}]),
    "instance-layer-name-number.json": instance(layers=[layer(name=7)]),
    "instance-layer-name-blank.json": instance(layers=[layer(name="   ")]),
    "instance-layer-name-control.json": instance(layers=[layer(name="a\u0007b")]),
    "instance-layer-name-surrogate.json": b'{"capacity": 100, "layers": [{"name": "a\\udc80", "weight_bytes": 1}]}',
    "instance-layer-duplicate-names.json": instance(layers=[layer(), layer()]),
    "instance-layer-unknown-key.json": instance(layers=[layer(colour="red")]),
    "instance-unknown-key.json": instance(colour="red"),
    "instance-dtype-unknown.json": instance(dtype="fp128"),
    "instance-schedule-unknown.json": instance(schedule="zigzag"),
    "instance-micro-batches-zero.json": instance(schedule="1f1b", micro_batches=0),
    "instance-buffer-reuse-string.json": instance(buffer_reuse="yes"),
    "instance-device-capacity-zero.json": instance(capacity=None, devices=[{"name": "g0", "capacity": 0}]),
    "instance-devices-number.json": instance(devices=3),
    "instance-device-speed-huge.json": instance(devices=[{"name": "g0", "capacity": 100, "speed": 10**400}]),
    "instance-device-duplicate.json": instance(devices=[{"name": "g", "capacity": 100},
                                                        {"name": "g", "capacity": 100}]),
    "instance-edges-unknown-layer.json": instance(edges=[["a", "zz"]]),
    "instance-edges-cycle.json": instance(layers=[layer(name="a"), layer(name="b")], edges=[["a", "b"], ["b", "a"]]),
    "instance-pinned-unknown.json": instance(constraints={"pinned": {"zz": 0}}),
    "instance-tied-top-level.json": instance(tied=[{"layers": ["a"], "params": 1}]),
    "instance-reserve-over-capacity.json": instance(constraints={"reserve": 1000}),
    # -- beyond the models' integers (solved with the method the name ends in) -----------------
    # Two coprime sizes: the models count in the sizes' unit (their gcd), here 1 B.
    "instance-beyond-int64-for-cpsat.json": instance(capacity="1e30B", layers=[
        layer(weight_bytes=10**25 + 1), layer(name="b", weight_bytes=10**25 + 2)]),
    "instance-beyond-2p53-for-mip.json": instance(capacity="1e30B", layers=[
        layer(weight_bytes=10**20 + 1), layer(name="b", weight_bytes=10**20 + 2)]),
    # -- the seed shorthand -----------------------------------------------------------
    "instance-seed-num-layers-1e12.json": seed(num_layers=1e12),
    "instance-seed-num-layers-huge-int.json": seed(num_layers=10**30),
    "instance-seed-num-layers-zero.json": seed(num_layers=0),
    "instance-seed-num-layers-string.json": seed(num_layers="16"),
    "instance-seed-hidden-negative.json": seed(hidden_size=-4096),
    # -- plans (with --instance base-instance.json) ----------------------------------------
    "plan-metrics-list.json": plan(metrics=[1, 2]),
    "plan-metrics-list-for-map.json": plan(metrics=[1, 2]),
    "plan-partitions-out-of-order-for-map.json": plan(partitions=[[3], [0, 1, 2]]),
    "plan-num-layers-string.json": plan(num_layers="4"),
    "plan-partitions-out-of-order.json": plan(partitions=[[3], [0, 1, 2]]),
    "plan-partition-negative-index.json": plan(partitions=[[-1, 0, 1, 2], [3]]),
    "plan-partition-duplicate-index.json": plan(partitions=[[0, 1, 2], [2, 3]]),
    "plan-partition-over-capacity.json": plan(partitions=[[0, 1, 2, 3]], objective=1, bound=1),
    "plan-partition-empty.json": plan(partitions=[[0, 1, 2], [], [3]]),
    "plan-partitions-strings.json": plan(partitions=[["0", "1"], ["2", "3"]]),
    "plan-devices-number.json": plan(devices=3),
    "plan-status-unknown.json": plan(status="great"),
    "plan-status-list.json": plan(status=["optimal"]),
    "plan-objective-string.json": plan(objective="two"),
    "plan-unknown-key.json": plan(colour="red"),
    "plan-missing-status.json": plan(status=...),
    "plan-format-version.json": plan(format_version=99),
    "plan-wrong-objective-value.json": plan(objective=3, bound=3),
    "plan-not-object.json": b"[[0, 1, 2], [3]]",
    "plan-bad-utf8.json": plan(instance_name="base").replace(b'"base"', b'"b\xffse"'),
    # -- placements (with --instance base-instance.json) ------------------------------------
    "placement-devices-number.json": placement(devices=3),
    "placement-partitions-out-of-order.json": placement(partitions=[[3], [0, 1, 2]]),
    "placement-partition-over-capacity.json": placement(partitions=[[0, 1, 2, 3]], partition_bytes=[120],
                                                        devices=["GPU0"]),
    "placement-negative-index.json": placement(partitions=[[-1, 0, 1, 2], [3]]),
    "placement-bytes-wrong.json": placement(partition_bytes=[1, 2]),
    "placement-one-gpu-twice.json": placement(devices=["GPU0", "GPU0"]),
    "placement-num-layers-string.json": placement(num_layers="4"),
    "placement-status-unknown.json": placement(status="great"),
    # -- topologies (layerfit map base-instance.json --topology FILE) -----------------------
    "topology-empty.txt": b"",
    "topology-binary.txt": bytes(range(256)) * 4,
    "topology-garbage.txt": b"GPU0 GPU1\nGPU0 X banana\nGPU1 banana X\n",
    "topology-huge-line.txt": b"\tGPU0\tGPU1\n" + b"GPU0\tX\t" + b"NV" * 50_000 + b"\n",
}


def main() -> None:
    (HERE / "base-instance.json").write_text(json.dumps(BASE, indent=1) + "\n", encoding="utf-8")
    for name, data in CASES.items():
        (HERE / name).write_bytes(data)
    print(f"{len(CASES)} hostile files in {HERE}")


if __name__ == "__main__":
    main()
