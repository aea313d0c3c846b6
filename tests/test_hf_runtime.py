"""Hugging Face models, as save_pretrained writes them, run on CPU ranks (gloo): logits and
a training step's gradients equal transformers' own model in one process, each rank reads
exactly its own layers' tensors, and the bytes are the importer's."""

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from layerfit import runtime  # noqa: E402
from layerfit.runtime.stage import layer_paths  # noqa: E402
from layerfit import from_hf_config, solve  # noqa: E402

from hf_models import VOCAB, save, token_ids  # noqa: E402
from helpers import ROOT  # noqa: E402

SEQ = 9  # longer than the sliding windows (4), shorter than any model's positions


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """family -> (directory, the transformers model saved there), made once per module."""
    models = {}

    def get(family, **kwargs):
        key = (family, tuple(sorted(kwargs.items())))
        if key not in models:
            folder = tmp_path_factory.mktemp(family)
            models[key] = folder, save(family, folder, **kwargs)
        return models[key]

    return get


def plan_of(directory, ranks):
    inst = from_hf_config(directory / "config.json", batch_size=2, seq_len=SEQ)
    plan = solve(inst, objective="min_bottleneck", num_partitions=ranks)
    return inst, plan


def checkpoint_keys(directory):
    from layerfit.runtime.checkpoint import Checkpoint

    return Checkpoint(directory).keys()


def expected_reads(plan, inst, keys, tied_to=None):
    """Per rank, the checkpoint's tensors of its layers (a tied head: the tensor it is tied to)."""
    out = []
    for part in plan.partitions:
        paths = [p for i in part for p in layer_paths(inst.layers[i].name)]
        mine = {k for k in keys if any(k.startswith(p + ".") for p in paths)}
        if tied_to and "lm_head" in paths and not any(tied_to.startswith(p + ".") for p in paths):
            mine.add(tied_to)
        out.append(mine)
    return out


@pytest.mark.parametrize("family, ranks, schedule", [("llama", 2, "gpipe"), ("qwen2", 3, "1f1b"), ("mixtral", 2, "1f1b"),
                                                     ("gpt2", 3, "gpipe")])
def test_logits_equal_the_transformers_model(saved, family, ranks, schedule):
    directory, model = saved(family)
    inst, plan = plan_of(directory, ranks)
    ids = token_ids(4 if ranks == 2 else 6, SEQ, seed=1)
    result = runtime.execute(plan, directory, ids, instance=inst, micro_batches=ranks, schedule=schedule)
    model.eval()
    with torch.no_grad():
        want = model(ids).logits
    assert result.outputs.shape == (ids.shape[0], SEQ, VOCAB)
    assert torch.allclose(result.outputs, want, atol=1e-5), (result.outputs - want).abs().max()
    tied = "transformer.wte.weight" if family == "gpt2" else None
    reads = expected_reads(plan, inst, checkpoint_keys(directory), tied)
    ranks_report = result.report["ranks"]
    for r, expected in zip(ranks_report, reads):
        # Each rank read its own layers' tensors, each once, and nothing else; it holds what the
        # importer counts for them (weights) and each layer's output per micro-batch.
        assert sorted(r["loaded_keys"]) == sorted(expected), r["rank"]
        assert r["loaded_bytes"] == r["param_bytes"] == r["predicted_weight_bytes"]
        assert r["activations_measured_over_predicted"] == pytest.approx(1.0, abs=0.05)
        assert r["measured_over_predicted"] == pytest.approx(1.0, abs=0.05)
    assert result.report["prediction"] == f"from_hf_config at micro-batch 2, sequence {SEQ}"


@pytest.mark.parametrize("family, ranks, schedule", [("llama", 3, "1f1b"), ("qwen2", 2, "gpipe"), ("mixtral", 3, "gpipe"),
                                                     ("gpt2", 2, "1f1b")])
