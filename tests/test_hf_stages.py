"""The stages of a transformers causal LM, run in turn in one process, equal the model: logits
and gradients, for every family of the Llama layout and GPT-2's, wherever the cuts fall
(the embedding alone, blocks apart, the head alone). Masks (causal, sliding windows shorter
than the sequence), positions and rotary embeddings are the model's own."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from layerfit.runtime import ModelError, prepare_model  # noqa: E402
from layerfit.runtime.hf import causal_lm_loss  # noqa: E402

from hf_models import save, token_ids  # noqa: E402

FAMILIES = ["llama", "llama-tied", "mistral", "qwen2", "mixtral", "gpt2", "qwen3", "phi3", "olmo2", "gemma2", "gemma3"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_stages_in_turn_equal_the_model(tmp_path, family):
    model = save(family, tmp_path, seed=1)
    prepared = prepare_model(tmp_path)
    names = prepared.names
    n = len(names)
    assert n == 3 + 3 and names[1:4] == [names[1][:-1] + str(i) for i in range(3)]
    ids = token_ids(2, 9, seed=2)
    model.train()
    model.zero_grad()
    want = model(ids, labels=ids)
    want.loss.backward()
    for cuts in [(1,), (2, n - 2), (n - 1,)]:
        bounds = [0, *cuts, n]
        stages = []
        hidden = ids
        for a, b in zip(bounds, bounds[1:]):
            root, _ = prepared.build_stage(range(a, b), 0, torch.device("cpu"))
            stage = prepared.source.stage(root, names[a:b]).train()
            stages.append(stage)
            hidden = stage(hidden)
        assert torch.allclose(hidden, want.logits, atol=1e-5), (cuts, (hidden - want.logits).abs().max())
        causal_lm_loss(hidden, ids).backward()
        grads = {name: param.grad for stage in stages for name, param in stage.named_parameters()}
        for group in prepared.shared:  # a tied weight on two stages: the model's gradient is their sum
            total = sum(grads[name] for name in group if name in grads)
            grads.update(dict.fromkeys(group, total))
        for name, param in model.named_parameters(remove_duplicate=False):
            assert torch.allclose(grads[name], param.grad, atol=1e-5), (cuts, name)


def test_a_checkpoint_that_does_not_fit_the_model_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    save("llama", tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    path = str(weights.parent)
    save_file({k: v for k, v in state.items() if k != "model.layers.1.mlp.up_proj.weight"}, weights)
    with pytest.raises(ModelError, match=rf"^checkpoint: no tensor 'model\.layers\.1\.mlp\.up_proj\.weight' \(layer "
                                         rf"'model\.layers\.1'\) in {path}$"):
        prepare_model(tmp_path)
    save_file({**state, "model.norm.weight": torch.ones(16)}, weights)
    with pytest.raises(ModelError, match=rf"^checkpoint: 'model\.norm\.weight' has shape \[16\] in {path}, the model "
                                         r"\[32\]$"):
        prepare_model(tmp_path)
    save_file({**state, "model.extra.weight": torch.ones(1)}, weights)
    with pytest.raises(ModelError, match=rf"^checkpoint: 'model\.extra\.weight' in {path} is no parameter or persistent "
                                         r"buffer of the model$"):
        prepare_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match=rf"^checkpoint: {weights} is not a safetensors file \("):
        prepare_model(tmp_path)


def test_mixtral_experts_are_read_through_transformers_conversion(tmp_path):
    # transformers 5 saves Mixtral's experts one by one (w1, w2, w3) and fuses them on load.
    from layerfit.runtime.checkpoint import Checkpoint

    save("mixtral", tmp_path)
    assert "model.layers.0.block_sparse_moe.experts.3.w2.weight" in Checkpoint(tmp_path).keys()
    prepared = prepare_model(tmp_path)
    root, loaded = prepared.build_stage([2], 0, torch.device("cpu"))  # model.layers.1 alone
    assert root.get_parameter("model.layers.1.mlp.experts.gate_up_proj").shape == (4, 128, 32)
    assert all(key.startswith("model.layers.1.") for key in loaded["keys"])
    assert len(loaded["keys"]) == 4 * 3 + 1 + 4 + 2  # experts' w1-w3, the router, q/k/v/o, two norms


@pytest.mark.parametrize("family", FAMILIES)
def test_random_initialisation_sets_every_parameter(tmp_path, family):
    from layerfit.runtime import build_model

    save(family, tmp_path)
    one, two = build_model(tmp_path, init="random", seed=3), build_model(tmp_path, init="random", seed=3)
    for (name, a), b in zip(one.named_parameters(), two.parameters()):
        assert torch.equal(a, b) and torch.isfinite(a).all(), name  # seeded; each one set (NaN before)
    ids = token_ids(1, 5)
    with torch.no_grad():
        assert torch.isfinite(one(ids).logits).all()
