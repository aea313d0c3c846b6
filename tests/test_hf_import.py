"""runtime.from_hf_model: an instance of any transformers architecture, built on fake tensors
and read from the model itself. Against from_hf_config for every family both read (the same
layers, parameters, tied groups, outputs and KV caches); encoder–decoder and vision models as
DAGs and chains; `layerfit import --via transformers`; clear errors."""

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from layerfit import Instance, from_hf_config, solve, validate_plan  # noqa: E402
from layerfit.cli import main  # noqa: E402
from layerfit.interop.hf_families import FAMILIES  # noqa: E402
from layerfit.runtime import ModelError, from_hf_model  # noqa: E402

from hf_models import config as tiny_config  # noqa: E402
from helpers import INSTANCES, ROOT  # noqa: E402

CONFIGS = INSTANCES / "configs"

_SMALL = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2)
_MLA = _SMALL | dict(num_key_value_heads=4)  # multi-head latent attention: a key and value a head


def _tiny(model_type: str):
    """A tiny transformers config of ``model_type``: tests/hf_models.py's, or one written here."""
    tf = transformers
    extra = {
        "bert": lambda: tf.BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=64),
        "qwen3_moe": lambda: tf.Qwen3MoeConfig(**_SMALL, moe_intermediate_size=16, num_experts=4,
                                               num_experts_per_tok=2, head_dim=8),
        "gemma3_text": lambda: tiny_config("gemma3"),
        "falcon": lambda: tf.FalconConfig(vocab_size=96, hidden_size=32, num_hidden_layers=3, num_attention_heads=4),
        "gpt_oss": lambda: tf.GptOssConfig(**_SMALL, num_local_experts=4, num_experts_per_tok=2, head_dim=8,
                                           sliding_window=4),
        "deepseek_v2": lambda: tf.DeepseekV2Config(**_MLA, moe_intermediate_size=16, n_routed_experts=4,
                                                   num_experts_per_tok=2, first_k_dense_replace=1, q_lora_rank=16,
                                                   kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
                                                   v_head_dim=8),
        "deepseek_v3": lambda: tf.DeepseekV3Config(**_MLA, moe_intermediate_size=16, n_routed_experts=4,
                                                   num_experts_per_tok=2, first_k_dense_replace=1, q_lora_rank=16,
                                                   kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
                                                   v_head_dim=8, n_group=1, topk_group=1),
    }
    return extra[model_type]() if model_type in extra else tiny_config(model_type)


@pytest.mark.parametrize("model_type", sorted(set(FAMILIES) | {"llama-tied"}))
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_the_same_layers_as_from_hf_config_for_every_family(model_type, mode):
    """Every family from_hf_config reads (whatever it reads when this runs), through transformers."""
    config = _tiny(model_type)
    seq = 3  # shorter than any tiny model's sliding window: every layer's cache holds the sequence
    kv = mode == "inference" and model_type != "bert"  # an encoder keeps none
    measured = from_hf_model(config, batch_size=2, seq_len=seq, dtype="fp32", mode=mode, kv_cache=kv)
    formulas = from_hf_config(config.to_dict(), batch_size=2, seq_len=seq, dtype="fp32", mode=mode, kv_cache=kv)
    assert [layer.name for layer in measured.layers] == [layer.name for layer in formulas.layers]
    assert [layer.params for layer in measured.layers] == [layer.params for layer in formulas.layers]
    assert measured.constraints.tied == formulas.constraints.tied
    assert measured.total_params == formulas.total_params
    assert measured.edges is None
    if mode == "inference":  # outputs and KV caches: the same bytes
        assert [layer.activation_bytes for layer in measured.layers] == [layer.activation_bytes
                                                                         for layer in formulas.layers]
        assert [layer.kv_cache_bytes for layer in measured.layers] == [layer.kv_cache_bytes
                                                                       for layer in formulas.layers]
    else:  # what crosses a cut
        assert [layer.output_bytes for layer in measured.layers] == [layer.output_bytes for layer in formulas.layers]
    assert Instance.from_dict(measured.to_dict()) == measured


