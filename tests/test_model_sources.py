"""The runtime's model contract: factories run the weights they build or load, checkpoints
are read per rank and checked before any rank starts, random weights only when asked (and
never uninitialised memory), layers named by module paths."""

import functools
import json
from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layerfit import runtime  # noqa: E402
from layerfit.runtime import ModelError, build_model, prepare_model  # noqa: E402
from runtime_models import Partial, custom_model, trained_model  # noqa: E402
from layerfit import Instance, Layer, solve  # noqa: E402

NAMES = ["embed", "blocks.b0", "blocks.b1", "norm", "head"]


def instance_of(model, names=NAMES):
    """An instance whose layers are the model's modules at ``names`` (dotted paths)."""
    modules = dict(model.named_modules())
    return Instance(name="custom", capacity=10**6, dtype="fp32",
                    layers=[Layer(n, params=sum(p.numel() for p in modules[n].parameters()), activation_bytes=2 * 16 * 4)
                            for n in names])


@pytest.fixture
def trained(tmp_path):
    """custom_model with weights far from any initialisation (gains too), saved as a state_dict."""
    torch.manual_seed(11)
    model = custom_model()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 2)
    path = tmp_path / "trained.pt"
    torch.save(model.state_dict(), path)
    return model, path


def test_a_factory_that_loads_trained_weights_runs_them(trained):
    # The factory holds a layer with no reset_parameters() (Gain) and a buffer computed in its
    # constructor (Wave): each rank calls the factory for real and runs what it built.
    model, path = trained
    inst = instance_of(model)
    plan = solve(inst, objective="min_bottleneck", num_partitions=2)
    x = torch.randn(8, 16)
    result = runtime.execute(plan, functools.partial(trained_model, str(path)), x, instance=inst, micro_batches=2)
    assert torch.allclose(result.outputs, model(x), atol=1e-6)
    assert [r["layers"] for r in result.report["ranks"]] == [[NAMES[i] for i in part] for part in plan.partitions]


def test_a_factory_is_called_seeded_on_every_rank():
    # Its own initialisation (random, and a Gain nobody resets) under torch.manual_seed(seed):
    # every rank builds the same model, the one build_model gives.
    inst = instance_of(custom_model())
    plan = solve(inst, objective="min_bottleneck", num_partitions=3)
    x = torch.randn(6, 16)
    result = runtime.execute(plan, "runtime_models:custom_model", x, instance=inst, micro_batches=3, seed=4)
    torch.manual_seed(4)
    assert torch.allclose(result.outputs, custom_model()(x), atol=1e-6)
    assert torch.allclose(result.outputs, build_model("runtime_models:custom_model", seed=4)(x), atol=1e-6)


def test_a_checkpoint_is_read_per_rank(trained, tmp_path):
    from safetensors.torch import save_file

    model, _ = trained
    path = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), path)
    inst = instance_of(model)
    plan = solve(inst, objective="min_bottleneck", num_partitions=2)
    x = torch.randn(8, 16)
    result = runtime.execute(plan, "runtime_models:custom_model", x, checkpoint=path, instance=inst, micro_batches=2,
                             train=True, target=torch.randn(8, 16))
    assert torch.allclose(result.outputs, model(x), atol=1e-6)  # Wave's buffer computed, not loaded nor empty
    keys = model.state_dict().keys()
    for r, part in zip(result.report["ranks"], plan.partitions):
        mine = sorted(k for k in keys if any(k.startswith(NAMES[i] + ".") for i in part))
        assert sorted(r["loaded_keys"]) == mine
        assert r["loaded_bytes"] == r["param_bytes"]


