"""Writes the bundled instances: the seed's worked example, real models on real GPUs, and
seeded random families. Run from anywhere: ``python instances/generate.py``.

Sources of the numbers (also in each instance's description):
* GPU capacities: vendor specs as gathered in the project's shared data (H100 SXM5: 80 GB
  HBM3, 50 MiB L2 — the seed says "50MB"; H200: 141 GB; B200: 180 GB; A100: 40 MiB L2;
  RTX 4090: 24 GB, 72 MiB L2).
* Model shapes: the checkpoints' Hugging Face config.json fields (Llama-2-7B,
  Llama-3.1-70B, GPT-2, BERT-large); parameter counts per layer by the architectures'
  formulas below, which reproduce the published totals to the parameter.

The real-model layer lists here are written out by hand; layerfit's config importer
(a later issue) produces them from config.json directly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
BF16 = 2

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


def llama_layers(*, hidden, intermediate, heads, kv_heads, vocab, blocks, batch, seq, act_bytes=BF16):
    """Llama: bias-free q/k/v/o (GQA), gated MLP of three matrices, two RMSNorms; untied head."""
    head_dim = hidden // heads
    block = (
        hidden * hidden * 2                      # q and o projections
        + hidden * kv_heads * head_dim * 2       # k and v projections
        + 3 * hidden * intermediate              # gate, up, down
        + 2 * hidden                             # two RMSNorm weights
    )
    hidden_act = batch * seq * hidden * act_bytes
    layers = [{"name": "embed_tokens", "params": vocab * hidden, "activation_bytes": hidden_act}]
    layers += [{"name": f"layers.{i}", "params": block, "activation_bytes": hidden_act} for i in range(blocks)]
    layers.append({"name": "norm", "params": hidden, "activation_bytes": hidden_act})
    layers.append({"name": "lm_head", "params": vocab * hidden, "activation_bytes": batch * seq * vocab * act_bytes})
    return layers


def gpt2_layers(*, hidden, blocks, vocab, positions, batch, seq, act_bytes=BF16):
    """GPT-2: learned positions, biases everywhere, two LayerNorms per block, MLP 4 × hidden."""
    block = (
        hidden * 3 * hidden + 3 * hidden          # c_attn
        + hidden * hidden + hidden                # attn c_proj
        + hidden * 4 * hidden + 4 * hidden        # c_fc
        + 4 * hidden * hidden + hidden            # mlp c_proj
        + 4 * hidden                              # ln_1, ln_2 (weight and bias)
    )
    hidden_act = batch * seq * hidden * act_bytes
    layers = [{"name": "wte+wpe", "params": vocab * hidden + positions * hidden, "activation_bytes": hidden_act}]
    layers += [{"name": f"h.{i}", "params": block, "activation_bytes": hidden_act} for i in range(blocks)]
    # lm_head is tied to wte: it adds no parameters here (tied groups come with a later issue).
    layers.append({"name": "ln_f", "params": 2 * hidden, "activation_bytes": hidden_act})
    return layers


def bert_layers(*, hidden, intermediate, blocks, vocab, positions, type_vocab, batch, seq, act_bytes=BF16):
    """BERT (BertModel): three embeddings and a LayerNorm, blocks with biases, a pooler."""
    block = (
        4 * (hidden * hidden + hidden)            # q, k, v, attention output
        + 2 * hidden                              # attention LayerNorm
        + hidden * intermediate + intermediate    # intermediate dense
        + intermediate * hidden + hidden          # output dense
        + 2 * hidden                              # output LayerNorm
    )
    hidden_act = batch * seq * hidden * act_bytes
    layers = [{"name": "embeddings", "params": (vocab + positions + type_vocab) * hidden + 2 * hidden,
               "activation_bytes": hidden_act}]
    layers += [{"name": f"encoder.layer.{i}", "params": block, "activation_bytes": hidden_act} for i in range(blocks)]
    layers.append({"name": "pooler", "params": hidden * hidden + hidden, "activation_bytes": batch * hidden * act_bytes})
    return layers


LLAMA2_7B = dict(hidden=4096, intermediate=11008, heads=32, kv_heads=32, vocab=32000, blocks=32)
LLAMA31_70B = dict(hidden=8192, intermediate=28672, heads=64, kv_heads=8, vocab=128256, blocks=80)
GPT2 = dict(hidden=768, blocks=12, vocab=50257, positions=1024)
BERT_LARGE = dict(hidden=1024, intermediate=4096, blocks=24, vocab=30522, positions=512, type_vocab=2)


def real_models() -> None:
    layers = llama_layers(**LLAMA2_7B, batch=16, seq=4096)
    assert sum(layer["params"] for layer in layers) == 6_738_415_616  # published Llama-2-7B total
    write("llama-2-7b-rtx4090-hbm", {
        "description": "Llama-2-7B inference in BF16, batch 16 × seq 4096 activations per layer, on 24 GB "
        "RTX 4090s (vendor spec) as pipeline stages.",
        "capacity": "24GB", "dtype": "bf16", "layers": layers,
    })
    write("llama-2-7b-h100-hbm", {
        "description": "Llama-2-7B inference in BF16, batch 64 × seq 4096, on 80 GB H100s (vendor spec).",
        "capacity": "80GB", "dtype": "bf16", "layers": llama_layers(**LLAMA2_7B, batch=64, seq=4096),
    })
    layers = llama_layers(**LLAMA31_70B, batch=1, seq=8192)
    assert sum(layer["params"] for layer in layers) == 70_553_706_496  # published Llama-3.1-70B total
    write("llama-3.1-70b-h100-hbm", {
        "description": "Llama-3.1-70B inference in BF16, batch 1 × seq 8192, on 80 GB H100s (vendor spec).",
        "capacity": "80GB", "dtype": "bf16", "layers": layers,
    })
    write("llama-3.1-70b-fp8-l40s-hbm", {
        "description": "Llama-3.1-70B with FP8 weights, batch 4 × seq 8192 BF16 activations, on 48 GB L40S "
        "GPUs (vendor spec).",
        "capacity": "48GB", "dtype": "fp8", "layers": llama_layers(**LLAMA31_70B, batch=4, seq=8192),
    })
    write("llama-2-7b-train-adam-h100-hbm", {
        "description": "Llama-2-7B training with mixed-precision Adam (bf16 weights and gradients, fp32 master "
        "weights and moments: 16 B per parameter), batch 4 × seq 4096 BF16 activations per layer, on 80 GB H100s.",
        "capacity": "80GB", "dtype": "bf16", "training": {"optimizer": "adam"},
        "layers": llama_layers(**LLAMA2_7B, batch=4, seq=4096),
    })
    write("llama-3.1-70b-train-adam-h200-hbm", {
        "description": "Llama-3.1-70B training with mixed-precision Adam (16 B per parameter), batch 1 × seq "
        "8192, on 141 GB H200s (vendor spec).",
        "capacity": "141GB", "dtype": "bf16", "training": {"bytes_per_param": 16},
        "layers": llama_layers(**LLAMA31_70B, batch=1, seq=8192),
    })
    # Pipeline training under 1F1B: stage j of p holds min(p − j, m) micro-batches' activations,
    # so the last stages have room the first do not (activation_bytes is per micro-batch here).
    write("llama-2-7b-1f1b-train-h100-hbm", {
        "description": "Llama-2-7B training with mixed-precision Adam under 1F1B with 16 micro-batches of 2 × 4096 "
        "tokens (activation_bytes per micro-batch, 32 saved tensors' worth per block), on 80 GB H100s.",
        "capacity": "80GB", "dtype": "bf16", "training": {"optimizer": "adam"}, "schedule": "1f1b",
        "micro_batches": 16,
        "layers": [{**layer, "activation_bytes": layer["activation_bytes"] * 32}
                   for layer in llama_layers(**LLAMA2_7B, batch=2, seq=4096)],
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
    write("llama-2-7b-constrained-rtx4090-hbm", {
        "description": "Llama-2-7B inference (batch 16 × seq 4096) on 24 GB RTX 4090s with 2 GB held back per GPU "
        "for the CUDA context, the embedding pinned to the first stage and the head to the last, and at most 12 "
        "layers a stage.",
        "capacity": "24GB", "dtype": "bf16",
        "constraints": {"pinned": {"embed_tokens": 0, "lm_head": -1}, "max_layers_per_partition": 12,
                        "reserve": "2GB"},
        "layers": llama_layers(**LLAMA2_7B, batch=16, seq=4096),
    })
    write("llama-3.1-70b-fp8-mixed-pool", {
        "description": "Llama-3.1-70B with FP8 weights, batch 4 × seq 8192, on an ordered pool of mixed GPUs (vendor "
        "capacities): an L40S 48 GB, two H100 80 GB and an A100 40 GB, partition j on device j.",
        "capacity": "80GB", "dtype": "fp8",
        "devices": [{"name": "l40s-0", "capacity": "48GB"}, {"name": "h100-0", "capacity": "80GB"},
                    {"name": "h100-1", "capacity": "80GB"}, {"name": "a100-0", "capacity": "40GB"}],
        "layers": llama_layers(**LLAMA31_70B, batch=4, seq=8192),
    })
    layers = gpt2_layers(**GPT2, batch=1, seq=1024)
    assert sum(layer["params"] for layer in layers) == 124_439_808  # published GPT-2 small total
    write("gpt2-int8-rtx4090-l2", {
        "description": "GPT-2 small with INT8 weights and BF16 activations (batch 1, seq 1024) against the "
        "RTX 4090's 72 MiB L2 (75,497,472 B, vendor spec). lm_head is tied to the token embedding.",
        "capacity": "72MiB", "dtype": "int8", "layers": layers,
    })
    write("gpt2-bf16-rtx4090-l2", {
        "description": "GPT-2 small in BF16 against the RTX 4090's 72 MiB L2: infeasible, the embedding "
        "table alone (78.8 MB) exceeds it.",
        "capacity": "72MiB", "dtype": "bf16", "layers": gpt2_layers(**GPT2, batch=1, seq=1024),
    })
    layers = bert_layers(**BERT_LARGE, batch=1, seq=512)
    assert sum(layer["params"] for layer in layers) == 335_141_888  # BertModel, bert-large-uncased
    write("bert-large-fp8-a100-l2", {
        "description": "BERT-large (BertModel) with FP8 weights, batch 1 × seq 512 BF16 activations, against "
        "the A100's 40 MiB L2 (41,943,040 B, vendor spec).",
        "capacity": "40MiB", "dtype": "fp8", "layers": layers,
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

Every file is an instance in layerfit's JSON v1 (see the project README). `generate.py` beside
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
    random_families()
    write_readme()
