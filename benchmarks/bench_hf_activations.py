"""What torch saves for the backward pass against the importer's formulas, layer by layer.

    python benchmarks/bench_hf_activations.py

Two blocks at the published widths (instances/configs, or the published config's fields),
batch 1 × sequence 32, fp32 and bf16, transformers' model as it runs by default (SDPA
attention; GPT-OSS: eager, for its sinks) with its causal-LM loss: ``runtime.from_hf_model``
measures each layer's saved tensors on fake tensors (``saved_tensors_hooks``, each storage once,
parameters excluded; equal to a real CPU forward's, ``tests/test_hf_activations.py``) and
``from_hf_config`` predicts them torch-free. GPT-2 and BERT with dropout off (the formulas count
a GPU's 1-byte masks, a CPU keeps e-byte noise: see hf_families/gpt2.py). "before" is the
formula the importer had until these were calibrated: for Llama and Qwen3 the norms' fp32
copies, rotary, log-sum-exp and the loss left out, the embedding's output counted, not its
ids; for GPT-2 and BERT Korthikanti et al.'s (1-byte dropout masks, every head's s×s scores);
for Falcon its LayerNorms' fp32 statistics, no rotary, and multi-query's keys and values
counted as copies for every head. Seconds, not hours: nothing is allocated.
Writes benchmarks/results/hf_activations.json and hf_activations.md.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_solver import machine, provenance, write_results  # noqa: E402

from layerfit import from_hf_config  # noqa: E402
from layerfit.runtime import from_hf_model  # noqa: E402

SEQ = 32
CONFIGS = ROOT / "instances" / "configs"


def published(name: str, **change) -> dict:
    """A bundled config cut to two blocks (GPT-2 and BERT: dropout off)."""
    raw = {k: v for k, v in json.loads((CONFIGS / f"{name}.json").read_text()).items()
           if k not in ("torch_dtype", "dtype")}
    raw["n_layer" if raw["model_type"] == "gpt2" else "num_hidden_layers"] = 2
    if isinstance(raw.get("layer_types"), list):
        raw["layer_types"] = raw["layer_types"][:2]
    off = {"gpt2": dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
           "bert": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)}
    return raw | off.get(raw["model_type"], {}) | change


MODELS = {
    "Llama-3-8B": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, num_hidden_layers=2, rope_theta=500000.0),
    "Qwen3-8B": dict(model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, num_hidden_layers=2),
    "GPT-2": published("gpt2"),
    "GPT-2 XL": published("gpt2-xl"),
    "BERT-large": published("bert-large-uncased"),
    "Falcon-7B": published("falcon-7b"),
    "Falcon-40B": published("falcon-40b"),
    "GPT-OSS-20b": published("gpt-oss-20b"),
    "Gemma-2-9B": published("gemma-2-9b"),
    "Phi-3-mini": published("phi-3-mini-4k"),
    "OLMo-2-7B": published("olmo-2-7b"),
}
BYTES = {"fp32": 4, "bf16": 2}


def korthikanti(config: dict, name: str, e: int) -> int:
    """GPT-2's and BERT's formula before calibration (Korthikanti et al. 2022; b = 1)."""
    h = config.get("n_embd") or config["hidden_size"]
    heads = config.get("n_head") or config["num_attention_heads"]
    inner = config.get("n_inner") or config.get("intermediate_size") or 4 * h
    vocab = config["vocab_size"]
    if name in ("transformer.h.0", "transformer.h.1") or name.startswith("encoder.layer."):
        return SEQ * h * (6 * e + 1) + heads * SEQ * SEQ * (2 * e + 1) + SEQ * h * (2 * e + 1) + SEQ * inner * 2 * e
    if name == "lm_head":
        return SEQ * e * (h + vocab)
    if name == "pooler":
        return 2 * h * e
    return SEQ * h * e  # the embeddings, ln_f: an output


def falcon_before(config: dict, name: str, e: int) -> int:
    """Falcon's formula before calibration (b = 1)."""
    h, heads = config["hidden_size"], config["num_attention_heads"]
    new, multi = config.get("new_decoder_architecture", False), config.get("multi_query", True)
    norm = e * h + 8
    if name == "transformer.ln_f":
        return SEQ * norm
    if not name.startswith("transformer.h."):
        return -1  # unchanged
    core = 4 * 3 * h + 4 * heads * SEQ if multi and not new else e * (3 * h if new else 5 * h) + 4 * heads
    mlp_norm = 8 + e * h if new else 0
    return SEQ * (norm + e * h + core + e * h + e * 2 * config.get("ffn_hidden_size", 4 * h) + mlp_norm)


def before(config: dict, name: str, e: int) -> int:
    """The importer's training formula before calibration (b = 1)."""
    h, inter, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = config.get("head_dim", h // config["num_attention_heads"])
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    if name == "lm_head":
        return SEQ * e * (h + v)
    if name.startswith("model.layers."):
        norms = 3 if config["model_type"] == "qwen3" else 2  # Qwen3's counted the q/k norms' inputs
        return SEQ * e * (2 * h + norms * (q + kv)) + SEQ * e * (2 * h + 4 * inter)
    return SEQ * e * h


def main() -> None:
    rows = []
    for model, config in MODELS.items():
        for dtype, e in BYTES.items():
            measured = from_hf_model(config, batch_size=1, seq_len=SEQ, dtype=dtype, mode="training")
            predicted = from_hf_config(config, batch_size=1, seq_len=SEQ, dtype=dtype, mode="training")
            for got, want in zip(predicted.layers, measured.layers):
                kind = config["model_type"]
                if kind in ("llama", "qwen3"):
                    old = before(config, want.name, e)
                elif kind in ("gpt2", "bert"):
                    old = korthikanti(config, want.name, e)
                elif kind == "falcon":
                    old = falcon_before(config, want.name, e)
                else:
                    old = -1
                old = got.activation_bytes if old < 0 else old  # unchanged by the calibration
                rows.append(dict(model=model, dtype=dtype, layer=want.name, measured=want.activation_bytes,
                                 predicted=got.activation_bytes, before=old,
                                 ratio=want.activation_bytes / got.activation_bytes,
                                 ratio_before=want.activation_bytes / old))
    doc = dict(date=datetime.now(timezone.utc).strftime("%Y-%m-%d"), machine=machine(),
               command="python benchmarks/bench_hf_activations.py", seq_len=SEQ, rows=rows)
    lines = [provenance(doc) + f" Batch 1 × sequence {SEQ}; bytes a layer saves for the backward pass; ratio = "
             "measured / predicted.", "",
             "| model | dtype | layer | measured (torch) | predicted | ratio | before | ratio before |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        prefix, _, index = r["layer"].rpartition(".")
        block = index.isdigit() and prefix in ("model.layers", "transformer.h", "encoder.layer")
        same = [q for q in rows if q["model"] == r["model"] and q["dtype"] == r["dtype"]
                and q["layer"].rpartition(".")[0] == prefix and q["measured"] == r["measured"]
                and q["predicted"] == r["predicted"]] if block else [r]
        if same[0] is not r:
            continue  # the same as an earlier block
        layer = f"{prefix}.i" if block and len(same) > 1 else r["layer"]
        lines.append(f"| {r['model']} | {r['dtype']} | {layer} | {r['measured']:,} | {r['predicted']:,} | "
                     f"{r['ratio']:.3f} | {r['before']:,} | {r['ratio_before']:.3f} |")
    write_results("hf_activations", doc, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
