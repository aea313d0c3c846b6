"""Plan quality on the bundled instances: greedy against the exact methods.

    python benchmarks/bench_compare.py

Runs what `layerfit compare instances/` runs and writes benchmarks/results/compare.json and
compare.md (a markdown table for docs/results.md).
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_solver import fmt, machine, provenance, write_results  # noqa: E402

from layerfit.cli import COMPARE_METHODS, _instance_files, compare_instances, summarise  # noqa: E402
from layerfit.model.units import format_size  # noqa: E402



def _time_cell(method: str, result: dict) -> str:
    if result["status"] == "n/a":
        return "n/a"
    shown = fmt(result["solve_time_s"])
    return shown if result["status"] in ("optimal", "infeasible") or method == "greedy" else f"{shown} ({result['status']})"


def markdown(doc) -> str:
    lines = [
        provenance(doc) + " The same solves as `layerfit compare instances/`. k: partitions; largest: the "
        "largest partition S_max; max/mean: S_max over the mean partition. Sizes in SI units.",
        "",
        "| instance | layers | capacity | greedy k | optimal k | greedy largest | optimal largest | greedy / optimal | greedy max/mean | optimal max/mean | proof | "
        + " | ".join(f"{meth}" for meth in doc["methods"]) + " |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|" + "---:|" * len(doc["methods"]),
    ]
    for s in doc["instances"]:
        def cell(value, f):
            return "–" if value is None else f(value)

        ratio = (
            s["greedy_largest_bytes"] / s["optimal_largest_bytes"]
            if s["greedy_largest_bytes"] and s["optimal_largest_bytes"] else None
        )
        times = " | ".join(_time_cell(meth, s["methods"][meth]) for meth in doc["methods"])
        lines.append(
            f"| {s['instance']} | {s['layers']:,} | {format_size(s['capacity'])} | {cell(s['greedy_partitions'], str)} | "
            f"{cell(s['optimal_partitions'], str)} | {cell(s['greedy_largest_bytes'], format_size)} | "
            f"{cell(s['optimal_largest_bytes'], format_size)} | {cell(ratio, lambda r: f'{r:.3f}')} | "
            f"{cell(s['greedy_max_over_mean'], lambda v: f'{v:.3f}')} | {cell(s['optimal_max_over_mean'], lambda v: f'{v:.3f}')} | "
            f"{s['proof']} | {times} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    methods = list(COMPARE_METHODS)
    rows = compare_instances(_instance_files([str(ROOT / "instances")]), methods, time_limit=10.0, max_layers=None)
    doc = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_compare.py",
        "machine": machine(),
        "methods": methods,
        "instances": [{**summarise(r), "file": str(Path(r["file"]).relative_to(ROOT))} for r in rows],
    }
    write_results("compare", doc, markdown(doc))


if __name__ == "__main__":
    main()
