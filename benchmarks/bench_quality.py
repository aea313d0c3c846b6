"""Plan quality: layerfit's exact plan against the split rules people run today.

    python benchmarks/bench_quality.py [--quick]

For every feasible instance in instances/ and seeded random families, with k = the fewest
partitions that fit (and k + 2, more devices than needed), each method's plan: the largest
partition (bytes, and time where the layers have times), whether every partition fits the
capacity, and the ratio to layerfit's optimum. Writes benchmarks/results/quality.json,
quality.md and quality.png (partition footprints against the capacity, per method, for
one real model).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_solver import machine, provenance  # noqa: E402

from layerfit import Instance, Layer, Status, load_instance, solve  # noqa: E402
from layerfit.interop.baselines import (  # noqa: E402
    accelerate_balanced,
    accelerate_sequential,
    deepspeed_parameters,
    even_split,
    torchgpipe_balance,
)
from layerfit.model.units import format_size  # noqa: E402
from layerfit.model.memory import plan_loads  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("layerfit", "even", "deepspeed-parameters", "accelerate-sequential", "accelerate-balanced", "torchgpipe-size")
REAL = ("llama", "gpt2", "bert")  # plotted: the real model where most baselines break the capacity


def plans(inst: Instance, k: int) -> dict[str, tuple[list[list[int]], int]]:
    """Each method's partitions and how many layers it left on no device."""
    sizes, capacity = inst.sizes, inst.capacity
    params = [layer.params or sizes[i] for i, layer in enumerate(inst.layers)]  # DeepSpeed counts parameters
    out = {
        "layerfit": (solve(inst, objective="min_bottleneck", num_partitions=k).partitions, 0),
        "even": (even_split(len(sizes), k), 0),
        "accelerate-sequential": accelerate_sequential(sizes, [capacity] * k),
        "accelerate-balanced": accelerate_balanced(sizes, capacity, k),
        "torchgpipe-size": (torchgpipe_balance(sizes, k), 0),
    }
    if len(sizes) <= 2000:  # its DP is O(n² k)
        out["deepspeed-parameters"] = (deepspeed_parameters(params, k), 0)
    return out


def random_families(quick: bool) -> list[Instance]:
    out = []
    for seed in range(5 if quick else 20):
        rng = random.Random(seed)
        n = rng.choice([16, 32, 64, 128])
        big = rng.choice([1, 4, 8])  # embedding and head this many times a block
        layers = []
        for i in range(n):
            weight = int(rng.uniform(0.8, 1.2) * 10**8) * (big if i in (0, n - 1) else 1)
            layers.append(Layer(f"l{i}", weight_bytes=weight, activation_bytes=rng.randint(1, 16) * 2**20,
                                time=weight / 1e11 * rng.uniform(0.8, 1.2)))
        largest = max(layer.weight_bytes + layer.activation_bytes for layer in layers)
        out.append(Instance(name=f"family-{seed}", capacity=int(largest * rng.uniform(1.5, 6.0)), layers=layers))
    return out


def evaluate(inst: Instance, k: int) -> dict:
    rows = {}
    for method, (parts, left) in plans(inst, k).items():
        used = [p for p in parts if p]
        loads = plan_loads(inst, used)  # at its place in the schedule, with a DAG's relayed tensors
        row = {
            "partitions": len(used),
            "largest_bytes": max(loads),
            "fits": left == 0 and max(loads) <= inst.capacity,
            "left_over_layers": left,
            "loads": loads,
        }
        if inst.has_times:
            row["largest_time_s"] = max(sum(inst.layers[i].time for i in p) for p in used)
        rows[method] = row
    best = rows["layerfit"]["largest_bytes"]
    for row in rows.values():
        row["ratio"] = row["largest_bytes"] / best if row["fits"] else None
    return {"instance": inst.name, "layers": inst.num_layers, "capacity": inst.capacity, "k": k, "methods": rows}