def test_a_training_step_equals_the_transformers_model(saved, family, ranks, schedule):
    directory, model = saved(family)
    _, plan = plan_of(directory, ranks)
    ids = token_ids(2 * ranks, SEQ, seed=2)
    result = runtime.execute(plan, directory, ids, target=ids, micro_batches=ranks, schedule=schedule, train=True)
    model.train()
    model.zero_grad()
    out = model(ids, labels=ids)
    out.loss.backward()
    assert torch.allclose(result.outputs, out.logits, atol=1e-5)
    # GPT-2's head is tied to its embedding on another rank: its gradient is both ranks' sum.
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    assert sorted(result.grads) == sorted(names)
    for name, param in model.named_parameters(remove_duplicate=False):
        assert torch.allclose(result.grads[name], param.grad, atol=1e-5), name
    # The pipeline's loss is the mean of its micro-batches' (equal token counts): the model's.
    assert result.report["ranks"][-1]["loss"] == pytest.approx(out.loss.item(), rel=1e-5)


def test_a_sharded_checkpoint_loads_the_same(saved, tmp_path):
    directory, model = saved("llama", max_shard_size="40KB")
    assert (directory / "model.safetensors.index.json").is_file() and len(list(directory.glob("*.safetensors"))) > 2
    inst, plan = plan_of(directory, 2)
    ids = token_ids(4, SEQ, seed=3)
    result = runtime.execute(plan, directory, ids, micro_batches=2)
    with torch.no_grad():
        assert torch.allclose(result.outputs, model.eval()(ids).logits, atol=1e-5)
    for r, expected in zip(result.report["ranks"], expected_reads(plan, inst, checkpoint_keys(directory))):
        assert sorted(r["loaded_keys"]) == sorted(expected)


def test_random_initialisation_is_seeded_and_equals_build_model(saved):
    directory, _ = saved("gpt2")  # a tied head on another rank starts equal to the embedding
    _, plan = plan_of(directory, 2)
    ids = token_ids(4, SEQ, seed=4)
    result = runtime.execute(plan, directory, ids, init="random", seed=7, micro_batches=2)
    reference = runtime.build_model(directory, init="random", seed=7).eval()
    assert reference.lm_head.weight is reference.transformer.wte.weight
    with torch.no_grad():
        assert torch.allclose(result.outputs, reference(ids).logits, atol=1e-5)
    assert all(r["loaded_keys"] is None for r in result.report["ranks"])