def test_a_real_checkpoints_config_at_full_size_allocates_nothing():
    inst = from_hf_model(CONFIGS / "llama-3-8b.json", batch_size=1, seq_len=64, mode="training")
    assert inst.name == "llama-3-8b" and inst.dtype == "bf16"  # the config's torch_dtype
    assert inst.total_params == 8_030_261_248  # the published total
    assert inst.num_layers == 35 and inst.training is not None
    assert inst.description.startswith("llama built by transformers (LlamaForCausalLM, sdpa attention) from its "
                                       "config (llama-3-8b): batch 1, sequence 64, bf16, training")
    assert from_hf_model(CONFIGS / "llama-3-8b.json", batch_size=1, seq_len=8, dtype="bfloat16").dtype == "bf16"


def test_config_paths_directories_dicts_and_config_objects(tmp_path):
    config = tiny_config("llama")
    config.save_pretrained(tmp_path / "tiny-llama")
    raw = json.loads((tmp_path / "tiny-llama" / "config.json").read_text())
    by_dir = from_hf_model(tmp_path / "tiny-llama", batch_size=1, seq_len=4, dtype="fp32")
    by_file = from_hf_model(tmp_path / "tiny-llama" / "config.json", batch_size=1, seq_len=4, dtype="fp32")
    by_dict = from_hf_model(raw, batch_size=1, seq_len=4, dtype="fp32", name="tiny-llama")
    by_object = from_hf_model(config, batch_size=1, seq_len=4, dtype="fp32", name="tiny-llama")
    assert by_dir.name == by_file.name == "tiny-llama"
    assert by_dir.layers == by_file.layers == by_dict.layers == by_object.layers
    assert config.to_dict() == tiny_config("llama").to_dict()  # the caller's config is untouched
    loaded = transformers.AutoConfig.from_pretrained(tmp_path / "tiny-llama")
    assert from_hf_model(loaded, batch_size=1, seq_len=4, dtype="fp32").name == "tiny-llama"


def test_kv_caches_and_workspace_are_measured():
    config = tiny_config("llama")  # h 32, I 64, 2 KV heads of 8
    inst = from_hf_model(config, batch_size=2, seq_len=5, dtype="fp32", kv_cache=True)
    assert [layer.kv_cache_bytes for layer in inst.layers] == [0, *[2 * 2 * 5 * 16 * 4] * 3, 0, 0]
    # inference: a block's transient peak is its MLP's SiLU output, up's output and their product
    # beside one hidden state, e·(3·I + h) a token, beyond the output it keeps
    assert [layer.buffer_bytes for layer in inst.layers[1:4]] == [2 * 5 * 4 * (3 * 64 + 32)] * 3
    trained = from_hf_model(config, batch_size=2, seq_len=5, dtype="bf16", mode="training")
    # training keeps those (saved); what is left is an RMSNorm's fp32 square, 4·h a token
    assert [layer.buffer_bytes for layer in trained.layers[1:4]] == [2 * 5 * 4 * 32] * 3
    # bf16: the loss upcasts the logits, 4·vocab a token, and lets them go
    assert 2 * 5 * 4 * 96 <= trained.layers[-1].buffer_bytes < 2 * 5 * 4 * 100


def _t5():
    return transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=2,
                                 num_heads=4, dropout_rate=0.0)


def _whisper():
    return transformers.WhisperConfig(vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2,
                                      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                      decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=16,
                                      max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                      decoder_start_token_id=1, begin_suppress_tokens=None, suppress_tokens=None)