def markdown(doc) -> str:
    lines = [
        provenance(doc) + " For each feasible "
        "bundled instance and k = the fewest partitions that fit (and k + 2): the largest partition of each "
        "method's plan over layerfit's optimum (×), or *over* when a partition exceeds the capacity (or, for "
        "accelerate, layers are left for CPU offload). DeepSpeed balances parameter counts; its plans are "
        "judged in bytes like the others.",
        "",
        "| instance | k | " + " | ".join(METHODS[1:]) + " |",
        "|---|---:|" + "---:|" * (len(METHODS) - 1),
    ]
    for row in doc["bundled"]:
        cells = []
        for method in METHODS[1:]:
            r = row["methods"].get(method)
            cells.append("–" if r is None else ("over" if not r["fits"] else f"{r['ratio']:.3f}"))
        lines.append(f"| {row['instance']} | {row['k']} | " + " | ".join(cells) + " |")
    lines += ["", "Over all rows (bundled instances and seeded random families):", "",
              "| method | rows | breaks capacity | worst ratio | mean ratio | rows strictly worse than layerfit |",
              "|---|---:|---:|---:|---:|---:|"]
    for method, s in doc["summary"].items():
        lines.append(f"| {method} | {s['rows']} | {s['over']} ({100 * s['over'] / s['rows']:.0f}%) | "
                     f"{s['worst']:.3f} | {s['mean']:.3f} | {s['worse']} |")
    timed = [r for r in doc["families"] if "largest_time_s" in r["methods"]["layerfit"]]
    if timed:
        lines += ["", "On the random families (layers carry times), the slowest stage against layerfit's "
                  "(whose plan minimises memory, not time): " + ", ".join(
                      f"{method} {statistics.mean(r['methods'][method]['largest_time_s'] / r['methods']['layerfit']['largest_time_s'] for r in timed if method in r['methods']):.3f}×"
                      for method in METHODS[1:]) + " (mean)."]
    shown = _plotted(doc["bundled"])
    lines += ["", f"![partition footprints of {shown['instance']} (k = {shown['k']}) per method](benchmarks/results/quality.png)"]
    return "\n".join(lines) + "\n"


def _plotted(rows: list[dict]) -> dict:
    real = [r for r in rows if r["instance"].startswith(REAL)] or rows
    return max(real, key=lambda r: (sum(not m["fits"] for m in r["methods"].values()), r["k"]))


def plot(row: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if m in row["methods"]]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    width = 0.8 / max(len(r["loads"]) for r in row["methods"].values())
    scale, unit = (1e9, "GB") if row["capacity"] >= 1e9 else (1e6, "MB")
    for x, method in enumerate(methods):
        r = row["methods"][method]
        for j, load in enumerate(r["loads"]):
            colour = "tab:green" if load <= row["capacity"] else "tab:red"
            ax.bar(x - 0.4 + width * (j + 0.5), load / scale, width=width * 0.9, color=colour, edgecolor="black")
    ax.axhline(row["capacity"] / scale, color="black", linestyle="--", label=f"capacity {format_size(row['capacity'])}")
    ax.set_xticks(range(len(methods)), methods, rotation=15)
    ax.set_ylabel(f"partition footprint S(P) ({unit})")
    ax.set_title(f"{row['instance']}: each bar a partition, k = {row['k']} (red: over the capacity)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    bundled, families = [], []
    for path in sorted((ROOT / "instances").glob("*.json")):
        inst = load_instance(path)
        base = solve(inst)
        if (base.status is not Status.OPTIMAL or inst.constraints.structural or inst.devices is not None
                or (args.quick and inst.num_layers > 1000)):
            continue
        for k in (base.num_partitions, base.num_partitions + 2):
            if k <= inst.num_layers:
                bundled.append(evaluate(inst, k))
    for inst in random_families(args.quick):
        k = solve(inst).num_partitions
        families.append(evaluate(inst, k))
    summary = {}
    for method in METHODS[1:]:
        rows = [r["methods"][method] for r in bundled + families if method in r["methods"]]
        ratios = [r["ratio"] for r in rows if r["fits"]]
        summary[method] = {
            "rows": len(rows), "over": sum(not r["fits"] for r in rows),
            "worst": max(ratios, default=float("nan")), "mean": statistics.mean(ratios) if ratios else float("nan"),
            "worse": sum(r["ratio"] > 1 for r in rows if r["fits"]),
        }
    doc = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_quality.py" + (" --quick" if args.quick else ""),
        "machine": machine(), "bundled": bundled, "families": families, "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(doc, indent=1) + "\n")
    (RESULTS / "quality.md").write_text(markdown(doc))
    plot(_plotted(bundled), RESULTS / "quality.png")
    print(markdown(doc))


if __name__ == "__main__":
    main()
