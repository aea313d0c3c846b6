"""KV-cache tokens a pipeline serves, by split rule, beside vLLM's own rules.

    python benchmarks/bench_kv_tokens.py

A pipeline-parallel vLLM gives every rank the KV blocks the tightest rank's free memory buys;
the tokens a plan serves are its tightest stage's (layerfit.model.memory.plan_kv_tokens). Each
model is imported torch-free with the memory vLLM holds when serving (``from_hf_config(...,
serving=Serving())``: KV cache per token in its dtype, FP8 checkpoints' embedding and head in
bf16, one scheduler step's activations, the sampler's fp32 logits on the last rank,
gpu_memory_utilization 0.9) on an ordered pool of GPUs (rank j on GPU j, the GPU's memory as
its driver reports it, 1 GiB held back on each for the CUDA context and NCCL), with vLLM's
placement as pins (embedding and first block on rank 0, last block, norm and head on the last).
Plans compared on the same k ranks:

* vLLM's default ``get_pp_indices`` (equal decoder layers, the remainder to the middle ranks);
* vLLM's ``less_layer_in_first_last_partition`` (its pull request #6920, which measured 1,476 →
  3,078 KV blocks for Llama-3-70B FP8 on 8×L4);
* layerfit ``min_bottleneck`` (the most balanced bytes with the KV cache of the instance's
  tokens) and layerfit's greedy (GreedyLayerPartition over the pool, its own count);
* layerfit ``max_kv_tokens``, exact.

Tokens are exact under the model; blocks are tokens // 16 (vLLM's default block size).
Writes benchmarks/results/kv_tokens.json and kv_tokens.md.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_solver import machine, provenance, write_results  # noqa: E402

from layerfit import Device, from_hf_config, solve  # noqa: E402
from layerfit.interop.baselines import vllm_partitions  # noqa: E402
from layerfit.interop.export import BLOCK_NAME, framework_pins  # noqa: E402
from layerfit.interop.serving import Serving  # noqa: E402
from layerfit.model.instance import Constraints  # noqa: E402
from layerfit.model.memory import plan_kv_tokens  # noqa: E402

CONFIGS = ROOT / "instances" / "configs"
RESERVE = 1 << 30  # CUDA context and NCCL buffers; gpu_memory_utilization holds back the rest
BLOCK = 16

# (label, config, weights dtype, GPUs in rank order, Serving options beyond vLLM's defaults)
CASES = [
    ("Llama-3-70B FP8 on 8×L4 (vLLM's measurement)", "llama-3-70b", "fp8", ["L4"] * 8, {}),
    ("The same, logits for all 8,192 tokens of a step (max_num_seqs 8192)", "llama-3-70b", "fp8", ["L4"] * 8,
     {"max_num_seqs": 8192}),
    ("Llama-3.1-405B on 16×H100-80GB", "llama-3.1-405b", "bf16", ["H100-80GB"] * 16, {}),
    ("Qwen2.5-72B on 4×H100-80GB", "qwen2.5-72b", "bf16", ["H100-80GB"] * 4, {}),
    ("Llama-3.1-70B on a mixed pool (A100-40GB, 2×L40S, A100-40GB)", "llama-3.1-70b", "bf16",
     ["A100-40GB", "L40S", "L40S", "A100-40GB"], {}),
]


def serving_instance(config: str, dtype: str, gpus: list[str], options: dict):  # type: ignore[no-untyped-def]
    """The model as vLLM serves it, on an ordered pool of ``gpus`` with vLLM's pins."""
    inst = from_hf_config(CONFIGS / f"{config}.json", batch_size=1, seq_len=4096, dtype=dtype,
                          serving=Serving(**options))
    devices = tuple(Device(f"GPU{j}", gpu) for j, gpu in enumerate(gpus))
    constraints = dataclasses.replace(inst.constraints, reserve=RESERVE)
    inst = dataclasses.replace(inst, capacity=None, devices=devices, constraints=constraints)
    return framework_pins(inst, "vllm")[0]


