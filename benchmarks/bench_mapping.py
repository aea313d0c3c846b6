"""Mapping: time to place a plan on 8 to 1,024 GPUs, and transfer time against rank order.

    python benchmarks/bench_mapping.py

Writes benchmarks/results/mapping.json and mapping.md. Chains have one layer per
partition with seeded random boundary sizes (1 MB to 1 GB), so that where the links
differ, where each cut lands matters.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_solver import fmt, machine, provenance, write_results  # noqa: E402

from layerfit import Instance, Layer, load_instance, load_topology, map_plan, solve  # noqa: E402

TOPOLOGIES = ROOT / "instances" / "topologies"


def chain(partitions: int, seed: int):
    rng = random.Random(seed)
    cuts = [rng.randint(10**6, 10**9) for _ in range(partitions - 1)] + [0]
    layers = [Layer(f"l{j}", weight_bytes=10**9, activation_bytes=cuts[j]) for j in range(partitions)]
    inst = Instance(name=f"chain-{partitions}", capacity="3GB", layers=layers)
    return inst, solve(inst, objective="min_bottleneck", num_partitions=partitions)


def bench_times():
    rows = []
    for gpus, topology in ((8, "dgx1-v100"), (16, "dgx2-v100"), (64, "8×dgx-h100"), (1024, "128×dgx-h100")):
        topo = load_topology(topology)
        inst, plan = chain(gpus, gpus)
        times, placement = [], None
        for _ in range(3 if gpus < 1024 else 1):
            start = time.perf_counter()
            placement = map_plan(inst, plan, topo)
            times.append(time.perf_counter() - start)
        rows.append({"gpus": gpus, "partitions": gpus, "topology": topology, "method": placement.method,
                     "status": placement.status.value, "median_s": statistics.median(times)})
    return rows


def bench_quality():
    cases = [
        ("PCIe box (measured P2P matrix)", str(TOPOLOGIES / "pcie-6gpu-pix-node-sys.txt"),
         str(TOPOLOGIES / "pcie-6gpu-p2p-unidirectional-GBps.txt"), 6),
        ("hybrid cube-mesh (dgx1-v100)", "dgx1-v100", None, 8),
        ("4-host cluster (4×dgx-h100)", "4×dgx-h100", None, 30),
    ]
    rows = []
    for label, source, matrix, partitions in cases:
        topo = load_topology(source, bandwidth_matrix=matrix)
        for objective in ("min_bottleneck", "min_total"):
            ratios = []
            for seed in range(10):
                inst, plan = chain(partitions, 100 + seed)
                placement = map_plan(inst, plan, topo, objective)
                ratios.append(placement.naive_objective / placement.objective)
            rows.append({"topology": label, "objective": objective, "partitions": partitions, "instances": 10,
                         "mean_ratio": statistics.mean(ratios), "max_ratio": max(ratios),
                         "status": placement.status.value, "bound_ratio": placement.objective / placement.bound})
    seed_inst = load_instance(ROOT / "instances" / "seed-30b-h100-hbm.json")
    plan = solve(seed_inst, objective="min_bottleneck", num_partitions=8)
    placement = map_plan(seed_inst, plan, load_topology("dgx1-v100"))
    rows.append({"topology": "hybrid cube-mesh (dgx1-v100)", "objective": "min_bottleneck", "partitions": 8,
                 "instances": "seed-30b-h100-hbm", "mean_ratio": placement.naive_ratio,
                 "max_ratio": placement.naive_ratio, "status": placement.status.value, "bound_ratio": 1.0})
    return rows


def markdown(doc) -> str:
    lines = [
        provenance(doc),
        "",
        "| GPUs | partitions | topology | method | status | time |",
        "|---:|---:|---|---|---|---:|",
    ]
    for r in doc["times"]:
        lines.append(f"| {r['gpus']:,} | {r['partitions']:,} | {r['topology']} | {r['method']} | {r['status']} | {fmt(r['median_s'])} |")
    lines += [
        "",
        "Transfer time of rank order (partition j on the j-th GPU) over layerfit's placement:",
        "",
        "| topology | objective | partitions | instances | rank order / layerfit (mean) | (max) | status | layerfit / bound |",
        "|---|---|---:|---|---:|---:|---|---:|",
    ]
    for r in doc["quality"]:
        lines.append(
            f"| {r['topology']} | {r['objective']} | {r['partitions']} | {r['instances']} | {r['mean_ratio']:.2f}× | "
            f"{r['max_ratio']:.2f}× | {r['status']} | {r['bound_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    doc = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_mapping.py",
        "machine": machine(),
        "times": bench_times(),
        "quality": bench_quality(),
    }
    write_results("mapping", doc, markdown(doc))


if __name__ == "__main__":
    main()
