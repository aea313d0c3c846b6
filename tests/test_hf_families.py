"""from_hf_config's families against transformers' own models: every layer a real module with
exactly its parameters, every parameter in exactly one layer, accelerate taking the exported
device_map, and the KV cache transformers' cache really keeps. Small configs from transformers'
config classes, and the real checkpoints' configs (instances/configs)."""

from __future__ import annotations

import functools
import json
import warnings

import pytest

from layerfit import InstanceError, export_plan, from_hf_config, solve
from layerfit.interop.export import module_names
from layerfit.interop.hf_families import saved

from helpers import ROOT

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")
accelerate_modeling = pytest.importorskip("accelerate.utils.modeling")

CONFIGS = ROOT / "instances" / "configs"

# Small enough to build in a moment, with every part there: grouped-query attention, head_dim
# not hidden / heads where the family allows it, blocks of both kinds.
_SMALL = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _small(family: str):  # type: ignore[no-untyped-def]
    make = {
        "llama": lambda: tf.LlamaConfig(**_SMALL),
        "llama-biases": lambda: tf.LlamaConfig(**_SMALL, attention_bias=True, mlp_bias=True),
        "llama-tied": lambda: tf.LlamaConfig(**_SMALL, tie_word_embeddings=True, head_dim=12),
        "mistral": lambda: tf.MistralConfig(**_SMALL, sliding_window=8),
        "mixtral": lambda: tf.MixtralConfig(**_SMALL, num_local_experts=4, num_experts_per_tok=2),
        "qwen2": lambda: tf.Qwen2Config(**_SMALL),
        "qwen3": lambda: tf.Qwen3Config(**_SMALL, head_dim=16),
        "qwen3-biases": lambda: tf.Qwen3Config(**_SMALL, attention_bias=True),  # head_dim: the class's 128
        "qwen3_moe": lambda: tf.Qwen3MoeConfig(**_SMALL, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                               decoder_sparse_step=2, mlp_only_layers=[3]),
        "qwen3_moe-all": lambda: tf.Qwen3MoeConfig(**_SMALL, num_experts=8, num_experts_per_tok=3,
                                                   moe_intermediate_size=8, head_dim=16),
        "gemma2": lambda: tf.Gemma2Config(**_SMALL, head_dim=16),
        "gemma3_text": lambda: tf.Gemma3TextConfig(**_SMALL, head_dim=16, attention_bias=True),
        "phi3": lambda: tf.Phi3Config(**_SMALL),
        "phi3-gqa-untied": lambda: tf.Phi3Config(**_SMALL, head_dim=12),
        "gpt_oss": lambda: tf.GptOssConfig(**_SMALL, head_dim=8, num_local_experts=4, num_experts_per_tok=2,
                                       sliding_window=8),
    "olmo2": lambda: tf.Olmo2Config(**_SMALL),
        "olmo2-biases-tied": lambda: tf.Olmo2Config(**_SMALL, attention_bias=True, tie_word_embeddings=True),
    }
    return make[family]()


SMALL = ["llama", "llama-biases", "llama-tied", "mistral", "mixtral", "qwen2", "qwen3", "qwen3-biases", "qwen3_moe",
         "qwen3_moe-all", "gemma2", "gemma3_text", "phi3", "phi3-gqa-untied", "olmo2", "olmo2-biases-tied"]
REAL = ["qwen3-8b", "gemma-2-9b", "phi-3-mini-4k", "olmo-2-7b", "llama-3-8b", "mistral-7b-v0.1", "mixtral-8x7b-v0.1",
        "qwen2.5-72b"]


@functools.lru_cache(maxsize=None)
def _case(name: str):  # type: ignore[no-untyped-def]
    """The raw config (what from_hf_config reads) and transformers' model of it on meta."""
    if name in SMALL:
        raw = _small(name).to_dict()
    else:
        raw = json.loads((CONFIGS / f"{name}.json").read_text())
    config = tf.AutoConfig.for_model(**{k: v for k, v in raw.items() if k not in ("torch_dtype", "dtype")})
    with torch.device("meta"):
        model = tf.AutoModelForCausalLM.from_config(config)
    return raw, model


def _instance(raw, split, **options):  # type: ignore[no-untyped-def]
    return from_hf_config(raw, batch_size=1, seq_len=16, dtype="bf16", split=split, **options)