def test_layerfit_run_trains_a_directory_on_its_inputs(saved, tmp_path):
    from safetensors.torch import save_file

    directory, model = saved("qwen2")
    inst = from_hf_config(directory / "config.json", batch_size=2, seq_len=SEQ)
    (tmp_path / "inst.json").write_text(json.dumps(inst.to_dict()))
    plan = solve(inst, objective="min_bottleneck", num_partitions=2)
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_dict()))
    ids = token_ids(4, SEQ, seed=5)
    save_file({"inputs": ids, "target": ids.clone()}, tmp_path / "batch.safetensors")
    out = subprocess.run([sys.executable, "-m", "layerfit.cli", "run", str(tmp_path / "plan.json"), "--model", str(directory),
                          "--instance", str(tmp_path / "inst.json"), "--inputs", str(tmp_path / "batch.safetensors"),
                          "--micro-batches", "2", "--train", "--report", str(tmp_path / "report.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    model.train()
    assert report["ranks"][-1]["loss"] == pytest.approx(model(ids, labels=ids).loss.item(), rel=1e-5)
    assert [r["loaded_bytes"] for r in report["ranks"]] == [r["param_bytes"] for r in report["ranks"]]
    assert "predicted: from_hf_config at micro-batch 2, sequence 9; activations: saved for backward" in out.stdout
    assert f"; loss {report['loss']:.4f}" in out.stdout.splitlines()[0]
    # An inference instance, a training run: the report says why its S(P) is short of what is held.
    assert f"note: the instance '{directory.name}' plans no training state; this run trains." in out.stdout


def test_layerfit_run_refuses_what_cannot_run_before_launching(saved, tmp_path, capsys):
    from safetensors.torch import save_file

    from layerfit.runtime.synthetic import synthetic_instance, synthetic_model
    from layerfit.cli import main

    directory, _ = saved("llama")
    _, plan = plan_of(directory, 2)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan.to_dict()))
    gpt2, _ = saved("gpt2")  # learned positions: 64 of them
    gpt2_plan = tmp_path / "gpt2-plan.json"
    gpt2_plan.write_text(json.dumps(plan_of(gpt2, 2)[1].to_dict()))
    sublayer = from_hf_config(directory / "config.json", batch_size=2, seq_len=SEQ, split="sublayer")
    sublayer_plan = tmp_path / "sublayer.json"
    sublayer_plan.write_text(json.dumps(solve(sublayer, objective="min_bottleneck", num_partitions=2).to_dict()))
    gpt2_instance = tmp_path / "gpt2.json"
    gpt2_instance.write_text(json.dumps(plan_of(gpt2, 2)[0].to_dict()))
    bare = tmp_path / "bare"
    bare.mkdir()
    floats = tmp_path / "floats.pt"
    torch.save(torch.randn(4, SEQ), floats)
    wide = tmp_path / "wide.safetensors"
    save_file({"inputs": torch.full((4, SEQ), VOCAB)}, wide)
    synthetic = solve(synthetic_instance(synthetic_model(), 2), objective="min_bottleneck", num_partitions=2)
    synthetic_plan = tmp_path / "synthetic.json"
    synthetic_plan.write_text(json.dumps(synthetic.to_dict()))
    cases = [
        ([str(plan_file), "--model", str(directory), "--seq-len", "0"], "--seq-len: expected a positive number of tokens, got 0"),
        ([str(gpt2_plan), "--model", str(gpt2), "--seq-len", "65"],
         "inputs: sequences of 65 tokens, beyond the model's 64 learned positions (config.n_positions)"),
        ([str(plan_file), "--model", str(directory), "--inputs", str(floats)],
         "inputs: a Hugging Face causal LM takes token ids [batch, sequence] as a LongTensor, got float32 of shape [4, 9]"),
        ([str(plan_file), "--model", str(directory), "--inputs", str(wide)],
         f"inputs: token id {VOCAB} is outside the vocabulary (0 to {VOCAB - 1})"),
        ([str(plan_file), "--model", str(directory), "--inputs", str(tmp_path / "none.pt")],
         f"--inputs: no such file {str(tmp_path / 'none.pt')!r}"),
        ([str(plan_file), "--model", str(bare)], f"model: {bare} is a folder without a config.json (a Hugging Face model "
                                                   "directory has one)"),
        ([str(plan_file), "--model", str(directory), "--checkpoint", str(floats), "--init", "random"],
         "init: random initialisation and a checkpoint exclude each other; give one"),
        ([str(synthetic_plan), "--model", "layerfit.runtime.synthetic:synthetic_model", "--seq-len", "8"],
         "--seq-len: sets the random token ids of a Hugging Face model directory; layerfit.runtime.synthetic:synthetic_model is "
         "not one"),
        ([str(plan_file), "--model", str(directory), "--instance", str(gpt2_instance)],
         "layer 0: the model calls it 'model.embed_tokens', the instance 'transformer.wte+wpe'"),
        ([str(gpt2_plan), "--model", str(directory)],
         "plan: partition 0 starts at layer 'transformer.wte+wpe', the model's layer 0 is 'model.embed_tokens': the "
         "plan was made for another model"),
        ([str(sublayer_plan), "--model", str(directory)],
         "model has 6 layers, the plan 9; a Hugging Face model runs plans of whole blocks (from_hf_config with "
         "split='block')"),
    ]
    capsys.readouterr()  # what saving the models printed
    for args, message in cases:
        assert main(["run", *args]) == 2, args
        out, err = capsys.readouterr()
        assert out == "" and err == f"layerfit: error: {message}\n", (args, err)


def test_training_holds_the_micro_batches_in_flight_and_no_more(saved):
    # What each layer saves, from profile_module, times the micro-batches a stage holds (GPipe:
    # all of them): exactly the first stage's peak. Its shape inference runs a forward that no
    # backward follows; the outputs that ops save of themselves (softmax, rsqrt) once kept that
    # graph, and its bytes, alive for the whole run.
    from layerfit.runtime.hf import layer_names

    directory, model = saved("llama")
    inst, plan = plan_of(directory, 2)
    ids = token_ids(8, SEQ, seed=6)
    profiled = runtime.profile_module(model, ids[:2], layers=layer_names(model), training=True)
    result = runtime.execute(plan, directory, ids, target=ids, micro_batches=4, schedule="gpipe", train=True)
    first = result.report["ranks"][0]
    assert first["saved_for_backward_peak_bytes"] == 4 * sum(profiled.layers[i].activation_bytes for i in plan.partitions[0])