def test_an_encoder_decoder_is_a_dag_whose_encoder_output_feeds_every_decoder_block():
    inst = from_hf_model(_t5(), batch_size=2, seq_len=8, dtype="fp32", mode="training")
    names = [layer.name for layer in inst.layers]
    assert names == ["encoder.embed_tokens", "encoder.block.0", "encoder.block.1", "encoder.block.2",
                     "encoder.final_layer_norm", "decoder.embed_tokens", "decoder.block.0", "decoder.block.1",
                     "decoder.final_layer_norm", "lm_head"]
    edges = set(inst.edges)
    assert {("encoder.final_layer_norm", "decoder.block.0"), ("encoder.final_layer_norm", "decoder.block.1")} <= edges
    assert ("encoder.embed_tokens", "encoder.block.0") in edges and ("decoder.embed_tokens", "decoder.block.0") in edges
    # the first block's relative position bias is read by every later block of its stack
    assert ("encoder.block.0", "encoder.block.2") in edges and ("decoder.block.0", "decoder.block.1") in edges
    assert not any(a.startswith("decoder") and b.startswith("encoder") for a, b in edges)
    # T5 ties its embeddings and head; a DAG takes no tied group yet: each holder counts the weight
    assert not inst.constraints.tied and "tied weights counted in each layer that holds them" in inst.description
    assert inst.layers[0].params == inst.layers[5].params == inst.layers[-1].params == 96 * 32
    plan = solve(inst, objective="min_bottleneck", num_partitions=3)
    validate_plan(inst, plan)


def test_whisper_is_a_dag_from_mel_frames_to_tokens():
    inst = from_hf_model(_whisper(), batch_size=2, seq_len=8, dtype="fp32", kv_cache=True)
    names = [layer.name for layer in inst.layers]
    # the encoder's positions are a weight its forward reads, not a module it calls: placed there
    assert names[0] == "model.encoder.conv1+conv2+embed_positions"
    assert names[3:6] == ["model.encoder.layer_norm", "model.decoder.embed_tokens+embed_positions",
                          "model.decoder.layers.0"]
    assert names[-1] == "proj_out"
    assert {("model.encoder.layer_norm", "model.decoder.layers.0"),
            ("model.encoder.layer_norm", "model.decoder.layers.1")} <= set(inst.edges)
    # each decoder block caches its own keys and values (8 tokens) and the encoder's (16 frames)
    assert inst.layers[5 + 1].kv_cache_bytes == 2 * 2 * 8 * 32 * 4 + 2 * 2 * 16 * 32 * 4
    assert inst.layers[1].kv_cache_bytes == 0


def test_a_vision_transformer_is_a_chain_of_patches():
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                    image_size=32, patch_size=8, num_labels=10)
    inst = from_hf_model(config, batch_size=2, seq_len=17, dtype="fp32")
    assert inst.edges is None
    assert inst.layers[0].name == "vit.embeddings" and inst.layers[-1].name == "classifier"
    assert inst.layers[1].activation_bytes == 2 * 17 * 32 * 4  # 16 patches and the class token
    assert inst.layers[-1].activation_bytes == 2 * 10 * 4  # the logits
    with pytest.raises(ModelError, match=r"^seq_len: vit sees 17 tokens for images of 32 × 32 in patches of 8 "
                                         r"\(16 patches and a class token\), got 16$"):
        from_hf_model(config, batch_size=2, seq_len=16, dtype="fp32")


@pytest.mark.parametrize("kwargs, message", [
    (dict(split="sublayer"), "split: from_hf_model reads whole blocks, got 'sublayer'; for attention and MLP apart "
                             "use from_hf_config(..., split='sublayer') (model_type llama, mistral, mixtral, "
                             "qwen2, qwen3, qwen3_moe, gemma2, gemma3_text, phi3, olmo2, gpt2, bert, deepseek_v2, "
                             "deepseek_v3, gpt_oss, falcon)"),
    (dict(dtype="int4"), "dtype: from_hf_model measures fp32, bf16 or fp16, got 'int4' (quantized weights: "
                         "from_hf_config)"),
    (dict(mode="serving"), "mode: unknown mode 'serving' (allowed: inference, training)"),
    (dict(mode="training", kv_cache=True), "kv_cache: a KV cache is kept for inference, not with mode 'training'"),
    (dict(batch_size=0), "batch_size: must be a positive integer, got 0"),
    (dict(seq_len=65), "seq_len: 65 tokens, beyond the model's 64 learned positions (config.n_positions)"),
])
def test_bad_options_name_the_option(kwargs, message):
    options = dict(batch_size=1, seq_len=8, dtype="fp32") | kwargs
    with pytest.raises(ModelError) as info:
        from_hf_model(tiny_config("gpt2"), **options)
    assert str(info.value) == message


