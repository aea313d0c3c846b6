"""Tiny transformers causal LMs with random weights, saved by ``save_pretrained`` (the hub is
not reachable): the models the runtime tests run and compare against."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 96

# Small enough to run in seconds, large enough that every part is there: grouped-query
# attention, several blocks, sliding windows shorter than the tests' sequences.
_SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2)


def config(family: str):  # type: ignore[no-untyped-def]
    """The transformers config of a tiny model of ``family`` (dropout off: a training step is
    then deterministic, and comparable with one process)."""
    import transformers as tf

    make = {
        "llama": lambda: tf.LlamaConfig(**_SMALL),
        "llama-tied": lambda: tf.LlamaConfig(**_SMALL, tie_word_embeddings=True),
        "mistral": lambda: tf.MistralConfig(**_SMALL, sliding_window=4),
        "qwen2": lambda: tf.Qwen2Config(**_SMALL),
        "mixtral": lambda: tf.MixtralConfig(**_SMALL, num_local_experts=4, num_experts_per_tok=2),
        "gpt2": lambda: tf.GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0),
        "qwen3": lambda: tf.Qwen3Config(**_SMALL, head_dim=8),
        "phi3": lambda: tf.Phi3Config(**_SMALL, pad_token_id=0),
        "olmo2": lambda: tf.Olmo2Config(**_SMALL),
        "gemma2": lambda: tf.Gemma2Config(**_SMALL, head_dim=8, sliding_window=4),
        "gemma3": lambda: tf.Gemma3TextConfig(**_SMALL, head_dim=8, sliding_window=4),
    }
    return make[family]()


def save(family: str, folder: Path, *, seed: int = 0, max_shard_size: str | None = None):  # type: ignore[no-untyped-def]
    """Build a tiny ``family`` model with seeded random weights, save it to ``folder``; the model."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config(family))
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    return model


def token_ids(batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
