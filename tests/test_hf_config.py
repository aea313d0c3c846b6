"""from_hf_config: exact parameters for every family (published totals of the real
checkpoints), activation and KV-cache bytes against hand calculations, clear errors."""

import json

import pytest

from layerfit import Instance, InstanceError, from_hf_config, solve, validate_plan

from helpers import ROOT
from layerfit.model.memory import partition_bytes

MODELS = ROOT.parent / "shared" / "data" / "models"
CONFIGS = ROOT / "instances" / "configs"

# Published totals of the checkpoints (Hugging Face model cards / safetensors metadata).
PUBLISHED = {
    "llama-2-7b": 6_738_415_616,
    "llama-3-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "mistral-7b-v0.1": 7_241_732_096,
    "mixtral-8x7b-v0.1": 46_702_792_704,
    "qwen2.5-72b": 72_706_203_648,
    "gpt2": 124_439_808,
    "gpt2-xl": 1_557_611_200,
    "bert-large-uncased": 335_141_888,
    # as shared/data/README.md gives them (the model cards' totals, which transformers' meta model also counts)
    "qwen3-8b": 8_190_735_360,
    "gemma-2-9b": 9_241_705_984,
    "phi-3-mini-4k": 3_821_079_552,
    "olmo-2-7b": 7_298_617_344,
}


def config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
@pytest.mark.parametrize("split", ["block", "sublayer"])
def test_parameter_totals_are_exact(name, split):
    inst = from_hf_config(CONFIGS / f"{name}.json", batch_size=1, seq_len=128, split=split)
    assert inst.total_params == PUBLISHED[name]
    assert Instance.from_dict(inst.to_dict()) == inst


def test_the_bundled_configs_are_the_shared_facts():
    if not MODELS.is_dir():
        pytest.skip("the shared data folder is not beside this checkout")
    for name in PUBLISHED:
        assert config(name) == json.loads((MODELS / f"{name}.json").read_text())


def test_llama_layers_activations_and_kv_cache_by_hand():
    inst = from_hf_config(config("llama-2-7b"), batch_size=2, seq_len=4096, kv_cache=True)
    names = [layer.name for layer in inst.layers]
    assert names[:2] == ["model.embed_tokens", "model.layers.0"] and names[-2:] == ["model.norm", "lm_head"]
    assert inst.dtype == "fp16"  # the config's torch_dtype
    v5 = {k: v for k, v in config("llama-2-7b").items() if k != "torch_dtype"} | {"dtype": "bfloat16"}
    assert from_hf_config(v5, batch_size=1, seq_len=8).dtype == "bf16"  # transformers 5 writes "dtype"
    block = inst.layers[1]
    # q, k, v, o: 4 · 4096²; gate, up, down: 3 · 4096 · 11008; two RMSNorms: 2 · 4096
    assert block.params == 4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096 == 202_383_360
    assert block.activation_bytes == 2 * 4096 * 4096 * 2  # b · s · h · 2 bytes
    assert block.kv_cache_bytes == 2 * 2 * 4096 * 4096 * 2  # keys and values: 2 · b · s · kv_dim · 2 bytes
    assert inst.layers[-1].activation_bytes == 2 * 4096 * 32000 * 2  # the logits
    assert inst.sizes[1] == 2 * block.params + block.activation_bytes + block.kv_cache_bytes
    gqa = from_hf_config(config("llama-3-8b"), batch_size=1, seq_len=8192, kv_cache=True)
    assert gqa.layers[1].kv_cache_bytes == 2 * 8192 * (8 * 128) * 2  # 8 KV heads of 128
    assert not any(layer.kv_cache_bytes for layer in gqa.layers if not layer.name.startswith("model.layers."))