def _params(model, modules) -> int:  # type: ignore[no-untyped-def]
    """Parameters of these modules, a tied one once."""
    unique = {id(p): p for m in modules for p in model.get_submodule(m).parameters()}
    return sum(p.numel() for p in unique.values())


@pytest.mark.parametrize("name", SMALL + REAL)
def test_block_layers_are_transformers_modules_with_their_exact_parameters(name):
    raw, model = _case(name)
    inst = _instance(raw, "block")
    assert inst.total_params == sum(p.numel() for p in model.parameters())  # tied weights once
    for layer in inst.layers:
        assert layer.params == _params(model, module_names(layer)), layer.name
    blocks = [layer.name for layer in inst.layers if layer.name.startswith("model.layers.")]
    assert blocks == [f"model.layers.{i}" for i in range(len(model.model.layers))]


@pytest.mark.parametrize("name", SMALL + REAL)
def test_sublayers_hold_every_parameter_exactly_once(name):
    raw, model = _case(name)
    inst = _instance(raw, "sublayer")
    assert inst.total_params == sum(p.numel() for p in model.parameters())
    owners: dict[str, list[str]] = {}
    for layer in inst.layers:
        assert layer.params == _params(model, module_names(layer)), layer.name
        for module in module_names(layer):
            for parameter, _ in model.get_submodule(module).named_parameters(remove_duplicate=False):
                owners.setdefault(f"{module}.{parameter}", []).append(layer.name)
    everything = [n for n, _ in model.named_parameters(remove_duplicate=False)]  # a tied head's name too
    assert sorted(owners) == sorted(everything)
    assert all(len(held) == 1 for held in owners.values()), {n: h for n, h in owners.items() if len(h) > 1}
    # each sub-layer is named after its own module: model.layers.i.self_attn / .mlp
    subs = {layer.name.rsplit(".", 1)[1] for layer in inst.layers if layer.name.startswith("model.layers.")}
    assert subs == {"self_attn", "mlp"}


@pytest.mark.parametrize("name", SMALL + REAL)
def test_accelerate_accepts_the_exported_sublayer_device_map(name):
    raw, model = _case(name)
    inst = _instance(raw, "sublayer")
    plan = solve(inst, objective="min_bottleneck", num_partitions=3)
    device_map = export_plan(inst, plan, "accelerate")["value"]
    assert sorted(set(device_map.values())) == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # accelerate only warns of keys that name no module
        accelerate_modeling.check_device_map(model, device_map)


# Sliding windows shorter than the sequence, so that the cache must drop positions.
_SLIDING = {
    "mistral": lambda: tf.MistralConfig(**_SMALL, sliding_window=8),
    "qwen2": lambda: tf.Qwen2Config(**_SMALL, use_sliding_window=True, sliding_window=8, max_window_layers=2),
    "qwen3": lambda: tf.Qwen3Config(**_SMALL, head_dim=8, use_sliding_window=True, sliding_window=8, max_window_layers=1),
    "qwen3_moe": lambda: tf.Qwen3MoeConfig(**_SMALL, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                           use_sliding_window=True, sliding_window=8),
    "gemma2": lambda: tf.Gemma2Config(**_SMALL, head_dim=8, sliding_window=8),
    "gemma3_text": lambda: tf.Gemma3TextConfig(**_SMALL, head_dim=8, sliding_window=8, sliding_window_pattern=2),
    "phi3": lambda: tf.Phi3Config(**_SMALL, sliding_window=8),
    "gpt_oss": lambda: tf.GptOssConfig(**_SMALL, head_dim=8, num_local_experts=4, num_experts_per_tok=2,
                                       sliding_window=8),
    "olmo2": lambda: tf.Olmo2Config(**_SMALL),
    "llama": lambda: tf.LlamaConfig(**_SMALL),
}


def _cache_storage(cache) -> list[int]:  # type: ignore[no-untyped-def]
    """Bytes each layer of a transformers cache holds: its keys' and values' storages."""
    return [layer.keys.untyped_storage().nbytes() + layer.values.untyped_storage().nbytes() for layer in cache.layers]


