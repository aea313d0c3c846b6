"""from_hf_config for DeepSeek-V2/V3 (MLA, shared and routed experts), GPT-OSS (sinks, fused
experts with biases, sliding layers) and Falcon (its three block layouts), against
transformers itself: the model built on the meta device (parameters, module names), a tiny
real model's KV cache after a generation step, and what autograd saves in training."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest

from layerfit import InstanceError, export_plan, from_hf_config, solve
from layerfit.interop.export import BLOCK_NAME, EXPORT_TARGETS, module_names, stage_layer_counts

from helpers import ROOT

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIGS = ROOT / "instances" / "configs"
REAL = ["deepseek-v2-lite", "deepseek-v3", "gpt-oss-20b", "gpt-oss-120b", "falcon-7b", "falcon-40b"]

_MLA = dict(vocab_size=96, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=3,
            num_attention_heads=4, kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6,
            num_experts_per_tok=2)
_FALCON = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)

# Small configs covering every option that changes a parameter, a name or a cache.
SMALL = {
    "deepseek_v2": dict(model_type="deepseek_v2", **_MLA, q_lora_rank=None, n_routed_experts=4, n_shared_experts=2,
                        first_k_dense_replace=1),
    "deepseek_v2-biases-tied": dict(model_type="deepseek_v2", **_MLA, q_lora_rank=12, n_routed_experts=4,
                                    n_shared_experts=1, first_k_dense_replace=0, attention_bias=True, mlp_bias=True,
                                    tie_word_embeddings=True),
    "deepseek_v2-no-shared": dict(model_type="deepseek_v2", **_MLA, q_lora_rank=None, n_routed_experts=4,
                                  n_shared_experts=0, first_k_dense_replace=2),
    "deepseek_v3": dict(model_type="deepseek_v3", **_MLA, q_lora_rank=12, n_routed_experts=8, n_shared_experts=1,
                        first_k_dense_replace=1, n_group=2, topk_group=1),
    "deepseek_v3-plain-q": dict(model_type="deepseek_v3", **_MLA, q_lora_rank=None, n_routed_experts=8,
                                n_shared_experts=2, first_k_dense_replace=0, n_group=2, topk_group=1,
                                attention_bias=True),
    "gpt_oss": dict(model_type="gpt_oss", vocab_size=96, hidden_size=32, intermediate_size=16, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=4,
                    num_experts_per_tok=2, sliding_window=4),
    "gpt_oss-no-bias-tied": dict(model_type="gpt_oss", vocab_size=96, hidden_size=32, intermediate_size=16,
                                 num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, head_dim=12,
                                 num_local_experts=3, num_experts_per_tok=1, sliding_window=4, attention_bias=False,
                                 tie_word_embeddings=True,
                                 layer_types=["full_attention", "sliding_attention", "sliding_attention"]),
    "falcon-7b-style": dict(model_type="falcon", **_FALCON),
    "falcon-40b-style": dict(model_type="falcon", **_FALCON, num_kv_heads=2, new_decoder_architecture=True, bias=True),
    "falcon-one-norm-new": dict(model_type="falcon", **_FALCON, num_kv_heads=2, new_decoder_architecture=True,
                                num_ln_in_parallel_attn=1, ffn_hidden_size=48),
    "falcon-rw-style": dict(model_type="falcon", **_FALCON, multi_query=False, parallel_attn=False, bias=True,
                            alibi=True, tie_word_embeddings=False),
}


def real(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


CASES = {**SMALL, **{name: real(name) for name in REAL}}


def hf_config(raw: dict):  # type: ignore[no-untyped-def]
    return transformers.AutoConfig.for_model(raw["model_type"], **{k: v for k, v in raw.items() if k != "model_type"})


def on_meta(raw: dict):  # type: ignore[no-untyped-def]
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf_config(raw))


def tiny(raw: dict):  # type: ignore[no-untyped-def]
    """A real model (CPU, fp32), run as transformers runs it by default."""
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(hf_config(raw))


def imported(raw: dict, **options):  # type: ignore[no-untyped-def]
    options = {"batch_size": 2, "seq_len": 16, "dtype": "fp32", **options}
    return from_hf_config(raw, **options)


def params_under(model, module: str) -> int:  # type: ignore[no-untyped-def]
    sub = model
    for part in module.split("."):
        sub = sub.get_submodule(part)  # raises when the module is not there
    return sum(p.numel() for p in sub.parameters())


def test_the_bundled_deepseek_v2_lite_is_the_shared_one():
    shared = ROOT.parent / "shared" / "data" / "models" / "deepseek-v2-lite.json"
    if not shared.is_file():
        pytest.skip("the shared data folder is not beside this checkout")
    assert real("deepseek-v2-lite") == json.loads(shared.read_text())


@pytest.mark.parametrize("split", ["block", "sublayer"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_total_parameters_are_transformers_own(case, split):
    raw = CASES[case]
    inst = imported(raw, split=split)
    model = on_meta(raw)
    assert inst.total_params == sum(p.numel() for p in model.parameters())  # a tied weight once


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_block_layer_is_a_module_with_its_parameters(case):
    raw = CASES[case]
    model = on_meta(raw)
    for layer in imported(raw).layers:
        names = module_names(layer)
        assert layer.params == sum(params_under(model, name) for name in names), layer.name


@pytest.mark.parametrize("case", sorted(CASES))
def test_sublayers_hold_every_parameter_exactly_once(case):
    raw = CASES[case]
    model = on_meta(raw)
    inst = imported(raw, split="sublayer")
    owners: dict[str, list[str]] = {}
    for layer in inst.layers:
        for module in module_names(layer):
            for name, _ in model.get_submodule(module).named_parameters(remove_duplicate=False):
                owners.setdefault(f"{module}.{name}", []).append(layer.name)
        assert layer.params == sum(params_under(model, m) for m in module_names(layer)), layer.name
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    assert set(owners) == every
    assert all(len(held) == 1 for held in owners.values()), {k: v for k, v in owners.items() if len(v) > 1}
    blocks = [layer.name for layer in inst.layers if BLOCK_NAME.match(layer.name)]
    assert len(blocks) == 2 * hf_config(raw).num_hidden_layers  # the export sees every sub-layer as a block's


@pytest.mark.parametrize("case", sorted(CASES))
def test_accelerate_takes_the_sublayer_device_map(case):
    raw = CASES[case]
    inst = imported(raw, split="sublayer")
    plan = solve(inst, objective="min_bottleneck", num_partitions=3)
    device_map = export_plan(inst, plan, "accelerate")["value"]
    model = on_meta(raw)
    for name, _ in model.named_parameters():
        assert sum(1 for m in device_map if name.startswith(m + ".")) == 1, name
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("accelerate is not installed in this venv: its check_device_map was not run")
    from accelerate.utils.modeling import check_device_map

    check_device_map(model, device_map)


@pytest.mark.parametrize("target", EXPORT_TARGETS)
@pytest.mark.parametrize("name", REAL)
def test_every_export_reads_the_real_configs_blocks(name, target):
    inst = from_hf_config(CONFIGS / f"{name}.json", batch_size=1, seq_len=512, dtype="bf16")
    blocks = [i for i, layer in enumerate(inst.layers) if BLOCK_NAME.match(layer.name)]
    assert len(blocks) == real(name)["num_hidden_layers"] == len(inst.layers) - 3
    if target in ("megatron", "vllm"):  # the final norm and the head on the last stage, a block on each
        pins = ((inst.layers[blocks[0]].name, 0), *((layer.name, -1) for layer in inst.layers[blocks[-1]:]))
        inst = dataclasses.replace(inst, constraints=dataclasses.replace(inst.constraints, pinned=pins))
    plan = solve(inst, objective="min_bottleneck", num_partitions=4)
    exported = export_plan(inst, plan, target)
    assert stage_layer_counts(inst, exported) == [len(p) for p in plan.partitions]


@pytest.mark.parametrize("case", sorted(SMALL))
def test_kv_cache_is_what_the_dynamic_cache_holds(case):
    """Right after a prefill of s positions (the forward the instance describes): each block's
    cache storage, in bytes. GPT-OSS's sliding layers (window 4 < s) keep a view of the last 3
    positions whose storage still holds all s, as the other decoders' do (decoder.kv_bytes)."""
    raw = SMALL[case]
    s, b = 9, 2
    model = tiny(raw).eval()
    ids = torch.randint(0, raw["vocab_size"], (b, s))
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
    held = [layer.keys.untyped_storage().nbytes() + layer.values.untyped_storage().nbytes() for layer in cache.layers]
    inst = imported(raw, batch_size=b, seq_len=s, kv_cache=True, split="sublayer")
    ours = [layer.kv_cache_bytes for layer in inst.layers if layer.kv_cache_bytes]
    assert ours == held
    assert all(layer.kv_cache_bytes == 0 for layer in inst.layers if not layer.name.endswith(("attn", "attention")))