def test_training_saves_activations_and_holds_adam_state():
    inst = from_hf_config(config("llama-2-7b"), batch_size=1, seq_len=4096, mode="training", dtype="bf16")
    block = inst.layers[1]
    # What torch saves (hf_families/saved.py, within 5 % of it: test_hf_activations.py), a token:
    # each RMSNorm its input in fp32, its normalized values and 1/rms; attention the projections'
    # input, rotary's cos and sin, q, k, v, the output and the fp32 log-sum-exp of 32 heads; the
    # MLP the projections' input, gate, up, SiLU(gate) and their product.
    norm = (4 + 2) * 4096 + 4
    attention = norm + 2 * 4096 + 2 * 128 * 2 + 2 * (4096 + 2 * 4096) + 2 * 4096 + 4 * 32
    assert block.activation_bytes == 4096 * (attention + norm + 2 * 4096 + 4 * 11008 * 2)
    assert block.output_bytes == 4096 * 4096 * 2
    fp = inst.footprint(1)
    assert fp.weight + fp.training_state == 16 * block.params  # mixed-precision Adam
    gpt2 = from_hf_config(config("gpt2"), batch_size=1, seq_len=1024, mode="training", dtype="bf16")
    # hf_families/gpt2.py, a token: each LayerNorm its input and row mean and 1/std; attention
    # c_attn's input and output (q, k, v), SDPA's output and fp32 log-sum-exp of 12 heads; the
    # MLP c_fc's input, gelu_new's four intermediates and c_proj's input; a 1-byte dropout mask
    # after each (resid_pdrop, GPT2Config's default 0.1)
    e, h, inner = 2, 768, 4 * 768
    attention = e * (h + 2) + e * h + 3 * e * h + e * h + 4 * 12 + h
    mlp = e * (h + 2) + e * (h + 5 * inner) + h
    assert gpt2.layers[1].activation_bytes == 1024 * (attention + mlp)
    assert gpt2.layers[0].activation_bytes == 1024 * (16 + h)  # token and position ids, embd_pdrop's mask
    halves = from_hf_config(config("gpt2"), batch_size=1, seq_len=1024, mode="training", dtype="bf16", split="sublayer")
    assert halves.layers[1].activation_bytes + halves.layers[2].activation_bytes == gpt2.layers[1].activation_bytes
    moe = from_hf_config(config("mixtral-8x7b-v0.1"), batch_size=1, seq_len=1024, mode="training")
    # two experts a token: their input and output rows, gate-up, SiLU and the product, 40 bytes of
    # routing each; the router's input and its 8 fp32 probabilities; 8 experts' group offsets
    mlp = 1024 * (norm + 2 * 4096 + 4 * 8 + 2 * (2 * 4096 * 2 + 4 * 14336 * 2 + 40) + 4) + 4 * 8
    attention = 1024 * (norm + 2 * 4096 + 2 * 128 * 2 + 2 * (4096 + 2 * 1024) + 2 * 4096 + 4 * 32)
    assert moe.layers[1].activation_bytes == attention + mlp


def test_gpt2_ties_its_head_to_the_token_embedding():
    inst = from_hf_config(config("gpt2"), batch_size=1, seq_len=1024, dtype="fp32")
    (group,) = inst.constraints.tied
    assert group.layers == ("transformer.wte+wpe", "lm_head") and group.params == 50257 * 768
    whole = list(range(inst.num_layers))
    assert solve(inst).num_partitions == 1  # the default capacity: the whole model
    assert partition_bytes(inst, whole, 0, 1) == inst.capacity
    weights = sum(inst.footprint(i).weight for i in whole) - 4 * group.params
    assert weights == 4 * 124_439_808
    split = solve(inst, objective="min_bottleneck", num_partitions=3)
    validate_plan(inst, split)
    bert = from_hf_config(config("bert-large-uncased"), batch_size=4, seq_len=512)
    assert not bert.constraints.tied and bert.layers[-1].activation_bytes == 4 * 1024 * 4  # the pooler, fp32


def test_quantized_weights_keep_16_bit_activations():
    inst = from_hf_config(config("llama-3-8b"), batch_size=1, seq_len=10, dtype="int8")
    assert inst.footprint(1).weight == inst.layers[1].params
    assert inst.layers[1].activation_bytes == 10 * 4096 * 2