@pytest.mark.parametrize("family", sorted(_SLIDING))
def test_kv_cache_is_what_transformers_cache_holds(family):
    config = _SLIDING[family]()
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    seq, ids = 20, torch.randint(3, 96, (2, 20))
    raw = config.to_dict()

    def ours(**change) -> list[int]:  # type: ignore[no-untyped-def]
        inst = from_hf_config({**raw, **change}, batch_size=2, seq_len=seq, dtype="fp32", kv_cache=True)
        return [layer.kv_cache_bytes for layer in inst.layers if layer.name.startswith("model.layers.")]

    with torch.no_grad():
        dynamic = model(ids, use_cache=True).cache  # the default: DynamicCache(config=...)
        static = tf.StaticCache(config=config, max_cache_len=seq)
        model(ids, cache=static, use_cache=True)
    # the default cache keeps every position after the forward, sliding layers too (a view of the
    # last W - 1 holds the forward's keys and values whole until the next step)
    assert ours() == _cache_storage(dynamic)
    # a static cache gives each sliding layer a window-long buffer
    assert ours(cache_implementation="static") == _cache_storage(static)
    if family not in ("olmo2", "llama"):
        assert sum(_cache_storage(static)) < sum(_cache_storage(dynamic))  # the test has teeth: some layer slides
        assert [k.keys.shape[-2] for k in dynamic.layers] != [seq] * len(dynamic.layers)


def test_caches_that_keep_other_bytes_are_refused():
    raw = {**_small("gemma2").to_dict(), "cache_implementation": "offloaded"}
    with pytest.raises(InstanceError, match=r"^config\.cache_implementation: 'offloaded' is not modelled "
                                         r"\(allowed: dynamic, hybrid, static, sliding_window, hybrid_chunked\)$"):
        from_hf_config(raw, batch_size=1, seq_len=8, dtype="bf16", kv_cache=True)
    assert from_hf_config(raw, batch_size=1, seq_len=8, dtype="bf16").num_layers  # no cache, no question


def test_llama_biases_are_counted():
    raw = _small("llama-biases").to_dict()
    h, inter, q_dim, kv_dim = 32, 48, 32, 16
    plain = from_hf_config({**raw, "attention_bias": False, "mlp_bias": False}, batch_size=1, seq_len=8, dtype="bf16")
    biased = from_hf_config(raw, batch_size=1, seq_len=8, dtype="bf16")
    assert biased.layers[1].params - plain.layers[1].params == (q_dim + 2 * kv_dim + h) + (2 * inter + h)
    # Mistral's modules carry no bias whatever its config says (transformers ignores the fields)
    mistral = {**_small("mistral").to_dict(), "attention_bias": True, "mlp_bias": True}
    assert from_hf_config(mistral, batch_size=1, seq_len=8, dtype="bf16").total_params == \
        sum(p.numel() for p in _case("mistral")[1].parameters())


def test_qwen3_moe_sparse_and_dense_blocks():
    raw, model = _case("qwen3_moe")  # decoder_sparse_step 2, mlp_only_layers [3]: blocks 1 sparse; 0, 2, 3 dense
    inst = _instance(raw, "sublayer")
    mlp = {layer.name: layer.params for layer in inst.layers if layer.name.endswith(".mlp")}
    dense = 3 * 32 * 48 + 32
    sparse = 4 * 3 * 32 * 16 + 4 * 32 + 32  # experts, router, post-attention norm
    assert mlp == {"model.layers.0.mlp": dense, "model.layers.1.mlp": sparse, "model.layers.2.mlp": dense,
                   "model.layers.3.mlp": dense}
    assert hasattr(model.model.layers[1].mlp, "experts") and not hasattr(model.model.layers[3].mlp, "experts")
    training = _instance(raw, "sublayer", mode="training")
    sparse_saved = training.layers[4].activation_bytes  # model.layers.1.mlp
    assert sparse_saved == saved.saved_by_experts(16, 2, 32, 16, 4, 2)


