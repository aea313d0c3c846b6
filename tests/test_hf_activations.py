"""The importer's torch-free training formulas against what torch saves for the backward pass.

``from_hf_model`` measures, on fake tensors at the real widths, what autograd saves in each
layer (saved_tensors_hooks, each storage once, parameters excluded); that measurement equals a
real CPU forward's on tiny models; and ``from_hf_config``'s formulas are within 5 % of it for
every layer — embedding, each block, final norm and head (with the loss; BERT's pooler) — in
fp32 and bf16, two blocks, 32 and 256 tokens, at the published widths of: Llama-3-8B, Qwen3-8B,
Mistral (a window shorter than the sequence: the masked path), Mixtral-8x7B, Qwen2-7B, GPT-2,
GPT-2 XL, BERT-large (dropout off: see below), Falcon-7B (multi-query), Falcon-40B (the new
architecture) and GPT-OSS-20b.

The other families are measured the same way elsewhere, not repeated here:
Gemma 2, Gemma 3 (text), Phi-3, OLMo 2 and Qwen3-MoE in
``tests/test_hf_families.py::test_training_formulas_are_within_5_percent_of_what_torch_saves``.
DeepSeek-V2/V3 as published cannot be measured on a CPU as a GPU runs them (see
``DEEPSEEK_ON_A_CPU``'s reason): ``test_deepseek_with_value_heads_as_wide_as_its_keys`` measures
them at their widths with the value heads widened (the CPU's fused kernel), and
``tests/test_hf_families_moe.py::test_training_saves_what_autograd_saves`` a small real model.

Dropout: GPT-2's and BERT's configs keep 0.1. The formulas count a GPU's dropout (a 1-byte mask
a value; SDPA's fused kernels draw the attention's dropout from a seed); a CPU keeps the noise
in the activation's dtype and runs SDPA's math path when its dropout is on, so the comparison
with the CPU measurement is made with dropout off, and the masks' count is checked apart
(``test_dropout_masks_are_where_torch_keeps_them``)."""

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from layerfit import from_hf_config  # noqa: E402
from layerfit.runtime import from_hf_model  # noqa: E402

from helpers import ROOT  # noqa: E402
from hf_models import VOCAB, config as tiny_config  # noqa: E402

CONFIGS_DIR = ROOT / "instances" / "configs"

SEQ = 32

# Llama-3-8B's and Qwen3-8B's widths (their published configs), two blocks, the real vocabularies.
LLAMA_3_8B = dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=128256, num_hidden_layers=2, rope_theta=500000.0)
QWEN3_8B = dict(model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936, num_hidden_layers=2)
MISTRAL_WINDOWED = dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=32000, num_hidden_layers=2, sliding_window=16)
MIXTRAL = dict(model_type="mixtral", hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=32000, num_hidden_layers=2, num_local_experts=8,
               num_experts_per_tok=2)
QWEN2 = dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
             num_key_value_heads=4, vocab_size=152064, num_hidden_layers=2)

NO_DROPOUT = {"gpt2": dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
              "bert": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)}


def published(name: str, **change) -> dict:  # type: ignore[no-untyped-def]
    """A bundled config (instances/configs) cut to two blocks."""
    raw = {k: v for k, v in json.loads((CONFIGS_DIR / f"{name}.json").read_text()).items()
           if k not in ("torch_dtype", "dtype")}
    raw["n_layer" if raw["model_type"] == "gpt2" else "num_hidden_layers"] = 2
    if isinstance(raw.get("layer_types"), list):
        raw["layer_types"] = raw["layer_types"][:2]
    return raw | NO_DROPOUT.get(raw["model_type"], {}) | change


CONFIGS = {"llama-3-8b": LLAMA_3_8B, "qwen3-8b": QWEN3_8B, "mistral-window-16": MISTRAL_WINDOWED,
           "mixtral-8x7b": MIXTRAL, "qwen2-7b": QWEN2,
           "gpt2": published("gpt2"), "gpt2-xl": published("gpt2-xl"), "bert-large": published("bert-large-uncased"),
           "falcon-7b": published("falcon-7b"), "falcon-40b": published("falcon-40b"),
           "gpt-oss-20b": published("gpt-oss-20b")}


