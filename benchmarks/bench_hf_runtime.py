"""Runtime on a Hugging Face checkpoint: layerfit's time-balanced plan against the even split.

    python benchmarks/bench_hf_runtime.py [--quick]

The model: a Llama-architecture causal LM of 187 M parameters (750 MB in fp32) with the
proportions of Llama-3.2-1B halved in width — hidden 1024, 8 blocks, MLP 4 × hidden, grouped
queries (16 heads, 4 KV heads), a 64,000-token vocabulary (62.5 × hidden, as Llama-3.2-1B's
128,256 / 2,048) and the head tied to the embedding — built by transformers with seeded random
weights and saved with ``save_pretrained`` into a temporary folder. Inference, GPipe, on 2 and 4
gloo ranks of this machine's cores, each rank reading only its own layers from the checkpoint.

Each layer is timed alone on one micro-batch (``runtime.profile_module(time_layers=True)``
on transformers' model, with a rank's share of the cores) and layerfit plans
``min_stage_time`` on those times; the even split is Megatron's and vLLM's default (equal layer
counts, vLLM's remainder rule: ``solver.baselines.even_split``). Predicted step time: as
``bench_runtime.py`` (m micro-batches take (m + k − 1) slots of the slowest stage, never less
than the work over the cores). Per rank, the parameters it read and the activations it held
are measured against ``from_hf_config`` at the run's micro-batch and sequence.
Writes benchmarks/results/hf_runtime.json and hf_runtime.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench_runtime import as_plan, predicted_step_s  # noqa: E402
from bench_solver import machine, provenance, write_results  # noqa: E402

import runtime  # noqa: E402
from runtime.hf import layer_names  # noqa: E402
from solver import solve  # noqa: E402
from solver.baselines import even_split  # noqa: E402

RANK_COUNTS, BATCH, MICRO, SEQ = (2, 4), 8, 8, 64
CONFIG = {"vocab_size": 64000, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 8,
          "num_attention_heads": 16, "num_key_value_heads": 4, "tie_word_embeddings": True}


def save_model(folder: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**CONFIG)).eval()
    model.save_pretrained(folder)
    return model


def measure(plan, directory: Path, ids: torch.Tensor, instance, cores: int, runs: int, steps: int) -> dict:
    throughputs, slowest, reports = [], [], []
    for _ in range(runs):
        report = runtime.execute(plan, directory, ids, micro_batches=MICRO, schedule="gpipe", steps=steps).report
        throughputs.append(report["throughput_samples_per_s"])
        slowest.append(max(r["forward_s_per_micro_batch"] for r in report["ranks"]))
        reports.append(report)
    predicted = predicted_step_s(instance, plan, cores, MICRO)
    ranks = reports[0]["ranks"]
    return {
        "partitions": [len(p) for p in plan.partitions],
        "slowest_stage_predicted_s": plan.metrics["max_time"],
        "slowest_stage_measured_s": statistics.median(slowest),
        "step_predicted_s": predicted,
        "throughput_predicted_samples_per_s": BATCH / predicted,
        "throughput_samples_per_s": statistics.median(throughputs),
        "threads": ranks[0]["threads"],
        "ranks": [{key: r[key] for key in ("layers", "predicted_weight_bytes", "param_bytes", "loaded_bytes",
                                           "predicted_activation_bytes", "activation_bytes")} for r in ranks],
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run of two steps per plan instead of three of five")
    args = parser.parse_args()
    runs, steps = (1, 2) if args.quick else (3, 5)
    cores = len(os.sched_getaffinity(0))
    ids = torch.randint(0, CONFIG["vocab_size"], (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    cases = []
    with tempfile.TemporaryDirectory(prefix="layerfit-bench-") as folder:
        directory = Path(folder)
        model = save_model(directory)
        names = layer_names(model)
        checkpoint_bytes = sum(f.stat().st_size for f in directory.glob("*.safetensors"))
        for k in RANK_COUNTS:
            torch.set_num_threads(runtime.threads_per_rank(k))  # time the layers as a rank runs them
            instance = runtime.profile_module(model, ids[: BATCH // MICRO], layers=names, time_layers=True,
                                              capacity="10GB", name="llama-187m")
            plans = {"layerfit": solve(instance, objective="min_stage_time", num_partitions=k),
                     "even": as_plan(instance, even_split(instance.num_layers, k))}
            rows = {name: measure(plan, directory, ids, instance, cores, runs, steps) for name, plan in plans.items()}
            cases.append({
                "ranks": k,
                "layer_times_s": [layer.time for layer in instance.layers],
                "plans": rows,
                "predicted_ratio": rows["even"]["step_predicted_s"] / rows["layerfit"]["step_predicted_s"],
                "measured_ratio": rows["layerfit"]["throughput_samples_per_s"] / rows["even"]["throughput_samples_per_s"],
            })
    doc = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_hf_runtime.py" + (" --quick" if args.quick else ""),
        "machine": machine(),
        "model": {**CONFIG, "parameters": sum(p.numel() for p in model.parameters()), "checkpoint_bytes": checkpoint_bytes},
        "batch": BATCH, "micro_batches": MICRO, "seq_len": SEQ, "runs": runs, "steps": steps, "cases": cases,
    }
    write_results("hf_runtime", doc, render(doc, cores))


def _mb(value: int | None) -> str:
    return "–" if value is None else f"{value / 1e6:.1f}"


def render(doc: dict, cores: int) -> str:
    model, runs, steps = doc["model"], doc["runs"], doc["steps"]
    lines = [
        provenance(doc) + f" transformers' LlamaForCausalLM, {model['parameters'] / 1e6:.0f} M parameters "
        f"({model['checkpoint_bytes'] / 1e6:.0f} MB of safetensors, fp32): hidden {model['hidden_size']}, "
        f"{model['num_hidden_layers']} blocks, vocabulary {model['vocab_size']:,}, head tied to the embedding. "
        f"gloo ranks, GPipe, batch {doc['batch']} × {doc['seq_len']} tokens in {doc['micro_batches']} micro-batches, "
        f"inference, {steps} timed steps after a warm-up, median of {runs} run{'s' if runs > 1 else ''}. Layer times "
        "measured alone, per micro-batch.",
        "",
        "| ranks (threads each) | plan | layers per rank | slowest stage, predicted | slowest stage, measured | "
        "throughput, predicted | throughput, measured |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for case in doc["cases"]:
        for name, row in case["plans"].items():
            lines.append(
                f"| {case['ranks']} ({row['threads']}) | {name} | {row['partitions']} | "
                f"{row['slowest_stage_predicted_s'] * 1e3:.1f} ms | {row['slowest_stage_measured_s'] * 1e3:.1f} ms | "
                f"{row['throughput_predicted_samples_per_s']:.2f} samples/s | {row['throughput_samples_per_s']:.2f} samples/s |")
    lines.append("")
    for case in doc["cases"]:
        lines.append(f"- {case['ranks']} ranks on {cores} cores: layerfit / even measured {case['measured_ratio']:.2f}× "
                     f"throughput, predicted {case['predicted_ratio']:.2f}×.")
    lines += ["", "Bytes per rank (MB; predicted: `from_hf_config` at micro-batch "
              f"{doc['batch'] // doc['micro_batches']}, sequence {doc['seq_len']}; activations: each layer's output, one "
              "micro-batch):", "",
              "| ranks | plan | rank | layers | weights, predicted | parameters held | read from checkpoint | "
              "activations, predicted | activations, measured |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for case in doc["cases"]:
        for name, row in case["plans"].items():
            for r, rank in enumerate(row["ranks"]):
                span = rank["layers"][0] if len(rank["layers"]) == 1 else f"{rank['layers'][0]} … {rank['layers'][-1]}"
                lines.append(f"| {case['ranks']} | {name} | {r} | {span} | {_mb(rank['predicted_weight_bytes'])} | "
                             f"{_mb(rank['param_bytes'])} | {_mb(rank['loaded_bytes'])} | "
                             f"{_mb(rank['predicted_activation_bytes'])} | {_mb(rank['activation_bytes'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