@pytest.mark.parametrize(
    "change, options, message",
    [
        ({"model_type": "t5"}, {}, r"^config\.model_type: unsupported model_type 't5' \(supported: llama, mistral, mixtral, qwen2, qwen3, "),
        ({"hidden_size": None}, {}, r"^config\.hidden_size: missing$"),
        ({"hidden_size": 0}, {}, r"^config\.hidden_size: must be a positive integer, got 0$"),
        ({"num_key_value_heads": -8}, {}, r"^config\.num_key_value_heads: must be a positive integer, got -8$"),
        ({"torch_dtype": "float64"}, {}, r"^config\.torch_dtype: cannot tell the dtype from 'float64'; pass dtype=$"),
        ({}, {"dtype": "fp64"}, r"^dtype: unknown dtype 'fp64' \(allowed: "),
        ({}, {"batch_size": 0}, r"^batch_size: must be a positive integer, got 0$"),
        ({}, {"split": "layer"}, r"^split: unknown split 'layer' \(allowed: block, sublayer\)$"),
        ({}, {"mode": "train"}, r"^mode: unknown mode 'train' \(allowed: inference, training\)$"),
        ({}, {"mode": "training", "kv_cache": True}, r"^kv_cache: a KV cache is kept for inference, not with mode 'training'$"),
    ],
)
def test_bad_configs(change, options, message):
    raw = {**config("llama-3-8b"), **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(InstanceError, match=message):
        from_hf_config(raw, **{"batch_size": 1, "seq_len": 8, **options})


def test_bert_has_no_kv_cache_and_files_are_checked(tmp_path):
    with pytest.raises(InstanceError, match=r"^kv_cache: BERT is an encoder; it keeps no KV cache$"):
        from_hf_config(config("bert-large-uncased"), batch_size=1, seq_len=8, kv_cache=True)
    with pytest.raises(InstanceError, match=r"no such file$"):
        from_hf_config(tmp_path / "missing.json", batch_size=1, seq_len=8)
    with pytest.raises(InstanceError, match=r"^seq_len: 513 tokens, beyond the model's 512 learned positions "
                                         r"\(config\.max_position_embeddings\)$"):
        from_hf_config(config("bert-large-uncased"), batch_size=1, seq_len=513)
    with pytest.raises(InstanceError, match=r"^seq_len: 1025 tokens, beyond the model's 1024 learned positions "
                                         r"\(config\.n_positions\)$"):
        from_hf_config(config("gpt2"), batch_size=1, seq_len=1025)
    with pytest.raises(InstanceError, match=r"^config\.resid_pdrop: must be a probability between 0 and 1, "
                                         r"got 1\.5$"):
        from_hf_config({**config("gpt2"), "resid_pdrop": 1.5}, batch_size=1, seq_len=8)
    with pytest.raises(InstanceError, match=r"^config\.hidden_dropout_prob: must be a probability between 0 and 1, "
                                         r"got 'x'$"):
        from_hf_config({**config("bert-large-uncased"), "hidden_dropout_prob": "x"}, batch_size=1, seq_len=8)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InstanceError, match=r"bad\.json: not valid JSON"):
        from_hf_config(tmp_path / "bad.json", batch_size=1, seq_len=8)


def test_layer_times_from_flops():
    inst = from_hf_config(config("llama-2-7b"), batch_size=2, seq_len=1024, flops_per_s=1e15)
    block = inst.layers[1]
    # matrix products 2 · params · tokens, attention 4 · b · s² · q_dim
    assert block.time == pytest.approx((2 * block.params * 2 * 1024 + 4 * 2 * 1024**2 * 4096) / 1e15)
    assert inst.layers[0].time == 0 and inst.layers[-1].time == pytest.approx(2 * 32000 * 4096 * 2048 / 1e15)
    train = from_hf_config(config("llama-2-7b"), batch_size=2, seq_len=1024, flops_per_s=1e15, mode="training")
    assert train.layers[1].time == pytest.approx(3 * block.time)
    halves = from_hf_config(config("llama-2-7b"), batch_size=2, seq_len=1024, flops_per_s=1e15, split="sublayer")
    assert halves.layers[1].time + halves.layers[2].time == pytest.approx(block.time)
    with pytest.raises(InstanceError, match=r"^flops_per_s: must be a positive finite number, got 0$"):
        from_hf_config(config("gpt2"), batch_size=1, seq_len=8, flops_per_s=0)