def test_kv_cache_formulas_by_hand():
    b, s, e = 1, 4096, 2
    lite = from_hf_config(CONFIGS / "deepseek-v2-lite.json", batch_size=b, seq_len=s, kv_cache=True)
    assert {layer.kv_cache_bytes for layer in lite.layers[1:-2]} == {b * s * (512 + 64) * e}  # the latent
    oss = from_hf_config(CONFIGS / "gpt-oss-20b.json", batch_size=b, seq_len=s, dtype="bf16", kv_cache=True)
    kv = [layer.kv_cache_bytes for layer in oss.layers[1:-2]]
    # the default DynamicCache right after a prefill: every layer holds all s positions (sliding
    # ones as a view of the last 127); a static cache keeps a sliding layer's window of 128
    assert kv == [2 * b * s * 8 * 64 * e] * 24
    static = from_hf_config({**real("gpt-oss-20b"), "cache_implementation": "static"}, batch_size=b, seq_len=s,
                            dtype="bf16", kv_cache=True)
    kv = [layer.kv_cache_bytes for layer in static.layers[1:-2]]
    assert kv[0::2] == [2 * b * 128 * 8 * 64 * e] * 12 and kv[1::2] == [2 * b * s * 8 * 64 * e] * 12
    f7 = from_hf_config(CONFIGS / "falcon-7b.json", batch_size=b, seq_len=s, kv_cache=True)
    assert f7.layers[1].kv_cache_bytes == 2 * b * s * 1 * 64 * e  # multi-query: one head
    f40 = from_hf_config(CONFIGS / "falcon-40b.json", batch_size=b, seq_len=s, kv_cache=True)
    assert f40.layers[1].kv_cache_bytes == 2 * b * s * 128 * 64 * e  # 8 groups broadcast to 128 heads first


