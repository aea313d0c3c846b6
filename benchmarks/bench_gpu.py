"""GPU: a stage's memory predicted against measured, and the L2 reservation's effect on its time.

    python benchmarks/bench_gpu.py        (needs a CUDA GPU; scripts/gpu-check.sh runs it with the GPU tests)

1. Memory. The synthetic LM-like model as one stage on the GPU (one rank, NCCL), inference
   and a training step under GPipe and 1F1B: the plan's bytes (``profile_module`` on the
   GPU, with the schedule's micro-batches in flight; training with the gradients plain SGD
   keeps) beside what the rank counted from its tensors and the CUDA allocator's peak.
2. L2. The seed's step 4: a stage whose weights fit the persisting L2 set-aside, a forward
   on a small batch (so reading the weights dominates) timed with CUDA events, each forward
   after a copy of a buffer four times the L2 (other work that evicts the cache) — without
   the reservation, then with it (``runtime.l2_cache.reserve_weights``).

Writes benchmarks/results/gpu.json and gpu.md; without a GPU it writes nothing and exits 2.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from layerfit import runtime  # noqa: E402
from layerfit.runtime.l2_cache import reserve_weights  # noqa: E402
from layerfit.runtime.synthetic import synthetic_model  # noqa: E402
from layerfit import Training, solve  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MEMORY_SHAPE = {"blocks": 8, "hidden": 1024, "ffn": 4096, "width": 4096, "head_width": 32000}
BATCH, MICRO = 256, 4
L2_SHAPE = {"blocks": 2, "hidden": 1024, "ffn": 1024, "width": 1024}
L2_ROWS, L2_RUNS = 8, 200


def memory_rows() -> list[dict]:
    torch.manual_seed(0)
    model = synthetic_model(**MEMORY_SHAPE)
    x = torch.randn(BATCH, MEMORY_SHAPE["width"])
    y = torch.randn(BATCH, MEMORY_SHAPE["head_width"])
    rows = []
    for train, schedule in ((False, "gpipe"), (True, "gpipe"), (True, "1f1b")):
        profiled = runtime.profile_module(model.cuda(), x[: BATCH // MICRO].cuda(), device="cuda", training=train,
                                          capacity="140GB", name="synthetic")
        model.cpu()
        instance = dataclasses.replace(profiled, schedule=schedule, micro_batches=MICRO,
                                       training=Training("none") if train else None)
        plan = solve(instance, objective="min_bottleneck", num_partitions=1)
        report = runtime.execute(plan, model, x, target=y if train else None, micro_batches=MICRO, schedule=schedule,
                                 train=train, steps=3).report
        (rank,) = report["ranks"]
        rows.append({
            "mode": ("training, " if train else "inference, ") + schedule,
            "predicted_bytes": rank["predicted_bytes"],
            "counted_bytes": rank["measured_bytes"],
            "cuda_max_allocated_bytes": rank["cuda_max_allocated_bytes"],
            "step_s": report["step_s"],
        })
    return rows


def l2_row() -> dict:
    torch.manual_seed(0)
    device = torch.device("cuda", 0)
    stage = synthetic_model(**L2_SHAPE).to(device).eval()
    x = torch.randn(L2_ROWS, L2_SHAPE["width"], device=device)
    l2_bytes = torch.cuda.get_device_properties(device).L2_cache_size
    evict_src = torch.empty(4 * l2_bytes, dtype=torch.uint8, device=device)
    evict_dst = torch.empty_like(evict_src)

    def forward_ms() -> float:
        times = []
        with torch.no_grad():
            for _ in range(L2_RUNS):
                evict_dst.copy_(evict_src)  # other work through the cache
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                stage(x)
                end.record()
                torch.cuda.synchronize(device)
                times.append(start.elapsed_time(end))
        return statistics.median(times)

    forward_ms()  # warm-up: kernels chosen, allocator filled
    without = forward_ms()
    reservation = reserve_weights(stage, device)
    with_reservation = forward_ms()
    return {"weight_bytes": reservation["weight_bytes"], "l2_bytes": l2_bytes, "reservation": reservation,
            "forward_ms_without": without, "forward_ms_with": with_reservation}


def main() -> int:
    if not torch.cuda.is_available():
        print("bench_gpu: needs a CUDA GPU (torch.cuda.is_available() is False); nothing written", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0)
    memory, l2 = memory_rows(), l2_row()
    doc = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_gpu.py",
        "gpu": name, "torch": torch.__version__, "cuda": torch.version.cuda,
        "memory_model": {**MEMORY_SHAPE, "batch": BATCH, "micro_batches": MICRO},
        "memory": memory,
        "l2_model": {**L2_SHAPE, "rows": L2_ROWS, "runs": L2_RUNS},
        "l2": l2,
    }
    lines = [
        f"Measured {doc['date']} with `{doc['command']}` on one {name}, torch {torch.__version__} (CUDA {torch.version.cuda}). "
        f"One stage, one rank (NCCL); the synthetic model with {MEMORY_SHAPE['blocks']} blocks of width "
        f"{MEMORY_SHAPE['hidden']}, a {MEMORY_SHAPE['width']}-wide input and a {MEMORY_SHAPE['head_width']}-wide head, fp32, "
        f"batch {BATCH} in {MICRO} micro-batches.",
        "",
        "| run | predicted (plan) | counted from tensors | CUDA max allocated | allocated / predicted |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in memory:
        lines.append(f"| {row['mode']} | {row['predicted_bytes']:,} B | {row['counted_bytes']:,} B | "
                     f"{row['cuda_max_allocated_bytes']:,} B | {row['cuda_max_allocated_bytes'] / row['predicted_bytes']:.2f} |")
    lines += ["", f"L2 persisting reservation ({l2['weight_bytes']:,} B of weights, L2 {l2['l2_bytes']:,} B): a forward of "
              f"{L2_ROWS} rows after a copy of {4 * l2['l2_bytes']:,} B, median of {L2_RUNS}: "
              f"{l2['forward_ms_without']:.4f} ms without, {l2['forward_ms_with']:.4f} ms with the reservation "
              f"({l2['forward_ms_without'] / l2['forward_ms_with']:.2f}×). Reservation: {l2['reservation']['note']}."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gpu.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (RESULTS / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
