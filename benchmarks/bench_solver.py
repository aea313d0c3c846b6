"""Solver speed: DP vs chain length, CP-SAT and MIP time to proof, and the CLI as a process.

    python benchmarks/bench_solver.py [--quick]

Writes benchmarks/results/solver.json and solver.md (docs/results.md's numbers come from them).
Times are wall-clock medians over repeats on this machine; tests never assert on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from layerfit import Instance, Layer, Status, solve, validate_plan  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def chain(n: int, seed: int) -> Instance:
    """n layers of 1–100 MB weights plus 1–8 MiB activations; capacity 8 × the largest layer."""
    rng = random.Random(seed)
    layers = [
        Layer(f"l{i}", weight_bytes=rng.randint(1, 100) * 10**6 + rng.randint(0, 10**6),
              activation_bytes=rng.randint(1, 8) * 2**20)
        for i in range(n)
    ]
    return Instance(name=f"chain-{n}", capacity=max(l.weight_bytes + l.activation_bytes for l in layers) * 8, layers=layers)


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def objectives(inst: Instance):
    k = solve(inst, "dp").num_partitions
    return [("min_partitions", {}), ("min_bottleneck", {"num_partitions": k + 3})]


def bench_dp(sizes, repeats):
    rows = []
    for n in sizes:
        inst = chain(n, n)
        for objective, extra in objectives(inst):
            t, plan = timed(lambda: solve(inst, "dp", objective=objective, **extra), repeats)
            validate_plan(inst, plan)
            rows.append({"layers": n, "objective": objective, "partitions": plan.num_partitions, "median_s": t})
    return rows


def bench_models(sizes, repeats, time_limit):
    rows = []
    methods = [("cpsat", {}), ("mip", {"backend": "highs"}), ("mip", {"backend": "cbc"})]
    for n in sizes:
        inst = chain(n, n)
        reference = {obj: solve(inst, "dp", objective=obj, **extra) for obj, extra in objectives(inst)}
        for objective, extra in objectives(inst):
            for method, options in methods:
                for warm in ("dp", "greedy"):
                    if warm == "greedy" and n > 1000:
                        continue  # seconds to minutes per solve: measured at 1,000 layers only
                    run = lambda: solve(inst, method, objective=objective, time_limit=time_limit,  # noqa: E731
                                        warm_start=warm, **extra, **options)
                    t, plan = timed(run, repeats if warm == "dp" else 1)
                    validate_plan(inst, plan)
                    ref = reference[objective]
                    agrees = (plan.objective, plan.secondary_objective) == (ref.objective, ref.secondary_objective)
                    rows.append({
                        "layers": n, "objective": objective, "method": method, "backend": plan.backend,
                        "warm_start": warm, "status": plan.status.value, "agrees_with_dp": agrees,
                        "gap": plan.gap, "median_s": t,
                    })
    return rows


SCALING = {  # method spec -> largest chain it is timed on
    "greedy": 100_000, "dp": 100_000, "cpsat": 10_000, "mip:highs": 10_000, "mip:cbc": 10_000,
}


def bench_scaling(quick: bool):
    """Time per solve against chain length, per method and objective; the fitted exponent."""
    import math

    sizes = [16, 100, 1000, 10_000] + ([] if quick else [100_000])
    rows = []
    for spec, largest in SCALING.items():
        method, _, backend = spec.partition(":")
        options = {"backend": backend} if backend else {}
        for objective in ("min_partitions", "min_bottleneck"):
            if method == "greedy" and objective == "min_bottleneck":
                continue
            for n in sizes:
                if n > largest or (quick and method in ("cpsat", "mip") and n > 1000):
                    continue
                inst = chain(n, n)
                extra = {} if objective == "min_partitions" else {"num_partitions": solve(inst, "dp").num_partitions + 3}
                t, plan = timed(lambda: solve(inst, method, objective=objective, **extra, **options), 1 if n >= 10_000 else 3)
                rows.append({"method": spec, "objective": objective, "layers": n, "median_s": t, "status": plan.status.value})
    fits = {}
    for key in {(r["method"], r["objective"]) for r in rows}:
        points = [(math.log(r["layers"]), math.log(r["median_s"])) for r in rows
                  if (r["method"], r["objective"]) == key and r["layers"] >= 1000 and r["median_s"] > 0]
        if len(points) >= 2:
            mx = sum(x for x, _ in points) / len(points)
            my = sum(y for _, y in points) / len(points)
            slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
            fits[f"{key[0]} {key[1]}"] = slope
    return rows, fits


def plot_scaling(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for key in sorted({(r["method"], r["objective"]) for r in rows}):
        points = sorted((r["layers"], r["median_s"]) for r in rows if (r["method"], r["objective"]) == key)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                linestyle="-" if key[1] == "min_partitions" else "--", label=f"{key[0]}, {key[1]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("layers in the chain")
    ax.set_ylabel("wall time per solve (s)")
    ax.set_title("Solve time against chain length (log–log; exact methods prove optimality)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_cli(repeats):
    cmd = [sys.executable, "-m", "layerfit.cli", "solve", str(ROOT / "instances" / "seed-30b-h100-hbm.json")]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return {"command": "layerfit solve instances/seed-30b-h100-hbm.json", "median_s": statistics.median(times)}


def machine():
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("ortools", "pulp", "highspy", "networkx", "torch", "transformers"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "versions": versions}


def provenance(doc) -> str:
    """'Measured DATE with `COMMAND` on N cores (CPU), Python X, package versions.'"""
    m = doc["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return f"Measured {doc['date']} with `{doc['command']}` on {m['cores']} cores ({m['cpu']}), Python {m['python']}, {versions}."


def write_results(name: str, doc: dict, text: str) -> None:
    """benchmarks/results/NAME.json and NAME.md; the markdown is printed too."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def markdown(doc) -> str:
    lines = [
        provenance(doc) + " Medians of wall time.",
        "",
        "DP (exact, both objectives; `min_bottleneck` with k = k* + 3):",
        "",
        "| layers | min_partitions | min_bottleneck |",
        "|---:|---:|---:|",
    ]
    by_n: dict[int, dict[str, float]] = {}
    for row in doc["dp"]:
        by_n.setdefault(row["layers"], {})[row["objective"]] = row["median_s"]
    for n, times in sorted(by_n.items()):
        lines.append(f"| {n:,} | {fmt(times['min_partitions'])} | {fmt(times['min_bottleneck'])} |")
    lines += [
        "",
        "CP-SAT and MIP, time to proven optimality (warm start from DP, the default, or from greedy):",
        "",
        "| layers | objective | method | warm start | status | = DP | time |",
        "|---:|---|---|---|---|---|---:|",
    ]
    for row in doc["models"]:
        status = row["status"] if row["status"] == "optimal" else f"{row['status']} (gap {100 * (row['gap'] or 0):.2f}%)"
        name = row["method"] if row["method"] == "cpsat" else f"mip ({row['backend']})"
        lines.append(
            f"| {row['layers']:,} | {row['objective']} | {name} | {row['warm_start']} | {status} | "
            f"{'yes' if row['agrees_with_dp'] else 'no'} | {fmt(row['median_s'])} |"
        )
    lines += ["", "Scaling (one solve per size from 10,000 layers on; exponent of time ∝ layers^e fitted from 1,000 layers up):", "",
              "| method, objective | " + " | ".join(f"{n:,}" for n in sorted({r['layers'] for r in doc['scaling']})) + " | exponent |",
              "|---|" + "---:|" * (len({r['layers'] for r in doc['scaling']}) + 1)]
    all_sizes = sorted({r["layers"] for r in doc["scaling"]})
    for key in sorted({(r["method"], r["objective"]) for r in doc["scaling"]}):
        by_n = {r["layers"]: r["median_s"] for r in doc["scaling"] if (r["method"], r["objective"]) == key}
        exponent = doc["exponents"].get(f"{key[0]} {key[1]}")
        lines.append(f"| {key[0]}, {key[1]} | " + " | ".join(fmt(by_n[n]) if n in by_n else "–" for n in all_sizes)
                     + f" | {'–' if exponent is None else f'{exponent:.2f}'} |")
    lines += ["", "![solve time against chain length](benchmarks/results/solver_scaling.png)"]
    cli = doc["cli"]
    lines += ["", f"`{cli['command']}` as a whole process (imports included): {fmt(cli['median_s'])}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    args = parser.parse_args()
    dp_sizes = [16, 100, 1000, 10_000] if args.quick else [16, 100, 1000, 10_000, 100_000]
    model_sizes = [1000] if args.quick else [1000, 5000]
    repeats = 3 if args.quick else 5
    doc = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_solver.py" + (" --quick" if args.quick else ""),
        "machine": machine(),
        "dp": bench_dp(dp_sizes, repeats),
        "models": bench_models(model_sizes, repeats, time_limit=5.0 if args.quick else 30.0),
        "cli": bench_cli(repeats),
    }
    doc["scaling"], doc["exponents"] = bench_scaling(args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "solver.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / "solver.md").write_text(markdown(doc))
    plot_scaling(doc["scaling"], RESULTS / "solver_scaling.png")
    print(markdown(doc))
    if any(not row["agrees_with_dp"] and row["status"] == Status.OPTIMAL.value for row in doc["models"]):
        raise SystemExit("an exact method disagrees with the DP")


if __name__ == "__main__":
    main()
