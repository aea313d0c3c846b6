"""Writes the bundled instances: the seed's worked example, real models on real GPUs, and
seeded random families. Run from anywhere: ``python instances/generate.py``.

Sources of the numbers (also in each instance's description):
* GPU capacities: vendor specs as gathered in the project's shared data (H100 SXM5: 80 GB
  HBM3, 50 MiB L2 — the seed says "50MB"; H200: 141 GB; B200: 180 GB; A100: 40 MiB L2;
  RTX 4090: 24 GB, 72 MiB L2).
* Model shapes: the checkpoints' Hugging Face config.json fields (configs/); parameter
  counts per layer by from_hf_config, which reproduces the published totals to the
  parameter; L40S 48 GB and A100 80 GB by vendor spec.

The real models come from their config.json (configs/) through layerfit's importer,
``from_hf_config``; run this with layerfit installed (the project's .venv).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from layerfit import from_hf_config

HERE = Path(__file__).resolve().parent

SEED_MODEL = {
    "num_layers": 16,
    "total_params": 30_000_000_000,
    "dtype": "bf16",
    "batch_size": 128,
    "seq_len": 10000,
    "hidden_size": 4096,
}


def write(name: str, instance: dict) -> None:
    instance = {"name": name, **instance}
    (HERE / f"{name}.json").write_text(json.dumps(instance, indent=1) + "\n")


# -- the seed's worked example ------------------------------------------------------------


def seed_family() -> None:
    write("seed-30b-h100-l2", {
        "description": "The seed's worked example: 30B params in BF16, 16 layers, batch 128, seq 10000, "
        "hidden 4096, against the H100's L2 as the seed states it (50MB). Infeasible: every layer holds "
        "3.75 GB of weights and a 10.49 GB activation (the seed's '5.24GB' counts elements).",
        "capacity": "50MB",
        "model": SEED_MODEL,
    })
    for gpu, capacity in (("h100", "80GB"), ("h200", "141GB"), ("b200", "180GB")):
        write(f"seed-30b-{gpu}-hbm", {
            "description": f"The seed's model against one {gpu.upper()}'s HBM ({capacity}, vendor spec): "
            "feasible; greedy leaves the last partition nearly empty, the optimum balances them.",
            "capacity": capacity,
            "model": SEED_MODEL,
        })
    write("seed-small-h100-l2", {
        "description": "A model whose layers fit in L2: 16 layers of 6M params (BF16), batch 1, seq 256, "
        "hidden 1024, against the H100's 50 MiB L2 (52,428,800 B, vendor spec).",
        "capacity": "50MiB",
        "model": {"num_layers": 16, "total_params": 96_000_000, "dtype": "bf16",
                  "batch_size": 1, "seq_len": 256, "hidden_size": 1024},
    })


# -- real models ----------------------------------------------------------------------
# Every real model is read from its checkpoint's config.json (configs/, copied from the
# project's shared data) by layerfit's own importer, whose parameter counts equal the
# published totals to the parameter (tests/test_hf_config.py).


def hf(config: str, *, batch: int, seq: int, **options) -> dict:
    """A real model's instance as JSON, from configs/CONFIG.json by from_hf_config."""
    inst = from_hf_config(HERE / "configs" / f"{config}.json", batch_size=batch, seq_len=seq, **options)
    return inst.to_dict()


def gpus(*groups: tuple[str, str, int]) -> list[dict]:
    """A pool's devices in order: (kind, capacity, how many) groups, named kind-0, kind-1, …"""
    return [{"name": f"{kind}-{i}", "capacity": capacity} for kind, capacity, count in groups for i in range(count)]


def body(data: dict) -> dict:
    """An imported instance without its own name and description (the bundled file gives them)."""
    return {k: v for k, v in data.items() if k not in ("name", "description")}


def real(name: str, description: str, config: str, *, capacity: str, batch: int, seq: int, **options) -> None:
    write(name, {"description": description, **body(hf(config, batch=batch, seq=seq, capacity=capacity, **options))})


