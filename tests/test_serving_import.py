"""from_hf_config(..., serving=Serving(...)): what a vLLM rank holds — the KV cache of b·s tokens
in its own dtype, one scheduler step's transients, 16-bit embedding and head beside 8-bit
weights, vLLM's gpu_memory_utilization (layerfit.interop.serving)."""

import json
import re
from fractions import Fraction

import pytest

from helpers import INSTANCES
from layerfit import Instance, InstanceError, from_hf_config, validate_plan
from layerfit.interop.serving import Serving
from layerfit.model.memory import partition_bytes, partition_footprint, usable_capacity

CONFIGS = INSTANCES / "configs"
N = 8192  # Serving's default max_num_batched_tokens
DECODERS = sorted(p.stem for p in CONFIGS.glob("*.json") if not p.stem.startswith("bert"))


def config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def served(name: str, *, batch_size: int = 2, seq_len: int = 1024, **options) -> Instance:
    serving = options.pop("serving", Serving())
    options.setdefault("dtype", "bf16")
    return from_hf_config(config(name), batch_size=batch_size, seq_len=seq_len, serving=serving, **options)


def blocks(inst: Instance) -> list:
    return [layer for layer in inst.layers if layer.name.startswith(("model.layers.", "transformer.h."))]


# -- the KV cache -----------------------------------------------------------------------