def shard(state, folder):
    """The state_dict as two safetensors shards and their index, as save_pretrained lays them out."""
    from safetensors.torch import save_file

    folder.mkdir()
    keys = sorted(state)
    halves = {"a.safetensors": keys[::2], "b.safetensors": keys[1::2]}
    for file, names in halves.items():
        save_file({k: state[k].contiguous() for k in names}, folder / file)
    index = {"metadata": {}, "weight_map": {k: file for file, names in halves.items() for k in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize("form", ["safetensors", "shards", "state_dict"])
def test_every_checkpoint_form_gives_the_trained_model(trained, tmp_path, form):
    from safetensors.torch import save_file

    model, state_dict_path = trained
    state = model.state_dict()
    if form == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, path)
    elif form == "shards":
        path = shard(state, tmp_path / "shards")
    else:
        path = state_dict_path
    built = build_model("runtime_models:custom_model", checkpoint=path, instance=instance_of(model))
    x = torch.randn(4, 16)
    assert torch.allclose(built(x), model(x), atol=1e-6)
    assert not any(p.is_meta for p in built.parameters())


def test_a_bad_checkpoint_is_refused_before_any_rank_starts(trained, tmp_path):
    from safetensors.torch import save_file

    model, _ = trained
    state = model.state_dict()
    plan = solve(instance_of(model), objective="min_bottleneck", num_partitions=2)
    x = torch.randn(4, 16)

    def refused(tensors, message):
        path = tmp_path / "bad.safetensors"
        save_file(tensors, path)
        with pytest.raises(ModelError, match=message.replace("PATH", str(path)).replace("[", r"\[").replace("]", r"\]")):
            runtime.execute(plan, "runtime_models:custom_model", x, checkpoint=path, instance=instance_of(model))

    refused({k: v for k, v in state.items() if k != "blocks.b1.0.bias"},
            "^checkpoint: no tensor 'blocks.b1.0.bias' \\(layer 'blocks.b1'\\) in PATH$")
    refused({**state, "head.weight": torch.zeros(16, 8)},
            "^checkpoint: 'head.weight' has shape [16, 8] in PATH, the model [16, 16]$")
    refused({**state, "head.scale": torch.zeros(1), "tail.weight": torch.zeros(1)},
            "^checkpoint: 'head.scale' in PATH is no parameter or persistent buffer of the model \\(and 1 more\\)$")
    pickled = tmp_path / "pickled.pt"
    torch.save({"weights": state, "optimizer": object()}, pickled)
    with pytest.raises(ModelError, match=f"^checkpoint: {pickled} holds objects other than tensors, which layerfit does "
                                         r"not unpickle; save the state_dict alone \(torch\.save\(model\.state_dict\(\), "
                                         r"\.\.\.\)\) or as safetensors$"):
        runtime.execute(plan, "runtime_models:custom_model", x, checkpoint=pickled, instance=instance_of(model))
    with pytest.raises(ModelError, match=f"^checkpoint: no such file or folder '{tmp_path / 'none.pt'}'$"):
        runtime.execute(plan, "runtime_models:custom_model", x, checkpoint=tmp_path / "none.pt", instance=instance_of(model))


def test_random_weights_only_when_asked_and_every_one_set():
    inst = instance_of(custom_model())
    plan = solve(inst, objective="min_bottleneck", num_partitions=2)
    with pytest.raises(ModelError, match=r"^init: module 'blocks\.b0\.0' \(Gain\) has parameters and no "
                                         r"reset_parameters\(\), so random initialisation cannot set them; load its "
                                         r"weights \(a checkpoint, or a factory that builds them\)$"):
        runtime.execute(plan, "runtime_models:custom_model", torch.randn(4, 16), instance=inst, init="random")
    with pytest.raises(ModelError, match=r"^init: unknown initialisation 'zeros' \(allowed: random\)$"):
        runtime.execute(plan, "runtime_models:custom_model", torch.randn(4, 16), init="zeros")
    with pytest.raises(ModelError, match=r"^init: an nn\.Module brings its own weights; give a factory to load or "
                                         r"initialise them$"):
        runtime.execute(plan, custom_model(), torch.randn(4, 16), init="random")
    # A reset_parameters() that leaves a parameter unset is caught, by name.
    partial = functools.partial(nn.Sequential, OrderedDict(a=nn.Linear(16, 16), b=Partial()))
    with pytest.raises(ModelError, match=r"^init: 'b\.bias' was left unset by the initialisation of its module "
                                         r"\(Partial\); load its weights from a checkpoint instead$"):
        build_model(partial, init="random")
    # Seeded: layer i is drawn with seed + i, whichever rank holds it.
    chain = functools.partial(nn.Sequential, OrderedDict((f"l{i}", nn.Linear(16, 16)) for i in range(4)))
    one, two = build_model(chain, init="random", seed=3), build_model(chain, init="random", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(one.parameters(), two.parameters()))
    torch.manual_seed(3 + 2)
    assert torch.equal(one.l2.weight, nn.Linear(16, 16).weight)


def test_layers_are_module_paths_that_cover_the_model():
    model = custom_model()
    prepared = prepare_model(model, 5, instance_of(model))
    assert prepared.names == NAMES
    with pytest.raises(ModelError, match=r"^layers: parameter 'blocks\.b1\.0\.weight' belongs to none of the layers$"):
        prepare_model(model, 4, instance_of(model, ["embed", "blocks.b0", "norm", "head"]))
    with pytest.raises(ModelError, match=r"^layers: 'blocks\.b0' lies inside 'blocks'; a module belongs to one layer$"):
        prepare_model(model, 5, instance_of(model, ["embed", "blocks", "blocks.b0", "norm", "head"]))
    with pytest.raises(ModelError, match=r"^layer 'blocks\.b2': the model has no module 'blocks\.b2'$"):
        prepare_model(model, 5, Instance(name="x", capacity=10, layers=[Layer(n, weight_bytes=1) for n in
                                                                         ["embed", "blocks.b0", "blocks.b2", "norm", "head"]]))
    # Without an instance, the layers are the model's children.
    assert prepare_model(model, 4).names == ["embed", "blocks", "norm", "head"]
    with pytest.raises(ModelError, match=r"^model: the factory cannot be sent to the ranks \((AttributeError|PicklingError): "
                                         r".*\); define it at module level, or give 'package\.module:function'$"):
        prepare_model(lambda: custom_model(), 4)