def real_models() -> None:
    real("llama-2-7b-rtx4090-hbm", "Llama-2-7B inference in BF16, batch 16 × seq 4096 activations per layer, on "
         "24 GB RTX 4090s (vendor spec) as pipeline stages.", "llama-2-7b", capacity="24GB", batch=16, seq=4096,
         dtype="bf16")
    real("llama-2-7b-h100-hbm", "Llama-2-7B inference in BF16, batch 64 × seq 4096, on 80 GB H100s (vendor spec).",
         "llama-2-7b", capacity="80GB", batch=64, seq=4096, dtype="bf16")
    real("llama-3-8b-kv-a100-hbm", "Llama-3-8B serving in BF16 with its KV cache (8 KV heads), batch 32 × seq 8192, "
         "on 80 GB A100s (vendor spec).", "llama-3-8b", capacity="80GB", batch=32, seq=8192, kv_cache=True)
    real("llama-3.1-70b-h100-hbm", "Llama-3.1-70B inference in BF16, batch 1 × seq 8192, on 80 GB H100s (vendor "
         "spec).", "llama-3.1-70b", capacity="80GB", batch=1, seq=8192)
    real("llama-3.1-70b-fp8-l40s-hbm", "Llama-3.1-70B with FP8 weights, batch 4 × seq 8192 BF16 activations, on "
         "48 GB L40S GPUs (vendor spec).", "llama-3.1-70b", capacity="48GB", batch=4, seq=8192, dtype="fp8")
    real("mixtral-8x7b-kv-h100-hbm", "Mixtral-8x7B (MoE, 8 experts) serving in BF16 with its KV cache, batch 16 × "
         "seq 8192, on 80 GB H100s (vendor spec).", "mixtral-8x7b-v0.1", capacity="80GB", batch=16, seq=8192,
         kv_cache=True)
    real("qwen2.5-72b-kv-h200-hbm", "Qwen2.5-72B serving in BF16 with its KV cache, batch 16 × seq 8192, on "
         "141 GB H200s (vendor spec: 141 GB HBM3e).", "qwen2.5-72b", capacity="141GB", batch=16, seq=8192,
         kv_cache=True)
    real("llama-2-7b-train-adam-h100-hbm", "Llama-2-7B training with mixed-precision Adam (bf16 weights and "
         "gradients, fp32 master weights and moments: 16 B per parameter), batch 4 × seq 4096, activations saved "
         "for the backward pass, on 80 GB H100s.", "llama-2-7b", capacity="80GB", batch=4, seq=4096, dtype="bf16",
         mode="training")
    real("llama-3.1-70b-train-adam-h200-hbm", "Llama-3.1-70B training with mixed-precision Adam (16 B per "
         "parameter), batch 1 × seq 8192, on 141 GB H200s (vendor spec).", "llama-3.1-70b", capacity="141GB",
         batch=1, seq=8192, mode="training")
    real("mixtral-8x7b-train-adam-h200-hbm", "Mixtral-8x7B training with mixed-precision Adam, batch 1 × seq "
         "4096, on 141 GB H200s: every expert's weights and state are held, two experts' activations a token.",
         "mixtral-8x7b-v0.1", capacity="141GB", batch=1, seq=4096, mode="training")
    # Pipeline training under 1F1B: stage j of p holds min(p − j, m) micro-batches' activations,
    # so the last stages have room the first do not (activation_bytes is per micro-batch here).
    train = hf("llama-2-7b", batch=2, seq=4096, dtype="bf16", mode="training", capacity="80GB")
    write("llama-2-7b-1f1b-train-h100-hbm", {
        "description": "Llama-2-7B training with mixed-precision Adam under 1F1B with 16 micro-batches of 2 × 4096 "
        "tokens (activation_bytes: what one micro-batch saves for the backward pass), on 80 GB H100s.",
        **body(train),
        "schedule": "1f1b", "micro_batches": 16,
    })
    write("llama-2-7b-1f1b-recompute-train-h100-hbm", {
        "description": "The same 1F1B training with activation recomputation: each stage keeps only its input per "
        "micro-batch in flight and one layer's saved tensors, so two stages suffice; greedy, planning every stage "
        "for 16 micro-batches, packs the first to 97 % and the exact plan balances them.",
        **body(train),
        "schedule": "1f1b", "micro_batches": 16, "activation_recompute": True,
    })
    # The seed's 30B model as 16 layers of 1.875B params, 8 micro-batches of 16 × 10000 tokens × 4096 hidden.
    seed_layers = [{"name": f"layer{i}", "params": 1_875_000_000, "activation_bytes": 16 * 10000 * 4096 * 2}
                   for i in range(16)]
    for schedule, why in (
        ("gpipe", "every stage holds all 8 micro-batches"),
        ("1f1b", "stage j of p holds min(p − j, 8) micro-batches, so later stages take more layers and fewer "
                 "stages suffice than when every stage is planned for the worst"),
    ):
        write(f"seed-30b-{schedule}-b200-hbm", {
            "description": f"The seed's 30B model (BF16) under {schedule.upper()} with 8 micro-batches of 16 "
            f"sequences × 10000 tokens × 4096 hidden, on 180 GB B200s: {why}.",
            "capacity": "180GB", "dtype": "bf16", "schedule": schedule, "micro_batches": 8, "layers": seed_layers,
        })
    constrained = hf("llama-2-7b", batch=16, seq=4096, dtype="bf16", capacity="24GB")
    write("llama-2-7b-constrained-rtx4090-hbm", {
        "description": "Llama-2-7B inference (batch 16 × seq 4096) on 24 GB RTX 4090s with 2 GB held back per GPU "
        "for the CUDA context, the embedding pinned to the first stage and the head to the last, and at most 12 "
        "layers a stage.",
        **body(constrained),
        "constraints": {"pinned": {"model.embed_tokens": 0, "lm_head": -1}, "max_layers_per_partition": 12,
                        "reserve": "2GB"},
    })
    pool = hf("llama-3.1-70b", batch=4, seq=8192, dtype="fp8", capacity="80GB")
    write("llama-3.1-70b-fp8-mixed-pool", {
        "description": "Llama-3.1-70B with FP8 weights, batch 4 × seq 8192, on an ordered pool of mixed GPUs (vendor "
        "capacities): an L40S 48 GB, two H100 80 GB and an A100 40 GB, partition j on device j.",
        **body(pool),
        "devices": gpus(("l40s", "48GB", 1), ("h100", "80GB", 2), ("a100", "40GB", 1)),
    })
    # Time as the objective: layer times from FLOPs at 40 % of the H100 SXM's 989 TFLOP/s dense BF16
    # (vendor spec); the embedding is a lookup (no time) but heavy, the head heavy in both.
    h100 = 0.4 * 989e12
    real("llama-3.1-70b-timed-h100-hbm", "Llama-3.1-70B inference, batch 1 × seq 8192, on 80 GB H100s, with layer "
         "times from FLOPs at 40 % of 989 TFLOP/s: balancing bytes and balancing time disagree.", "llama-3.1-70b",
         capacity="80GB", batch=1, seq=8192, flops_per_s=h100)
    real("llama-2-7b-train-timed-h100-hbm", "Llama-2-7B training (mixed-precision Adam), batch 4 × seq 4096, on 80 GB "
         "H100s, with forward + backward times from FLOPs at 40 % of 989 TFLOP/s.", "llama-2-7b", capacity="80GB",
         batch=4, seq=4096, dtype="bf16", mode="training", flops_per_s=h100)
    # Free pools: the planner picks the devices and their order; greedy fills them as listed.
    pool = hf("llama-3.1-70b", batch=4, seq=8192, dtype="fp8", capacity="80GB")
    write("llama-3.1-70b-fp8-free-pool", {
        "description": "Llama-3.1-70B with FP8 weights, batch 4 × seq 8192, on a free pool of two A100 40 GB, two "
        "L40S 48 GB and two H100 80 GB (vendor capacities, listed in that order): the planner chooses which "
        "devices and in which order.",
        **body(pool),
        "device_order": "free",
        "devices": gpus(("a100", "40GB", 2), ("l40s", "48GB", 2), ("h100", "80GB", 2)),
    })
    moe = hf("mixtral-8x7b-v0.1", batch=8, seq=4096, capacity="80GB", kv_cache=True)
    write("mixtral-8x7b-kv-free-pool", {
        "description": "Mixtral-8x7B serving in BF16 with its KV cache, batch 8 × seq 4096, on a free pool of four "
        "RTX 4090 24 GB, two A100 40 GB and two H100 80 GB (vendor capacities).",
        **body(moe),
        "device_order": "free",
        "devices": gpus(("rtx4090", "24GB", 4), ("a100", "40GB", 2), ("h100", "80GB", 2)),
    })
    ordered = hf("llama-3-8b", batch=16, seq=4096, capacity="48GB", kv_cache=True)
    write("llama-3-8b-kv-ordered-pool", {
        "description": "Llama-3-8B serving in BF16 with its KV cache, batch 16 × seq 4096, on an ordered pool (partition "
        "j on device j) of an L40S 48 GB and two RTX 4090 24 GB: greedy fills the L40S first, the optimum balances.",
        **body(ordered),
        "devices": gpus(("l40s", "48GB", 1), ("rtx4090", "24GB", 2)),
    })
    # Against L2: small batches, and the finer split (attention and MLP apart) that can make it fit.
    real("gpt2-int8-rtx4090-l2", "GPT-2 small with INT8 weights and BF16 activations (batch 1, seq 256) against "
         "the RTX 4090's 72 MiB L2 (75,497,472 B, vendor spec). lm_head is tied to the token embedding: a "
         "partition holding both pays the table once.", "gpt2", capacity="72MiB", batch=1, seq=256, dtype="int8")
    real("gpt2-bf16-rtx4090-l2", "GPT-2 small in BF16 against the RTX 4090's 72 MiB L2: infeasible, the embedding "
         "table alone (78.8 MB) exceeds it.", "gpt2", capacity="72MiB", batch=1, seq=1024, dtype="bf16")
    real("gpt2-int8-sublayer-h100-l2", "GPT-2 small, INT8 weights, attention and MLP as separate layers, batch 1 × "
         "seq 128, against the H100's 50 MiB L2 (52,428,800 B, vendor spec).", "gpt2", capacity="50MiB", batch=1,
         seq=128, dtype="int8", split="sublayer")
    real("bert-large-fp8-a100-l2", "BERT-large (BertModel) with FP8 weights, batch 1 × seq 512 BF16 activations, "
         "against the A100's 40 MiB L2 (41,943,040 B, vendor spec).", "bert-large-uncased", capacity="40MiB",
         batch=1, seq=512, dtype="fp8")
    real("bert-large-fp8-sublayer-a100-l2", "BERT-large with FP8 weights split into attention and MLP, batch 4 × "
         "seq 512, against the A100's 40 MiB L2.", "bert-large-uncased", capacity="40MiB", batch=4, seq=512,
         dtype="fp8", split="sublayer")
    real("llama-2-7b-int4-rtx4090-l2", "Llama-2-7B with INT4 weights, batch 1 × seq 128, whole blocks against the "
         "RTX 4090's 72 MiB L2: infeasible, a block's 101 MB of weights exceed it.", "llama-2-7b", capacity="72MiB",
         batch=1, seq=128, dtype="int4")
    real("llama-2-7b-int4-sublayer-rtx4090-l2", "The same with attention and MLP apart: every piece fits the "
         "72 MiB L2 (the MLP's 67.6 MB of weights the largest).", "llama-2-7b", capacity="72MiB", batch=1, seq=128,
         dtype="int4", split="sublayer")