def test_llama_3_1_70b_holds_its_kv_cache_per_token_per_block_exactly():
    inst = served("llama-3.1-70b", batch_size=3, seq_len=1000)
    assert inst.kv_tokens == 3 * 1000
    per_block = 2 * 8 * 128 * 2  # keys and values, 8 KV heads of 128, bf16: 4,096 B a token
    assert [layer.kv_cache_bytes for layer in blocks(inst)] == [per_block * 3000] * 80
    assert sum(layer.kv_cache_bytes for layer in inst.layers) == 327_680 * 3000  # 80 blocks: 327,680 B a token
    assert all(layer.kv_cache_bytes % inst.kv_tokens == 0 for layer in inst.layers)
    fp8 = served("llama-3.1-70b", batch_size=3, seq_len=1000, serving=Serving(kv_cache_dtype="fp8"))
    assert [layer.kv_cache_bytes for layer in blocks(fp8)] == [per_block // 2 * 3000] * 80


def test_the_kv_dtype_defaults_to_the_activation_dtype():
    fp32 = served("qwen2.5-72b", dtype="fp32")  # auto: the activations', fp32 here
    assert blocks(fp32)[0].kv_cache_bytes == 2 * 8 * 128 * 4 * 2048
    fp8_weights = served("qwen2.5-72b", dtype="fp8")  # activations bf16, and so the cache
    assert blocks(fp8_weights)[0].kv_cache_bytes == 2 * 8 * 128 * 2 * 2048
    assert Serving(kv_cache_dtype="auto").kv_cache_dtype is None
    assert Serving(kv_cache_dtype="fp8_e5m2").kv_cache_dtype == "fp8"
    assert Serving(kv_cache_dtype="float16").kv_cache_dtype == "fp16"


def test_deepseek_v3_caches_its_mla_latent():
    inst = served("deepseek-v3", batch_size=1, seq_len=100)
    latent = 512 + 64  # kv_lora_rank + qk_rope_head_dim, one "head"
    assert [layer.kv_cache_bytes for layer in blocks(inst)] == [latent * 2 * 100] * 61
    assert sum(layer.kv_cache_bytes for layer in inst.layers) == 70_272 * 100  # docs/importers.md's figure
    fp8 = served("deepseek-v3", batch_size=1, seq_len=100, serving=Serving(kv_cache_dtype="fp8"))
    assert blocks(fp8)[0].kv_cache_bytes == latent * 100


def test_falcon_caches_the_groups_vllm_keeps_not_the_broadcast_heads():
    forty = served("falcon-40b", batch_size=1, seq_len=10)
    assert blocks(forty)[0].kv_cache_bytes == 2 * 8 * 64 * 2 * 10  # 8 key/value groups of 64
    seven = served("falcon-7b", batch_size=1, seq_len=10)
    assert blocks(seven)[0].kv_cache_bytes == 2 * 1 * 64 * 2 * 10  # multi_query: one head


def test_sliding_window_layers_hold_every_token():
    raw = config("gemma-2-9b") | {"cache_implementation": "static", "sliding_window": 4096}
    static = from_hf_config(raw, batch_size=1, seq_len=8192, dtype="bf16", kv_cache=True)
    assert len({layer.kv_cache_bytes for layer in blocks(static)}) == 2  # transformers' static cache: min(s, W)
    inst = from_hf_config(raw, batch_size=1, seq_len=8192, dtype="bf16", serving=Serving())
    assert {layer.kv_cache_bytes for layer in blocks(inst)} == {2 * 8 * 256 * 2 * 8192}


def test_a_sublayer_split_holds_the_cache_in_the_attention():
    inst = served("llama-3.1-70b", split="sublayer", batch_size=1, seq_len=10)
    attention, mlp = inst.layers[1], inst.layers[2]
    assert attention.name.endswith("self_attn") and mlp.name.endswith("mlp")
    assert attention.kv_cache_bytes == 2 * 8 * 128 * 2 * 10 and mlp.kv_cache_bytes == 0
    assert attention.buffer_bytes == N * 2 * (2 * 8192 + 8192 + 2 * 1024)
    assert mlp.buffer_bytes == N * 2 * (2 * 8192 + 3 * 28672)
    assert attention.output_bytes == mlp.output_bytes == N * 8192 * 2
    # Falcon-7B's parallel block: a cut after its attention carries the block's input, the shared
    # norm's output and the attention's (3·h); its MLP is plain GELU, 2 · 4h wide
    falcon = served("falcon-7b", split="sublayer", batch_size=1, seq_len=10)
    assert falcon.layers[1].output_bytes == N * 3 * 4544 * 2 and falcon.layers[2].output_bytes == N * 4544 * 2
    assert falcon.layers[2].buffer_bytes == N * 2 * (2 * 4544 + 2 * 4 * 4544)


# -- weights ----------------------------------------------------------------------------


def test_fp8_weights_keep_the_embedding_and_head_in_16_bit():
    inst = served("llama-3.1-70b", dtype="fp8")
    first, head = inst.layers[0], inst.layers[-1]
    assert (first.dtype, head.dtype, inst.dtype) == ("bf16", "bf16", "fp8")
    assert inst.footprint(0).weight == 2 * first.params == 2 * 128256 * 8192
    assert inst.footprint(inst.num_layers - 1).weight == 2 * head.params
    assert all(inst.footprint(i).weight == inst.layers[i].params for i in range(1, inst.num_layers - 1))
    plain = served("llama-3.1-70b", dtype="bf16")  # 16-bit weights: the instance's dtype, nothing per layer
    assert plain.layers[0].dtype is None and plain.layers[-1].dtype is None
    int4 = served("llama-3.1-70b", dtype="int4")
    assert int4.footprint(0).weight == 2 * first.params and int4.footprint(1).weight == -(-int4.layers[1].params // 2)


def test_a_tied_embedding_and_head_share_one_16_bit_weight():
    inst = served("gemma-2-9b", dtype="fp8")
    (group,) = inst.constraints.tied
    assert group.layers == ("model.embed_tokens", "lm_head") and group.params == 256000 * 3584
    ends = [0, inst.num_layers - 1]
    assert partition_footprint(inst, ends).weight == 2 * group.params  # held once, in bf16
    assert partition_footprint(inst, [0]).weight == partition_footprint(inst, [inst.num_layers - 1]).weight
    whole = partition_footprint(inst, range(inst.num_layers)).weight
    assert whole == sum(layer.params for layer in inst.layers[1:-1]) + 2 * group.params


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("split", ["block", "sublayer"])
def test_parameters_are_unchanged_and_the_instance_round_trips(name, split):
    for dtype in ("bf16", "fp8"):
        inst = served(name, dtype=dtype, split=split)
        plain = from_hf_config(config(name), batch_size=2, seq_len=1024, dtype=dtype, split=split)
        assert inst.total_params == plain.total_params
        assert [layer.name for layer in inst.layers] == [layer.name for layer in plain.layers]
        assert Instance.from_dict(inst.to_dict()) == inst
        assert inst.kv_tokens == 2048 and inst.buffer_reuse
        assert all(layer.kv_cache_bytes % 2048 == 0 for layer in inst.layers)
        assert sum(layer.kv_cache_bytes > 0 for layer in inst.layers) == len(blocks(plain)) // (1 + (split == "sublayer"))


# -- one scheduler step -----------------------------------------------------------------


def test_activations_are_one_scheduler_step_reused_layer_after_layer():
    inst = served("llama-3.1-70b", serving=Serving(max_num_batched_tokens=4096))
    n, h = 4096, 8192
    assert inst.buffer_reuse
    assert all(layer.activation_bytes == 0 for layer in inst.layers)
    assert all(layer.output_bytes == n * h * 2 for layer in inst.layers[:-1])
    assert inst.layers[0].buffer_bytes == inst.layers[-2].buffer_bytes == n * h * 2  # embedding, final norm
    # a block: its input and the normed state beside the MLP's gate, up and product (3 · 28,672
    # is wider than q + k + v, 8,192 + 2 · 1,024)
    assert blocks(inst)[0].buffer_bytes == n * 2 * (2 * h + 3 * 28672)
    stage = partition_footprint(inst, range(1, 11))
    assert stage.buffer == blocks(inst)[0].buffer_bytes and stage.activation == 0


def test_moe_blocks_count_a_tokens_experts():
    mixtral = served("mixtral-8x7b-v0.1")
    assert blocks(mixtral)[0].buffer_bytes == N * 2 * (2 * 4096 + 3 * 2 * 14336)  # 2 experts of 14,336
    v3 = served("deepseek-v3", dtype="fp8")
    dense, moe = blocks(v3)[0], blocks(v3)[3]  # first_k_dense_replace 3
    attention = 128 * (2 * (128 + 64) + 128)  # MLA's prefill: q, k and v of 128 heads
    assert attention > 3 * 18432
    assert dense.buffer_bytes == moe.buffer_bytes == N * 2 * (2 * 7168 + attention)
    attention_free = served("deepseek-v3", split="sublayer")
    # 8 routed experts and the shared one, 2,048 wide each
    assert attention_free.layers[8].name == "model.layers.3.mlp"
    assert attention_free.layers[8].buffer_bytes == N * 2 * (2 * 7168 + 3 * 9 * 2048)


@pytest.mark.parametrize("tokens, seqs, rows", [(8192, 256, 256), (512, 1024, 512), (2048, 2048, 2048)])
def test_the_head_holds_the_profile_runs_logits(tokens, seqs, rows):
    inst = served("llama-3.1-70b", serving=Serving(max_num_batched_tokens=tokens, max_num_seqs=seqs))
    head = inst.layers[-1]
    assert head.name == "lm_head"
    assert head.buffer_bytes == rows * 128256 * (4 + 2)  # R · vocab, fp32 and bf16
    assert Serving(max_num_batched_tokens=tokens, max_num_seqs=seqs).logit_rows == rows


def test_gpu_memory_utilization_is_carried_and_the_default_capacity_holds_the_model():
    inst = served("qwen2.5-72b", serving=Serving(gpu_memory_utilization=0.8))
    assert inst.constraints.gpu_memory_utilization == 0.8
    whole = partition_bytes(inst, range(inst.num_layers))
    assert usable_capacity(inst) >= whole
    assert inst.capacity == -(-whole // Fraction(0.8))  # the least capacity whose share holds it
    assert Instance.from_dict(inst.to_dict()).constraints.gpu_memory_utilization == 0.8
    on_l4 = served("llama-3-8b", serving={"gpu_memory_utilization": 0.9}, capacity="L4")
    assert on_l4.capacity == 23_034 * 2**20 and on_l4.constraints.reserve == 3 * 2**30


def test_the_description_says_serving():
    inst = served("llama-3.1-70b", dtype="fp8", serving=Serving(kv_cache_dtype="fp8", max_num_seqs=128))
    assert ("serving (vLLM): KV cache fp8 for 2,048 tokens, 8,192 tokens a step, 128 sequences, "
            "gpu_memory_utilization 0.9, embedding and head in bf16") in inst.description


def test_a_plan_of_a_served_instance_validates():
    from layerfit import solve

    inst = served("llama-3-8b", capacity="L4")
    plan = solve(inst, objective="min_bottleneck", num_partitions=2)
    validate_plan(inst, plan)


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"max_num_seqs": 0}, "serving.max_num_seqs: must be a whole number ≥ 1, got 0"),
    ({"max_num_seqs": True}, "serving.max_num_seqs: must be a whole number ≥ 1, got True"),
    ({"max_num_batched_tokens": 8192.0}, "serving.max_num_batched_tokens: must be a whole number ≥ 1, got 8192.0"),
    ({"max_num_batched_tokens": -1}, "serving.max_num_batched_tokens: must be a whole number ≥ 1, got -1"),
    ({"gpu_memory_utilization": 0}, "serving.gpu_memory_utilization: must be a fraction in (0, 1], got 0"),
    ({"gpu_memory_utilization": 1.5}, "serving.gpu_memory_utilization: must be a fraction in (0, 1], got 1.5"),
    ({"gpu_memory_utilization": float("nan")},
     "serving.gpu_memory_utilization: must be a fraction in (0, 1], got nan"),
    ({"gpu_memory_utilization": "0.9"}, "serving.gpu_memory_utilization: must be a fraction in (0, 1], got '0.9'"),
    ({"kv_cache_dtype": "fp6"},
     "serving.kv_cache_dtype: unknown dtype 'fp6' (allowed: fp32, bf16, fp16, fp8, int8, int4)"),
])
def test_bad_serving_fields_are_errors_naming_them(options, message):
    with pytest.raises(InstanceError, match=f"^{re.escape(message)}$"):
        Serving(**options)
    with pytest.raises(InstanceError, match=f"^{re.escape(message)}$"):
        served("llama-3-8b", serving=options)


@pytest.mark.parametrize("serving, message", [
    ({"max_seqs": 8}, "serving: unknown option 'max_seqs' (allowed: kv_cache_dtype, max_num_batched_tokens, "
                      "max_num_seqs, gpu_memory_utilization)"),
    ("vllm", "serving: expected a Serving or a mapping of its fields, got 'vllm'"),
])
def test_a_serving_that_is_not_one_is_an_error(serving, message):
    with pytest.raises(InstanceError, match=f"^{re.escape(message)}$"):
        served("llama-3-8b", serving=serving)


def test_serving_is_inference_and_a_decoders():
    with pytest.raises(InstanceError, match=r"^serving: a serving engine runs inference, not mode 'training'$"):
        served("llama-3-8b", mode="training")
    with pytest.raises(InstanceError, match=r"^serving: model_type 'bert' is an encoder; "):
        from_hf_config(config("bert-large-uncased"), batch_size=1, seq_len=128, serving=Serving())