def tokens_of(instance, parts) -> int | None:  # type: ignore[no-untyped-def]
    """The tokens a plan serves; None when a stage does not hold its weights."""
    tokens, _ = plan_kv_tokens(instance, parts)
    return tokens if tokens is not None and tokens > 0 else None


def run_case(label: str, config: str, dtype: str, gpus: list[str], options: dict) -> dict:
    inst = serving_instance(config, dtype, gpus, options)
    k = len(gpus)
    names = [layer.name for layer in inst.layers]
    rows = {}
    for rule in ("even", "fewer-first-last"):
        parts = vllm_partitions(names, rule, k)
        rows[f"vLLM {rule}"] = (parts, tokens_of(inst, parts))
    balanced = solve(inst, objective="min_bottleneck", num_partitions=k)
    rows["layerfit min_bottleneck"] = (balanced.partitions, tokens_of(inst, balanced.partitions)
                                       if balanced.status.has_plan else None)
    unpinned = dataclasses.replace(inst, constraints=Constraints(reserve=RESERVE, tied=inst.constraints.tied,
                                   gpu_memory_utilization=inst.constraints.gpu_memory_utilization))
    greedy = solve(unpinned, "greedy")
    rows["layerfit greedy"] = (greedy.partitions, tokens_of(inst, greedy.partitions) if greedy.status.has_plan
                               else None)
    started = time.perf_counter()
    best = solve(inst, objective="max_kv_tokens", num_partitions=k)
    seconds = time.perf_counter() - started
    rows["layerfit max_kv_tokens"] = (best.partitions, best.objective if best.status.has_plan else None)
    base = rows["vLLM even"][1]
    out = {"label": label, "config": config, "dtype": dtype, "gpus": gpus, "layers": inst.num_layers,
           "bytes_per_token": best.metrics.get("kv_tokens", {}).get("bytes_per_token"),
           "max_kv_tokens_status": best.status.value, "max_kv_tokens_seconds": seconds, "plans": []}
    for name, (parts, tokens) in rows.items():
        blocks = [sum(1 for i in p if BLOCK_NAME.match(names[i])) for p in parts]
        out["plans"].append({"plan": name, "stages": len(parts), "decoder_layers": blocks, "tokens": tokens,
                             "blocks": None if tokens is None else tokens // BLOCK,
                             "ratio_to_vllm_even": None if tokens is None or not base else tokens / base})
    return out


def markdown(doc: dict) -> str:
    lines = [
        "KV-cache tokens a pipeline serves (the tightest rank's), per split rule, with vLLM's serving memory "
        f"(gpu_memory_utilization 0.9, 1 GiB reserve a GPU, max_num_batched_tokens 8192, max_num_seqs 256). "
        + provenance(doc), "",
    ]
    for case in doc["cases"]:
        lines += [f"**{case['label']}** ({case['layers']} layers, {case['bytes_per_token']:,} B of KV a token; "
                  f"max_kv_tokens {case['max_kv_tokens_status']} in {case['max_kv_tokens_seconds']:.2f} s)", "",
                  "| plan | decoder layers per rank | KV tokens | KV blocks | × vLLM even |", "|---|---|---:|---:|---:|"]
        for row in case["plans"]:
            tokens = "does not fit" if row["tokens"] is None else f"{row['tokens']:,}"
            blocks = "—" if row["blocks"] is None else f"{row['blocks']:,}"
            ratio = "—" if row["ratio_to_vllm_even"] is None else f"{row['ratio_to_vllm_even']:.2f}×"
            layers = ",".join(str(b) for b in row["decoder_layers"])
            lines.append(f"| {row['plan']} | {layers} | {tokens} | {blocks} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    doc = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "command": "python benchmarks/bench_kv_tokens.py",
           "machine": machine(), "cases": [run_case(*case) for case in CASES]}
    write_results("kv_tokens", doc, markdown(doc))


if __name__ == "__main__":
    main()