# -- serving: the most KV-cache tokens (objective max_kv_tokens) ----------------------------
# The memory vLLM holds when it serves (layerfit.interop.serving, its defaults: KV cache per
# token, one scheduler step's activations, the sampler's logits, gpu_memory_utilization 0.9),
# on an ordered pool of GPUs by name (their memory as the driver reports it, layerfit.model.gpus),
# 1 GiB held back on each for the CUDA context and NCCL, and vLLM's placement as pins: the
# embedding and the first block on rank 0, the last block, the norm and the head on the last.
# benchmarks/bench_kv_tokens.py plans the same models beside vLLM's own split rules.


def serving(name: str, description: str, config: str, dtype: str, pool: list[str]) -> None:
    import dataclasses

    from layerfit import Device
    from layerfit.interop.export import framework_pins
    from layerfit.interop.serving import Serving

    inst = from_hf_config(HERE / "configs" / f"{config}.json", batch_size=1, seq_len=4096, dtype=dtype,
                          serving=Serving())
    devices = tuple(Device(f"GPU{j}", gpu) for j, gpu in enumerate(pool))
    inst = dataclasses.replace(inst, capacity=None, devices=devices,
                               constraints=dataclasses.replace(inst.constraints, reserve=1 << 30))
    write(name, {"description": description, **body(framework_pins(inst, "vllm")[0].to_dict())})


