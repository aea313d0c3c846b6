"""MIP time limits are deadlines: how long `solve(..., method="mip", time_limit=T)` takes, end
to end, on the two cases issue #15 measured (31–44 s for limits of 1–10 s before the fix).

    python benchmarks/time_limits.py [--limits 1,3,10] [--backends cbc,highs]

* ``dag-220``: a 220-node DAG (a chain with seeded skip edges of up to 8 layers, 1–16 MB
  weights, 0.5–4 MB relayed tensors), capacity 200 MB: the fewest partitions.
* ``free-24``: a free pool of 24 devices in eight capacities, 0.3–1 GB (4^8 device mixes, more
  than the DP tracks), 160 layers: the fewest devices, greedy's plan (18 devices, the pool in
  its listed order) as the warm start. CP-SAT is run beside the MIP for comparison.

For each: the wall time, the status, the plan (count and largest partition) and its bound;
every plan is checked by validate_plan. Acceptance (issue #15): wall ≤ 2 × limit + 5 s.
Prints a Markdown table (docs/results.md keeps the last run's).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from layerfit import Device, Instance, Layer, solve, validate_plan  # noqa: E402


def dag_220(seed: int = 0) -> Instance:
    rng = random.Random(seed)
    n = 220
    layers = [Layer(f"n{i}", weight_bytes=rng.randint(1, 16) * 10**6, output_bytes=rng.randint(1, 8) * 500_000)
              for i in range(n)]
    edges = [(f"n{i}", f"n{i + 1}") for i in range(n - 1)]
    edges += [(f"n{i}", f"n{i + rng.randint(2, 8)}") for i in range(n - 8) if rng.random() < 0.3]
    return Instance(name="dag-220", capacity="200MB", layers=layers, edges=tuple(sorted(set(edges))))


def free_24(seed: int = 0) -> Instance:
    rng = random.Random(seed)
    layers = [Layer(f"l{i}", weight_bytes=rng.randint(20, 100) * 10**6, activation_bytes=rng.randint(1, 16) * 2**20)
              for i in range(160)]
    caps = [cap * 10**8 for cap in (3, 4, 5, 6, 7, 8, 9, 10) for _ in range(3)]
    rng.shuffle(caps)
    return Instance(name="free-24", capacity="3GB", layers=layers, device_order="free",
                    devices=tuple(Device(f"gpu{i}", c) for i, c in enumerate(caps)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", default="1,3,10")
    parser.add_argument("--backends", default="cbc,highs,cp-sat", help="MIP backends, and cp-sat beside them")
    args = parser.parse_args()
    limits = [float(x) for x in args.limits.split(",")]
    print("| instance | backend | limit (s) | wall (s) | within 2×limit+5 s | status | partitions | largest (MB) | "
          "bound | backend status |")
    print("|---|---|---:|---:|:---:|---|---:|---:|---|---|")
    for inst in (dag_220(), free_24()):
        for backend in args.backends.split(","):
            for limit in limits:
                started = time.perf_counter()
                plan = solve(inst, "mip", backend=backend, time_limit=limit) if backend != "cp-sat" else \
                    solve(inst, "cpsat", time_limit=limit)
                wall = time.perf_counter() - started
                validate_plan(inst, plan)
                largest = f"{plan.secondary_objective / 1e6:.1f}" if plan.secondary_objective else "–"
                within = "yes" if wall <= 2 * limit + 5 else "NO"
                print(f"| {inst.name} | {backend} | {limit:g} | {wall:.1f} | {within} "
                      f"| {plan.status} | {plan.objective} | {largest} | {plan.bound} | {plan.backend_status} |",
                      flush=True)


if __name__ == "__main__":
    main()
