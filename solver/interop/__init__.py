"""Other tools' formats: Hugging Face config.json in, DeepSpeed / Megatron / vLLM / pippy / accelerate out, and their own split rules as baselines."""