def serving_models() -> None:
    serving("llama-3-70b-fp8-serving-8xl4", "Llama-3-70B with FP8 weights served by vLLM on 8 L4 GPUs (24 GB; "
            "23,034 MiB as the driver reports it), as in vLLM's own measurement of its split rules: KV cache per "
            "token (bf16), embedding and head in bf16, kv_tokens 4096.", "llama-3-70b", "fp8", ["L4"] * 8)
    serving("llama-3.1-405b-serving-16xh100", "Llama-3.1-405B in BF16 served by vLLM on 16 H100-80GB GPUs "
            "(pipeline parallel only): KV cache per token, kv_tokens 4096.", "llama-3.1-405b", "bf16",
            ["H100-80GB"] * 16)
    serving("qwen2.5-72b-serving-4xh100", "Qwen2.5-72B in BF16 served by vLLM on 4 H100-80GB GPUs: KV cache per "
            "token, kv_tokens 4096.", "qwen2.5-72b", "bf16", ["H100-80GB"] * 4)
    serving("llama-3.1-70b-serving-mixed-pool", "Llama-3.1-70B in BF16 served by vLLM on an ordered pool of an "
            "A100-40GB, two L40S and an A100-40GB (rank j on GPU j): vLLM's even split does not fit the A100s.",
            "llama-3.1-70b", "bf16", ["A100-40GB", "L40S", "L40S", "A100-40GB"])