def test_gemma_layout_head_and_windows():
    raw = json.loads((CONFIGS / "gemma-2-9b.json").read_text())
    inst = from_hf_config(raw, batch_size=1, seq_len=8192, dtype="bf16", kv_cache=True, split="sublayer")
    (group,) = inst.constraints.tied  # Gemma ties its head by default
    assert group.layers == ("model.embed_tokens", "lm_head")
    attention = inst.layers[1]
    assert attention.name == "model.layers.0.self_attn"
    assert attention.modules == ("model.layers.0.input_layernorm", "model.layers.0.self_attn",
                                 "model.layers.0.post_attention_layernorm")
    assert inst.layers[2].modules == ("model.layers.0.pre_feedforward_layernorm", "model.layers.0.mlp",
                                      "model.layers.0.post_feedforward_layernorm")
    kv_dim = 8 * 256  # 8 KV heads of head_dim 256 (not hidden / heads = 224)
    # transformers' default cache: every layer keeps the whole sequence after the forward
    assert {layer.kv_cache_bytes for layer in inst.layers if layer.name.endswith("self_attn")} == {2 * 8192 * kv_dim * 2}
    # a static cache: the default window 4096 in the even layers, the odd ones keep the sequence
    static = from_hf_config({**raw, "cache_implementation": "static"}, batch_size=1, seq_len=8192, dtype="bf16",
                            kv_cache=True, split="sublayer")
    assert static.layers[1].kv_cache_bytes == 2 * 4096 * kv_dim * 2
    assert static.layers[3].kv_cache_bytes == 2 * 8192 * kv_dim * 2
    timed = from_hf_config(raw, batch_size=1, seq_len=1024, dtype="bf16", flops_per_s=1e15)
    block = timed.layers[1]
    q_dim = 16 * 256  # 4096, not the hidden 3584
    assert block.time == pytest.approx((2 * block.params * 1024 + 4 * 1024**2 * q_dim) / 1e15)


def test_gemma3_text_config_leaves_out_what_its_class_defaults():
    # Gemma 3 4B's published text_config: the heads, head_dim and vocabulary are the class's defaults
    text_config = {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                   "num_hidden_layers": 34, "sliding_window": 1024,
                   "rope_scaling": {"factor": 8.0, "rope_type": "linear"}}
    config = tf.AutoConfig.for_model(**text_config)
    with torch.device("meta"):
        model = tf.AutoModelForCausalLM.from_config(config)
    inst = from_hf_config({**text_config, "cache_implementation": "static"}, batch_size=1, seq_len=2048, dtype="bf16",
                          kv_cache=True)
    assert inst.total_params == sum(p.numel() for p in model.parameters())
    kv = [layer.kv_cache_bytes for layer in inst.layers if layer.name.startswith("model.layers.")]
    per_position = 2 * 4 * 256 * 2  # keys and values of 4 KV heads of 256, bf16
    assert kv[:6] == [1024 * per_position] * 5 + [2048 * per_position]  # every 6th layer is global


def test_olmo2_post_norms_are_held_by_their_sublayer():
    raw, _ = _case("olmo2")
    inst = _instance(raw, "sublayer")
    assert [layer.name for layer in inst.layers[1:3]] == ["model.layers.0.self_attn", "model.layers.0.mlp"]
    assert inst.layers[1].modules == ("model.layers.0.self_attn", "model.layers.0.post_attention_layernorm")
    assert inst.layers[2].modules == ("model.layers.0.mlp", "model.layers.0.post_feedforward_layernorm")


def test_phi3_fused_projections_keep_the_fused_output():
    phi3 = _small("phi3").to_dict()
    llama = {**_small("llama").to_dict(), "tie_word_embeddings": False}
    a = from_hf_config(phi3, batch_size=2, seq_len=64, dtype="bf16", mode="training")
    b = from_hf_config(llama, batch_size=2, seq_len=64, dtype="bf16", mode="training")
    assert [layer.params for layer in a.layers] == [layer.params for layer in b.layers]
    q_dim, kv_dim = 32, 16
    # v keeps qkv_proj's whole output alive (q and k beside it); the output is kept twice
    extra = 2 * 64 * 2 * (q_dim + kv_dim + q_dim)
    assert [x.activation_bytes - y.activation_bytes for x, y in zip(a.layers, b.layers)] == [0] + [extra] * 4 + [0, 0]