def saved_per_block(raw: dict, b: int, s: int, dtype) -> list[int]:  # type: ignore[no-untyped-def]
    """Bytes autograd saves inside each block (storages once, weights excluded)."""
    model = tiny(raw).to(dtype).train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    blocks = model.model.layers if hasattr(model, "model") else model.transformer.h
    current: list[int | None] = [None]
    seen: list[dict[int, int]] = [{} for _ in blocks]

    def pack(t):  # type: ignore[no-untyped-def]
        storage = t.untyped_storage()
        if current[0] is not None and storage.data_ptr() not in weights:
            seen[current[0]][storage.data_ptr()] = storage.nbytes()
        return t

    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda *_, i=i: current.__setitem__(0, i))
        block.register_forward_hook(lambda *_: current.__setitem__(0, None))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randint(0, raw["vocab_size"], (b, s)), use_cache=False)
    return [sum(d.values()) for d in seen]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("case", ["deepseek_v2", "deepseek_v3", "deepseek_v3-plain-q", "gpt_oss",
                                  "gpt_oss-no-bias-tied", "falcon-7b-style", "falcon-40b-style",
                                  "falcon-one-norm-new", "falcon-rw-style"])
def test_training_saves_what_autograd_saves(case, dtype):
    """Each block within 7 % below autograd's count. Not counted: the rotary tables and the
    causal (or ALiBi) mask, one per forward for all blocks. DeepSeek's value heads are made as
    wide as its keys here: with narrower ones a CPU's sdpa falls back to its math path (fp32
    copies and probabilities) where a GPU's memory-efficient kernel does not; even so, a CPU
    keeps the attention's output twice (sdpa's and o_proj's input), a GPU once."""
    raw = dict(SMALL[case], hidden_size=64)
    if case.startswith("deepseek"):
        raw["v_head_dim"] = raw["qk_nope_head_dim"] + raw["qk_rope_head_dim"]
    b, s = 2, 16
    measured = saved_per_block(raw, b, s, {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    inst = imported(raw, batch_size=b, seq_len=s, mode="training", dtype=dtype)
    ours = [layer.activation_bytes for layer in inst.layers[1:-2]]
    for mine, theirs in zip(ours, measured, strict=True):
        assert 0.93 * theirs <= mine <= theirs, (ours, measured)


def test_falcon_sublayers_carry_what_the_parallel_block_needs():
    b, s, e, h = 1, 128, 2, 4544
    f7 = from_hf_config(CONFIGS / "falcon-7b.json", batch_size=b, seq_len=s, split="sublayer")
    attention, mlp = f7.layers[1], f7.layers[2]
    assert attention.name == "transformer.h.0.self_attention" and mlp.name == "transformer.h.0.mlp"
    assert attention.modules == ("transformer.h.0.input_layernorm", "transformer.h.0.self_attention")
    assert mlp.modules == ()  # the shared norm is the attention's
    assert attention.activation_bytes == 3 * b * s * h * e  # input, norm output, attention output
    assert mlp.activation_bytes == b * s * h * e
    f40 = from_hf_config(CONFIGS / "falcon-40b.json", batch_size=b, seq_len=s, split="sublayer")
    assert f40.layers[1].modules == ("transformer.h.0.ln_attn", "transformer.h.0.self_attention")
    assert f40.layers[2].modules == ("transformer.h.0.ln_mlp", "transformer.h.0.mlp")
    assert f40.layers[1].activation_bytes == 2 * b * s * 8192 * e  # input and attention output
    assert f7.constraints.tied and f7.constraints.tied[0].layers == ("transformer.word_embeddings", "lm_head")


def test_attention_flops_reach_falcons_self_attention_and_mla():
    f7 = from_hf_config(CONFIGS / "falcon-7b.json", batch_size=1, seq_len=1024, split="sublayer", flops_per_s=1e12)
    attention, mlp = f7.layers[1], f7.layers[2]
    assert attention.time == pytest.approx((2 * attention.params * 1024 + 4 * 1024 ** 2 * 4544) / 1e12)
    assert mlp.time == pytest.approx(2 * mlp.params * 1024 / 1e12)
    lite = from_hf_config(CONFIGS / "deepseek-v2-lite.json", batch_size=1, seq_len=1024, flops_per_s=1e12)
    q_dim = 16 * (128 + 64 + 128) // 2  # scores over 192-wide heads, values 128 wide
    assert lite.layers[1].time == pytest.approx((2 * lite.layers[1].params * 1024 + 4 * 1024 ** 2 * q_dim) / 1e12)


@pytest.mark.parametrize(("base", "change", "message"), [
    ("deepseek_v2", {"moe_layer_freq": 2}, r"config\.moe_layer_freq: 2; transformers builds a MoE in every block"),
    ("deepseek_v2", {"q_lora_rank": 0}, r"config\.q_lora_rank: must be a positive integer, got 0"),
    ("deepseek_v3", {"n_shared_experts": -1}, r"config\.n_shared_experts: must be a non-negative integer, got -1"),
    ("deepseek_v2", {"first_k_dense_replace": None},
     r"config\.first_k_dense_replace: must be a non-negative integer, got None"),
    ("deepseek_v3", {"num_experts_per_tok": 9}, r"config\.num_experts_per_tok: 9 is more than n_routed_experts 8"),
    ("deepseek_v3", {"kv_lora_rank": None}, r"config\.kv_lora_rank: missing"),
    ("gpt_oss", {"layer_types": ["full_attention"]}, r"config\.layer_types: expected a list of 3 entries"),
    ("gpt_oss", {"layer_types": ["full_attention", "chunked", "full_attention"]},
     r"config\.layer_types\[1\]: unknown layer type 'chunked'"),
    ("gpt_oss", {"sliding_window": None}, r"config\.sliding_window: missing"),
    ("gpt_oss", {"num_key_value_heads": 3}, r"config\.num_key_value_heads: 3 does not divide num_attention_heads 4"),
    ("falcon-40b-style", {"parallel_attn": False}, r"config\.parallel_attn: false with new_decoder_architecture true"),
    ("falcon-7b-style", {"num_ln_in_parallel_attn": 2}, r"config\.num_ln_in_parallel_attn: 2 needs new_decoder"),
    ("falcon-7b-style", {"num_ln_in_parallel_attn": 3}, r"config\.num_ln_in_parallel_attn: must be 1, 2 or null"),
    ("falcon-40b-style", {"num_kv_heads": 3}, r"config\.num_kv_heads: 3 does not divide num_attention_heads 4"),
    ("falcon-rw-style", {"num_kv_heads": 2}, r"config\.num_kv_heads: 2; without multi_query"),
    ("falcon-7b-style", {"hidden_size": 30}, r"config\.hidden_size: 30 is not a multiple of num_attention_heads 4"),
    ("falcon-7b-style", {"bias": "yes"}, r"config\.bias: must be true or false, got 'yes'"),
])
def test_bad_configs_name_the_field(base, change, message):
    with pytest.raises(InstanceError, match=message):
        imported({**SMALL[base], **change})