# -- DAG models ---------------------------------------------------------------------------


def unet_layers(*, batch: int, size: int, act_bytes: int = 2) -> tuple[list[dict], list[list[str]]]:
    """The U-Net of Ronneberger et al. 2015 (channels 64 … 1024, two 3×3 convolutions a level,
    2×2 up-convolutions, a 1×1 head to 2 classes), with same-padding on a size × size image:
    params exact from its shapes, activations batch × channels × side² elements."""
    def conv(cin, cout, k=3):
        return k * k * cin * cout + cout

    widths = [64, 128, 256, 512]
    layers, edges = [], []
    channels = 1
    for level, width in enumerate(widths):
        side = size >> level
        layers.append({"name": f"enc{level}", "params": conv(channels, width) + conv(width, width),
                       "activation_bytes": batch * width * side * side * act_bytes})
        channels = width
    side = size >> len(widths)
    layers.append({"name": "bottom", "params": conv(512, 1024) + conv(1024, 1024),
                   "activation_bytes": batch * 1024 * side * side * act_bytes})
    channels = 1024
    for level in reversed(range(len(widths))):
        width, side = widths[level], size >> level
        # up-convolution 2×2 (channels → width), then two 3×3 over the concatenation (2·width)
        layers.append({"name": f"dec{level}", "params": conv(channels, width, 2) + conv(2 * width, width)
                       + conv(width, width), "activation_bytes": batch * width * side * side * act_bytes})
        edges.append([f"enc{level}", f"dec{level}"])  # the skip: the encoder's output, concatenated
        channels = width
    layers.append({"name": "head", "params": conv(64, 2, 1), "activation_bytes": batch * 2 * size * size * act_bytes})
    names = [layer["name"] for layer in layers]
    edges += [[a, b] for a, b in zip(names, names[1:])]
    return layers, edges


