"""Runtime: pipeline throughput of layerfit's plan against an even layer split, on CPU ranks.

    python benchmarks/bench_runtime.py

An uneven model (a wide input projection and output head, narrow blocks: like an LM's
embedding and head against its blocks) on 4 gloo ranks, inference with GPipe. The even
split is Megatron's and vLLM's default (equal layer counts, the remainder to the last
stages); layerfit's plan minimises the largest partition. Predicted ratio: the even
split's largest partition over layerfit's (compute here grows with parameters); measured:
layerfit's throughput over the even split's, medians of repeated runs. Writes
benchmarks/results/runtime.json and runtime.md.
"""

from __future__ import annotations

import json
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench_solver import machine, provenance  # noqa: E402

import runtime  # noqa: E402
from runtime.synthetic import synthetic_instance, synthetic_model  # noqa: E402
from solver import Plan, Status, solve  # noqa: E402
from solver.metrics import plan_metrics  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RANKS, BATCH, MICRO = 4, 512, 8
SHAPE = {"blocks": 8, "hidden": 128, "ffn": 512, "width": 4096}


def even_split(n: int, k: int) -> list[list[int]]:
    base, extra = divmod(n, k)
    sizes = [base + (1 if j >= k - extra else 0) for j in range(k)]  # remainder to the last stages (vLLM)
    out, start = [], 0
    for size in sizes:
        out.append(list(range(start, start + size)))
        start += size
    return out


def as_plan(instance, partitions) -> Plan:
    metrics = plan_metrics(instance, partitions)
    return Plan(status=Status.FEASIBLE, partitions=partitions, objective_name="min_bottleneck",
                objective=metrics["max_bytes"], bound=0, method="even", instance_name=instance.name,
                num_layers=instance.num_layers, metrics=metrics, num_partitions_requested=len(partitions))


def factory():
    return synthetic_model(**SHAPE)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run per plan instead of three")
    args = parser.parse_args()
    model = factory()
    instance = synthetic_instance(model, micro_batch=BATCH // MICRO, capacity="10GB")
    plans = {
        "layerfit": solve(instance, objective="min_bottleneck", num_partitions=RANKS),
        "even": as_plan(instance, even_split(instance.num_layers, RANKS)),
    }
    x = torch.randn(BATCH, SHAPE["width"])
    rows = {}
    for name, plan in plans.items():
        throughputs = []
        for _ in range(1 if args.quick else 3):
            result = runtime.execute(plan, model, x, micro_batches=MICRO, schedule="gpipe")
            throughputs.append(result.report["throughput_samples_per_s"])
        rows[name] = {
            "partitions": [len(p) for p in plan.partitions],
            "largest_bytes": plan.metrics["max_bytes"],
            "throughput_samples_per_s": statistics.median(throughputs),
        }
    predicted = rows["even"]["largest_bytes"] / rows["layerfit"]["largest_bytes"]
    measured = rows["layerfit"]["throughput_samples_per_s"] / rows["even"]["throughput_samples_per_s"]
    doc = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_runtime.py" + (" --quick" if args.quick else ""),
        "machine": machine(),
        "model": {**SHAPE, "layers": instance.num_layers},
        "ranks": RANKS, "batch": BATCH, "micro_batches": MICRO,
        "plans": rows, "predicted_ratio": predicted, "measured_ratio": measured,
    }
    lines = [
        provenance(doc) + f" {RANKS} gloo ranks, GPipe, batch {BATCH} in {MICRO} micro-batches, inference; the model has a "
        f"{SHAPE['width']}-wide input projection and head around {SHAPE['blocks']} blocks of width {SHAPE['hidden']}.",
        "",
        "| plan | layers per rank | largest partition | throughput |",
        "|---|---|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['partitions']} | {row['largest_bytes']:,} B | {row['throughput_samples_per_s']:.0f} samples/s |")
    lines += ["", f"layerfit / even: measured {measured:.2f}× throughput, predicted {predicted:.2f}× (largest partition, even over layerfit). "
              "The prediction counts bytes (weights and activations) as the proxy for work; "
              "here four ranks share two cores, which the prediction does not model."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "runtime.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / "runtime.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