DEEPSEEK_ON_A_CPU = pytest.mark.skip(
    reason="DeepSeek's value heads (128) are narrower than its query and key heads (192): a CPU's SDPA then takes "
           "its math path (fp32 copies and every head's probabilities), where a GPU's memory-efficient kernel, which "
           "the formulas count, keeps none; with the value heads widened, the CPU's fused kernel leaves its output "
           "heads-first and o_proj's input is a second copy: test_deepseek_with_value_heads_as_wide_as_its_keys "
           "measures that case instead.")


@pytest.mark.parametrize("seq", [SEQ, 256])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("name", [*sorted(CONFIGS), *(pytest.param(n, marks=DEEPSEEK_ON_A_CPU)
                                                      for n in ("deepseek-v2-lite", "deepseek-v3"))])
def test_predicted_saved_bytes_are_within_5_percent_of_torch_for_every_layer(name, dtype, seq):
    config = CONFIGS[name]
    measured = from_hf_model(config, batch_size=1, seq_len=seq, dtype=dtype, mode="training")
    predicted = from_hf_config(config, batch_size=1, seq_len=seq, dtype=dtype, mode="training")
    assert [layer.name for layer in predicted.layers] == [layer.name for layer in measured.layers]
    for want, got in zip(measured.layers, predicted.layers):
        assert got.params == want.params, want.name
        assert abs(got.activation_bytes / want.activation_bytes - 1) <= 0.05, \
            f"{want.name}: predicted {got.activation_bytes}, torch saves {want.activation_bytes}"
        assert got.output_bytes == want.output_bytes, want.name


@pytest.mark.parametrize("seq", [SEQ, 256])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["deepseek-v2-lite", "deepseek-v3"])
def test_deepseek_with_value_heads_as_wide_as_its_keys(name, dtype, seq):
    """DeepSeek's formulas at its widths where a CPU runs the attention's fused kernel: value heads
    widened to the keys' (192). That kernel leaves its output heads-first, so o_proj's input is a
    copy, e·H·d_v a token, which the formulas (a GPU's memory-efficient kernel, its output
    tokens-first) leave out: added here. Every other term within 5 %, layer by layer."""
    if name == "deepseek-v3" and dtype == "fp32":
        pytest.skip("V3's 256 fused experts in fp32: transformers' grouped-product fallback (torch's grouped_mm "
                    "takes bf16 only) cannot be built on meta at these widths (it allocates the experts' weights)")
    config = published(name)
    config |= dict(first_k_dense_replace=1, v_head_dim=config["qk_nope_head_dim"] + config["qk_rope_head_dim"])
    measured = from_hf_model(config, batch_size=1, seq_len=seq, dtype=dtype, mode="training")
    predicted = from_hf_config(config, batch_size=1, seq_len=seq, dtype=dtype, mode="training")
    copy = {"fp32": 4, "bf16": 2}[dtype] * seq * config["num_attention_heads"] * config["v_head_dim"]
    for want, got in zip(measured.layers, predicted.layers, strict=True):
        assert got.params == want.params, want.name
        if name == "deepseek-v3" and want.name == "model.layers.1":
            # V3's MoE block (256 experts, group-limited routing): the fake-tensor measurement of
            # it varies from run to run (by up to 8 % at 256 tokens), so it is no reference here;
            # its terms are V2's, checked above, and the small model's in test_hf_families_moe.py
            continue
        extra = copy if want.name.startswith("model.layers.") else 0
        assert abs((got.activation_bytes + extra) / want.activation_bytes - 1) <= 0.05, \
            f"{want.name}: predicted {got.activation_bytes} + {extra}, torch saves {want.activation_bytes}"


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["gpt2", "bert-large-uncased"])
def test_dropout_masks_are_where_torch_keeps_them(name, dtype):
    """With the published dropout (0.1) the formulas add a 1-byte mask a value (a GPU's
    ``native_dropout``) where transformers drops out: GPT-2's embeddings, each block's attention
    and MLP outputs; BERT's embeddings, each block's attention and MLP outputs. The CPU keeps an
    e-byte noise at the same places: measured with the attention's dropout off (its CPU math path
    is not what a GPU runs), the difference is e times the predicted masks' bytes, layer by layer."""
    e = {"fp32": 4, "bf16": 2}[dtype]
    attention_off = {"gpt2": dict(attn_pdrop=0.0), "bert-large-uncased": dict(attention_probs_dropout_prob=0.0)}[name]
    off = published(name)
    on = {k: v for k, v in published(name).items() if k not in NO_DROPOUT[off["model_type"]]} | attention_off
    options = dict(batch_size=1, seq_len=SEQ, dtype=dtype, mode="training")
    masks = [a.activation_bytes - b.activation_bytes
             for a, b in zip(from_hf_config(on, **options).layers, from_hf_config(off, **options).layers)]
    noise = [a.activation_bytes - b.activation_bytes
             for a, b in zip(from_hf_model(on, **options).layers, from_hf_model(off, **options).layers)]
    h = off.get("n_embd") or off["hidden_size"]
    after = [0, 0] if name == "gpt2" else [0]  # ln_f and lm_head; the pooler
    assert masks == [SEQ * h, 2 * SEQ * h, 2 * SEQ * h, *after]
    assert noise == [e * m for m in masks]
    # the published attention dropout adds no mask to a GPU's fused SDPA
    assert from_hf_config(published(name) | {k: 0.1 for k in NO_DROPOUT[off["model_type"]]}, **options).layers \
        == from_hf_config(on, **options).layers