def encoder_decoder_layers(*, batch: int, seq: int, act_bytes: int = 2) -> tuple[list[dict], list[list[str]]]:
    """T5-base's shapes (d_model 768, 12 encoder and 12 decoder blocks, d_ff 3072, 12 heads,
    vocab 32128, no biases): every decoder block's cross-attention reads the encoder's output."""
    d, ff, vocab, blocks = 768, 3072, 32128, 12
    hidden = batch * seq * d * act_bytes
    encoder_block = 4 * d * d + 2 * d * ff + 2 * d  # self-attention, feed-forward, two RMS norms
    decoder_block = encoder_block + 4 * d * d + d  # and cross-attention with its norm
    layers = [{"name": "shared", "params": vocab * d, "activation_bytes": hidden}]
    layers += [{"name": f"encoder.{i}", "params": encoder_block + (384 if i == 0 else 0), "activation_bytes": hidden}
               for i in range(blocks)]
    layers.append({"name": "encoder.final_norm", "params": d, "activation_bytes": hidden})
    layers += [{"name": f"decoder.{i}", "params": decoder_block + (384 if i == 0 else 0), "activation_bytes": hidden}
               for i in range(blocks)]
    layers.append({"name": "decoder.final_norm", "params": d, "activation_bytes": hidden})
    layers.append({"name": "lm_head", "params": vocab * d, "activation_bytes": batch * seq * vocab * act_bytes})
    edges = [["shared", "encoder.0"], ["shared", "decoder.0"]]
    edges += [[f"encoder.{i}", f"encoder.{i + 1}"] for i in range(blocks - 1)]
    edges += [[f"encoder.{blocks - 1}", "encoder.final_norm"]]
    edges += [["encoder.final_norm", f"decoder.{i}"] for i in range(blocks)]  # cross-attention
    edges += [[f"decoder.{i}", f"decoder.{i + 1}"] for i in range(blocks - 1)]
    edges += [[f"decoder.{blocks - 1}", "decoder.final_norm"], ["decoder.final_norm", "lm_head"]]
    return layers, edges


def dag_models() -> None:
    layers, edges = unet_layers(batch=192, size=512)
    write("unet-skips-rtx4090-hbm", {
        "description": "The U-Net of Ronneberger et al. 2015 (31M params, shapes from the paper) in BF16 on a batch "
        "of 192 images of 512 × 512, as a DAG with its four skip connections, on 24 GB RTX 4090s (vendor spec): a skip "
        "crossing a stage is held by every stage it passes, so where to cut is not where greedy cuts.",
        "capacity": "24GB", "dtype": "bf16", "layers": layers, "edges": edges,
    })
    layers, edges = unet_layers(batch=2, size=128)
    write("unet-skips-fp8-a100-l2", {
        "description": "The same U-Net with FP8 weights, batch 2 × 128 × 128 BF16 activations, against the A100's "
        "40 MiB L2 (vendor spec).", "capacity": "40MiB", "dtype": "fp8", "layers": layers, "edges": edges,
    })
    layers, edges = encoder_decoder_layers(batch=1, seq=512)
    write("t5-base-fp8-rtx4090-l2", {
        "description": "An encoder–decoder with T5-base's shapes (12 + 12 blocks, d_model 768, vocab 32128) with FP8 "
        "weights, batch 1 × seq 512 BF16 activations, as a DAG: the encoder's output feeds every decoder block's "
        "cross-attention, so each split inside the decoder relays it; against the RTX 4090's 72 MiB L2.",
        "capacity": "72MiB", "dtype": "fp8", "layers": layers, "edges": edges,
    })


# -- seeded random families -----------------------------------------------------------