def test_gemma2_eager_attention_keeps_the_scores():
    raw = _small("gemma2").to_dict()
    def attention(**change):  # type: ignore[no-untyped-def]
        inst = from_hf_config({**raw, **change}, batch_size=1, seq_len=64, dtype="bf16", mode="training",
                              split="sublayer")
        return inst.layers[1].activation_bytes
    # the tanh of the soft-capped scores: heads · s² · e
    assert attention() - attention(attn_logit_softcapping=None) == 4 * 64 * 64 * 2
    longer = from_hf_config(raw, batch_size=1, seq_len=128, dtype="bf16", mode="training", split="sublayer")
    shorter = from_hf_config(raw, batch_size=1, seq_len=64, dtype="bf16", mode="training", split="sublayer")
    assert longer.layers[1].activation_bytes > 3 * shorter.layers[1].activation_bytes  # s² dominates


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gemma3"}, r"^config\.model_type: 'gemma3' is Gemma3ForConditionalGeneration, .* "
                                   r"config\['text_config'\] \(model_type 'gemma3_text'\)$"),
        ({"mlp_only_layers": [7]}, r"^config\.mlp_only_layers: must be a list of block indices below "
                                   r"num_hidden_layers 4, got \[7\]$"),
        ({"num_local_experts": -1}, r"^config\.num_local_experts: must be a non-negative integer, got -1$"),
        ({"num_experts": 5}, r"^config\.num_experts: 5, but num_local_experts is 4$"),
        ({"num_experts_per_tok": 5}, r"^config\.num_experts_per_tok: 5, more than num_experts 4$"),
        ({"num_key_value_heads": 3}, r"^config\.num_key_value_heads: 3 does not divide num_attention_heads 4$"),
        ({"use_sliding_window": True, "sliding_window": 0}, r"^config\.sliding_window: must be a positive integer, got 0$"),
        ({"attention_bias": "yes"}, r"^config\.attention_bias: must be true or false, got 'yes'$"),
    ],
)
def test_bad_configs_name_the_field(change, message):
    raw = {**_small("qwen3_moe").to_dict(), **change}
    with pytest.raises(InstanceError, match=message):
        from_hf_config(raw, batch_size=1, seq_len=8, dtype="bf16")


def test_qwen3_moe_without_experts_is_dense():
    raw = {**_small("qwen3_moe").to_dict(), "num_local_experts": 0}
    config = tf.AutoConfig.for_model(**{k: v for k, v in raw.items() if k != "dtype"})
    with torch.device("meta"):
        model = tf.AutoModelForCausalLM.from_config(config)
    assert _instance(raw, "block").total_params == sum(p.numel() for p in model.parameters())


# The real checkpoints' widths (instances/configs; Qwen3-30B-A3B's published config), two blocks.
def _two_blocks(name: str, **change):  # type: ignore[no-untyped-def]
    raw = json.loads((CONFIGS / f"{name}.json").read_text())
    return {k: v for k, v in raw.items() if k != "torch_dtype"} | {"num_hidden_layers": 2} | change


_MEASURED = {
    "gemma-2-9b": lambda: _two_blocks("gemma-2-9b"),
    "gemma-3-4b-text-windowed": lambda: dict(model_type="gemma3_text", hidden_size=2560, intermediate_size=10240,
                                             num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=4,
                                             head_dim=256, vocab_size=262208, sliding_window=16,
                                             sliding_window_pattern=2),
    "phi-3-mini-4k-windowed": lambda: _two_blocks("phi-3-mini-4k", sliding_window=16),
    "olmo-2-7b": lambda: _two_blocks("olmo-2-7b"),
    "qwen3-30b-a3b": lambda: dict(model_type="qwen3_moe", hidden_size=2048, intermediate_size=6144,
                                  num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                                  vocab_size=151936, num_experts=128, num_experts_per_tok=8,
                                  moe_intermediate_size=768),
}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(_MEASURED))
def test_training_formulas_are_within_5_percent_of_what_torch_saves(name, dtype):
    """As tests/test_hf_activations.py does for the Llama family: ``from_hf_model`` measures
    what autograd saves in each layer (fake tensors, transformers' default attention)."""
    from layerfit.runtime import from_hf_model

    raw = _MEASURED[name]()
    seq = 256  # long enough that Gemma 2's s×s scores weigh
    measured = from_hf_model(raw, batch_size=1, seq_len=seq, dtype=dtype, mode="training")
    predicted = from_hf_config(raw, batch_size=1, seq_len=seq, dtype=dtype, mode="training")
    assert [layer.name for layer in predicted.layers] == [layer.name for layer in measured.layers]
    for want, got in zip(measured.layers, predicted.layers):
        assert got.params == want.params, want.name
        assert abs(got.activation_bytes / want.activation_bytes - 1) <= 0.05, \
            f"{want.name}: predicted {got.activation_bytes}, torch saves {want.activation_bytes}"