def test_the_llama_block_counts_the_norms_fp32_copies():
    """The terms of the docstring, by hand, for one Llama-3-8B block in bf16 (e = 2)."""
    b, s, e, h, q, kv, inter, heads, head_dim = 1, SEQ, 2, 4096, 4096, 1024, 14336, 32, 128
    norm = b * s * ((4 + e) * h + 4)  # fp32 input, normalized values, 1/rms a row
    attention = norm + b * s * (e * h + 2 * head_dim * e + e * (q + 2 * kv) + e * q + 4 * heads)
    mlp = norm + b * s * (e * h + 4 * inter * e)
    inst = from_hf_config(LLAMA_3_8B, batch_size=b, seq_len=s, dtype="bf16", mode="training")
    assert inst.layers[1].activation_bytes == attention + mlp
    assert inst.layers[0].activation_bytes == 8 * b * s  # the token ids
    assert inst.layers[-2].activation_bytes == norm
    assert inst.layers[-1].activation_bytes == b * s * (e * h + 4 * 128256 + 8)  # input, fp32 log-probs, labels


def _real_saved(model, names, inputs):
    """Per layer: what autograd saves in a real CPU forward, each storage once per layer and
    parameters excluded; tensors saved between two layers count to the layer before."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    modules = dict(model.named_modules())
    saved = dict.fromkeys(names, 0)
    seen: dict = {name: set() for name in names}
    running: list = []
    done: list = []

    def pack(t):
        owner = running[-1] if running else done[-1] if done else None
        ptr = t.untyped_storage().data_ptr()
        if owner is not None and ptr not in params and ptr not in seen[owner]:
            seen[owner].add(ptr)
            saved[owner] += t.untyped_storage().nbytes()
        return t

    handles = []
    for name in names:
        parent, _, leaves = name.rpartition(".")
        for leaf in leaves.split("+"):
            module = modules[f"{parent}.{leaf}" if parent else leaf]
            handles.append(module.register_forward_pre_hook(lambda m, a, n=name: running.append(n)))
            handles.append(module.register_forward_hook(lambda m, a, o, n=name: done.append(running.pop())))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return saved


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gpt2", "mixtral"])
def test_the_fake_measurement_equals_a_real_cpu_forward(family):
    config = tiny_config(family)
    inst = from_hf_model(config, batch_size=2, seq_len=9, dtype="fp32", mode="training")
    torch.manual_seed(0)
    extra = {"experts_implementation": "grouped_mm"} if family == "mixtral" else {}
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", **extra)
    model.train()
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    real = _real_saved(model, [layer.name for layer in inst.layers], dict(input_ids=ids, labels=ids, use_cache=False))
    for layer in inst.layers:
        if family == "mixtral" and layer.name.startswith("model.layers."):
            # torch's own grouped product keeps its group offsets (4 bytes an expert), the
            # fallback the fake forward runs in fp32 does not
            assert 0 <= real[layer.name] - layer.activation_bytes <= 4 * config.num_local_experts, layer.name
        else:
            assert layer.activation_bytes == real[layer.name], layer.name