def random_chain(rng: random.Random, n: int, kind: str, *, with_time: bool = False) -> list[dict]:
    """n layers in bytes: weights and an activation each, drawn by ``kind``."""
    layers = []
    for i in range(n):
        if kind == "uniform":
            weight = rng.randint(1, 100) * 10**6
        elif kind == "lognormal":
            weight = int(rng.lognormvariate(17.0, 1.0))
        elif kind == "transformer":
            big = i in (0, n - 1)  # embedding and head
            weight = int((400 if big else 100) * 10**6 * rng.uniform(0.9, 1.1))
        else:  # alternating attention / MLP
            weight = int((33 if i % 2 == 0 else 67) * 10**6 * rng.uniform(0.95, 1.05))
        layer = {"name": f"l{i}", "weight_bytes": weight, "activation_bytes": rng.randint(1, 8) * 2**20}
        if with_time:
            layer["time"] = round(weight / 1e12 * rng.uniform(0.5, 2.0), 9)
        layers.append(layer)
    return layers


def random_families() -> None:
    families = [
        # name, layers, kind, capacity factor (× the largest layer), seed
        ("random-uniform-24", 24, "uniform", 3.0, 1),
        ("random-lognormal-40", 40, "lognormal", 2.5, 2),
        ("random-transformer-64", 64, "transformer", 2.0, 3),
        ("random-alternating-32", 32, "alternating", 4.3, 4),
        ("random-tight-100", 100, "uniform", 1.05, 5),
        ("random-uniform-1k", 1000, "uniform", 8.0, 6),
        ("random-lognormal-1k", 1000, "lognormal", 5.0, 7),
        ("random-transformer-1k", 1000, "transformer", 3.0, 8),
        ("random-uniform-10k", 10000, "uniform", 20.0, 9),
        ("random-lognormal-10k", 10000, "lognormal", 10.0, 10),
    ]
    for name, n, kind, factor, seed in families:
        rng = random.Random(seed)
        layers = random_chain(rng, n, kind)
        largest = max(layer["weight_bytes"] + layer["activation_bytes"] for layer in layers)
        write(name, {
            "description": f"Seeded random family: {n} layers, {kind} weights, capacity {factor} × the "
            f"largest layer (instances/generate.py, seed {seed}).",
            "capacity": int(largest * factor),
            "layers": layers,
        })
    rng = random.Random(11)
    layers = random_chain(rng, 48, "uniform", with_time=True)
    largest = max(layer["weight_bytes"] + layer["activation_bytes"] for layer in layers)
    write("random-timed-48", {
        "description": "Seeded random family with per-layer times (seconds), capacity 3.5 × the largest "
        "layer (instances/generate.py, seed 11).",
        "capacity": int(largest * 3.5),
        "layers": layers,
    })


README_HEAD = """# Bundled instances

Every file is an instance in layerfit's JSON v1 (see docs/concepts.md). `generate.py` beside
them writes them all, and this page (`python instances/generate.py`); the random families are
seeded, so the files are reproducible byte for byte. Capacities come from vendor specs; model
shapes from the checkpoints' `config.json`, with per-layer parameter counts that reproduce the
published totals (Llama-2-7B 6,738,415,616; Llama-3.1-70B 70,553,706,496; GPT-2 124,439,808;
BERT-large 335,141,888 — checked by `tests/test_bundled_instances.py`).

Sizes in the files are bytes (integers) or unit strings: decimal `MB`/`GB` are powers of 10, binary
`MiB`/`GiB` powers of 2. The seed methodology calls the H100's L2 "50MB"; the vendor figure is
50 MiB (52,428,800 B): `seed-30b-h100-l2.json` keeps the seed's number, `seed-small-h100-l2.json`
uses the vendor's.

"""


def write_readme() -> None:
    """One line per instance, from each file's description."""
    lines = []
    for path in sorted(HERE.glob("*.json")):
        description = json.loads(path.read_text())["description"]
        lines.append(f"- `{path.name}` — {description}")
    (HERE / "README.md").write_text(README_HEAD + "\n".join(lines) + "\n")


if __name__ == "__main__":
    seed_family()
    real_models()
    serving_models()
    dag_models()
    random_families()
    write_readme()
