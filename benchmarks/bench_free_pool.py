"""Free device pools: 16 devices of 3 capacities, 200 layers — CP-SAT (30 s) and the DP.

    python benchmarks/bench_free_pool.py [--quick]

Writes benchmarks/results/free_pool.json and free_pool.md. Five seeded chains (weights
20–100 MB, activations 1–16 MiB) on a pool of six 1 GB, five 1.5 GB and five 2.4 GB
devices in shuffled order. For each: greedy (the pool in its listed order), the DP over
device mixes, and CP-SAT with a 30 s limit warm-started by the DP, by greedy, and cold;
both objectives (fewest devices, then the largest partition; and all 16 devices used,
the smallest largest partition).
"""

from __future__ import annotations

import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_solver import fmt, machine, provenance, write_results  # noqa: E402

from layerfit import Device, Instance, Layer, solve, validate_plan  # noqa: E402

LIMIT_S = 30.0


def pool_instance(seed: int) -> Instance:
    rng = random.Random(seed)
    layers = [Layer(f"l{i}", weight_bytes=rng.randint(20, 100) * 10**6, activation_bytes=rng.randint(1, 16) * 2**20)
              for i in range(200)]
    caps = [1_000_000_000] * 6 + [1_500_000_000] * 5 + [2_400_000_000] * 5
    rng.shuffle(caps)
    return Instance(name=f"free-16x3-200-s{seed}", capacity="3GB", layers=layers, device_order="free",
                    devices=tuple(Device(f"gpu{i}", c) for i, c in enumerate(caps)))


def run(inst: Instance, method: str, **options) -> dict:
    started = time.perf_counter()
    plan = solve(inst, method, **options)
    elapsed = time.perf_counter() - started
    validate_plan(inst, plan)
    value = plan.secondary_objective if plan.objective_name == "min_partitions" else plan.objective
    bound = plan.secondary_bound if plan.objective_name == "min_partitions" else plan.bound
    return {"status": plan.status.value, "count": plan.num_partitions, "largest": value, "bound": bound,
            "gap": plan.gap, "seconds": elapsed}


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    rows = []
    for seed in range(1 if quick else 5):
        inst = pool_instance(seed)
        for objective, extra in (("min_partitions", {}), ("min_bottleneck", {"num_partitions": 16})):
            row = {"instance": inst.name, "objective": objective}
            if objective == "min_partitions":
                row["greedy"] = run(inst, "greedy")
            row["dp"] = run(inst, "dp", objective=objective, **extra)
            for warm in ("dp", "greedy", "none"):
                row[f"cpsat-{warm}"] = run(inst, "cpsat", objective=objective, time_limit=LIMIT_S, warm_start=warm,
                                           **extra)
            rows.append(row)
            print(inst.name, objective, {k: (v["status"], v["count"], v["largest"], round(v["seconds"], 2))
                                         for k, v in row.items() if isinstance(v, dict)}, flush=True)
    doc = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "command": "python benchmarks/bench_free_pool.py" + (" --quick" if quick else ""),
           "machine": machine(), "time_limit_s": LIMIT_S, "rows": rows}
    write_results("free_pool", doc, markdown(doc))


def markdown(doc) -> str:
    lines = [
        provenance(doc) + f" CP-SAT with {doc['time_limit_s']:g} s and 8 workers.",
        "",
        "| instance | objective | greedy | DP | CP-SAT (DP start) | CP-SAT (greedy start) | CP-SAT (cold) |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict | None, proves: bool = True) -> str:
        if r is None:
            return "—"
        gap = "" if r["status"] == "optimal" or not proves else f", gap {100 * (r['gap'] or 0):.2f} %"
        return f"{r['count']} dev, {r['largest'] / 1e9:.3f} GB, {r['status']}{gap}, {fmt(r['seconds'])}"

    for r in doc["rows"]:
        lines.append(f"| {r['instance']} | {r['objective']} | {cell(r.get('greedy'), proves=False)} | {cell(r['dp'])} | "
                     f"{cell(r['cpsat-dp'])} | {cell(r['cpsat-greedy'])} | {cell(r['cpsat-none'])} |")
    lines += ["", "Each cell: devices used, largest partition, status (gap when not proven), wall time (with a DP "
              "start, the DP's time included). Greedy proves nothing here."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