def test_bad_configs_name_the_field(tmp_path):
    with pytest.raises(ModelError, match=r"^config\.model_type: transformers does not know 'no-such-model' "):
        from_hf_model({"model_type": "no-such-model"}, batch_size=1, seq_len=8)
    with pytest.raises(ModelError, match=r"^config\.model_type: missing or not a string \(None\)$"):
        from_hf_model({"hidden_size": 8}, batch_size=1, seq_len=8)
    with pytest.raises(ModelError, match=r"^config: no such file '.*nowhere/config\.json'$"):
        from_hf_model(tmp_path / "nowhere" / "config.json", batch_size=1, seq_len=8)
    whisper = transformers.WhisperConfig(vocab_size=96, d_model=32, encoder_layers=1, decoder_layers=1,
                                         encoder_attention_heads=4, decoder_attention_heads=4)  # pad id 50256
    with pytest.raises(ModelError, match=r"^config: transformers cannot build AutoModelForSpeechSeq2Seq from it "
                                         r"\(AssertionError: Padding_idx must be within num_embeddings\)$"):
        from_hf_model(whisper, batch_size=1, seq_len=8, dtype="fp32")
    raw = {k: v for k, v in json.loads((CONFIGS / "llama-3-8b.json").read_text()).items() if k != "torch_dtype"}
    with pytest.raises(ModelError, match=r"^config\.dtype: cannot tell the dtype from None; pass dtype=$"):
        from_hf_model(raw, batch_size=1, seq_len=8)


def test_the_cli_imports_through_transformers(tmp_path, capsys):
    out = tmp_path / "tiny.json"
    config = CONFIGS / "gpt2.json"
    code = main(["import", str(config), "--via", "transformers", "--batch-size", "1", "--seq-len", "32",
                 "--dtype", "fp32", "--training", "--capacity", "2GB", "-o", str(out)])
    assert code == 0
    assert capsys.readouterr().err == f"{out}: 15 layers, 124,439,808 parameters, capacity 2 GB\n"
    expected = from_hf_model(config, batch_size=1, seq_len=32, dtype="fp32", mode="training", capacity="2GB")
    assert Instance.from_dict(json.loads(out.read_text())) == expected
    code = main(["import", str(config), "--via", "transformers", "--batch-size", "1", "--seq-len", "32",
                 "--activation-dtype", "bf16"])
    assert code == 2
    assert capsys.readouterr().err == ("layerfit: error: --activation-dtype: not with --via transformers (it measures "
                                       "the model in --dtype, untimed); use --via config\n")


def test_the_cli_without_torch_says_what_to_install():
    code = ("import sys; sys.modules['torch'] = None; from layerfit.cli import main; "
            f"sys.exit(main(['import', {str(CONFIGS / 'gpt2.json')!r}, '--via', 'transformers', "
            "'--batch-size', '1', '--seq-len', '8']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("layerfit: error: --via transformers needs torch and transformers (")
    assert done.stderr.endswith("); pip install 'layerfit[hf]'\n")


def test_without_transformers_it_says_what_to_install():
    code = ("import sys; sys.modules['transformers'] = None; from layerfit.cli import main; "
            f"sys.exit(main(['import', {str(CONFIGS / 'gpt2.json')!r}, '--via', 'transformers', "
            "'--batch-size', '1', '--seq-len', '8']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "layerfit: error: from_hf_model: needs transformers >= 5.24 (pip install 'layerfit[hf]')\n"
