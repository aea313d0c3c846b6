"""Exports to DeepSpeed, Megatron, vLLM, torch.distributed.pipelining and accelerate: every
export read back gives the plan's layers per stage; what a target cannot say is refused."""

import dataclasses
import json

import pytest

from layerfit import Instance, Layer, PlanError, export_plan, from_hf_config, solve
from layerfit.interop.export import EXPORT_TARGETS, module_names, stage_layer_counts

from helpers import ROOT, with_partitions

CONFIGS = ROOT / "instances" / "configs"
FAMILIES = ["llama-3-8b", "mistral-7b-v0.1", "mixtral-8x7b-v0.1", "qwen2.5-72b", "gpt2", "bert-large-uncased"]


def planned(name, k=4, split="block", *, pin_tail=False, **options):
    inst = from_hf_config(CONFIGS / f"{name}.json", batch_size=1, seq_len=512, split=split, **options)
    if pin_tail:  # Megatron and vLLM keep the final norm and the head on the last stage, vLLM a block on each
        blocks = [i for i, layer in enumerate(inst.layers) if ".layers." in layer.name or ".h." in layer.name
                  or ".layer." in layer.name]
        pins = ((inst.layers[blocks[0]].name, 0), *((layer.name, -1) for layer in inst.layers[blocks[-1]:]))
        inst = dataclasses.replace(inst, constraints=dataclasses.replace(inst.constraints, pinned=pins))
    plan = solve(inst, objective="min_bottleneck", num_partitions=k)
    assert plan.status.has_plan
    return inst, plan


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("target", EXPORT_TARGETS)
def test_round_trip_config_plan_export_counts(name, target):
    inst, plan = planned(name, pin_tail=target in ("megatron", "vllm"))
    exported = export_plan(inst, plan, target)
    json.dumps(exported)  # JSON-ready
    assert exported["num_stages"] == 4
    assert stage_layer_counts(inst, exported) == [len(p) for p in plan.partitions]


def test_what_each_target_looks_like():
    inst, plan = planned("llama-3-8b", pin_tail=True)
    blocks = [sum(1 for i in p if inst.layers[i].name.startswith("model.layers.")) for p in plan.partitions]
    assert export_plan(inst, plan, "vllm")["value"] == ",".join(map(str, blocks))
    layout = export_plan(inst, plan, "megatron")["value"]
    assert layout.startswith("E") and layout.endswith("L") and layout.count("|") == 3 and layout.count("t") == 32
    spec = export_plan(inst, plan, "pippy")["value"]
    assert list(spec) == [inst.layers[p[0]].name for p in plan.partitions[1:]] and set(spec.values()) == {"BEGINNING"}
    device_map = export_plan(inst, plan, "accelerate")["value"]
    assert device_map["model.embed_tokens"] == 0 and device_map["lm_head"] == 3
    assert export_plan(inst, plan, "deepspeed")["value"]["parts"] == [0, *(p[-1] + 1 for p in plan.partitions)]
    gpt2, gplan = planned("gpt2")
    device_map = export_plan(gpt2, gplan, "accelerate")["value"]
    assert device_map["transformer.wte"] == device_map["transformer.wpe"] == 0  # one layer, two modules
    notes = export_plan(gpt2, gplan, "deepspeed")["notes"]
    assert any("tied weights ['transformer.wte+wpe', 'lm_head']" in n for n in notes)


def test_megatron_and_vllm_refuse_a_cut_inside_a_block():
    inst = from_hf_config(CONFIGS / "llama-3-8b.json", batch_size=1, seq_len=512, split="sublayer")
    names = [layer.name for layer in inst.layers]
    cut = names.index("model.layers.3.mlp")
    plan = solve(inst, objective="min_bottleneck", num_partitions=2)
    inside = with_partitions(inst, plan, [list(range(cut)), list(range(cut, len(names)))])
    for target in ("megatron", "vllm"):
        with pytest.raises(PlanError, match=rf"^{target}: the plan cuts inside block 'model\.layers\.3' \(between "
                                             rf"'model\.layers\.3\.self_attn' and 'model\.layers\.3\.mlp'\); "
                                             rf"{target} places whole decoder layers$"):
            export_plan(inst, inside, target)
    for target in ("deepspeed", "pippy", "accelerate"):
        exported = export_plan(inst, inside, target)
        assert stage_layer_counts(inst, exported) == [cut, len(names) - cut]


def test_the_head_apart_from_the_norm_and_an_empty_vllm_stage():
    inst = from_hf_config(CONFIGS / "llama-3-8b.json", batch_size=1, seq_len=512)
    plan = solve(inst, objective="min_bottleneck", num_partitions=2)
    n = inst.num_layers
    head_alone = with_partitions(inst, plan, [list(range(n - 1)), [n - 1]])
    with pytest.raises(PlanError, match=r"^vllm: layer 'model\.norm' is not on the last stage; vllm puts the final norm "
                                         r"and head there \(with the last decoder layers\): plan with constraints\.pinned "
                                         r"\{'model\.norm': -1, 'lm_head': -1\}$"):
        export_plan(inst, head_alone, "vllm")
    embed_alone = with_partitions(inst, plan, [[0], list(range(1, n))])
    with pytest.raises(PlanError, match=r"^vllm: stage 0 holds no decoder layer; every vLLM pipeline rank runs decoder "
                                         r"layers: pin a block to it \(constraints\.pinned\) or plan fewer stages$"):
        export_plan(inst, embed_alone, "vllm")
    assert export_plan(inst, embed_alone, "megatron")["value"] == "E|" + "t" * 32 + "L"


def test_layers_without_block_names_and_unknown_targets():
    inst = Instance(name="x", capacity=100, layers=[Layer(f"l{i}", weight_bytes=30) for i in range(4)])
    plan = solve(inst)
    with pytest.raises(PlanError, match=r"^megatron: no decoder blocks among the layers \(names like model\.layers\.N\)"):
        export_plan(inst, plan, "megatron")
    assert export_plan(inst, plan, "pippy")["value"] == {"l2": "BEGINNING"}  # [l0, l1], [l2, l3]
    with pytest.raises(PlanError, match=r"^target: unknown export target 'onnx' \(allowed: deepspeed, megatron, vllm, pippy, accelerate\)$"):
        export_plan(inst, plan, "onnx")
    tight = Instance(name="y", capacity=10, layers=[Layer("a", weight_bytes=30)])
    infeasible = solve(tight)
    with pytest.raises(PlanError, match=r"^plan: status infeasible has no partitions to export$"):
        export_plan(tight, infeasible, "deepspeed")
    with pytest.raises(PlanError, match=r"^plan is for 1 layers, the instance has 4$"):
        export_plan(inst, infeasible, "deepspeed")  # validated against the instance before anything else
    assert module_names("encoder.layer.3.intermediate+output") == ["encoder.layer.3.intermediate", "encoder.layer.3.output"]


def test_pippy_split_spec_splits_a_real_module():
    """The exported split_spec drives torch.distributed.pipelining's own splitter."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.distributed.pipelining import SplitPoint, pipeline

    class Block(nn.Module):
        def __init__(self, h):
            super().__init__()
            self.self_attn, self.mlp = nn.Linear(h, h), nn.Linear(h, h)

        def forward(self, x):
            return x + self.mlp(x + self.self_attn(x))

    class Inner(nn.Module):
        def __init__(self, vocab, h, n):
            super().__init__()
            self.embed_tokens = nn.Embedding(vocab, h)
            self.layers = nn.ModuleList(Block(h) for _ in range(n))
            self.norm = nn.LayerNorm(h)

        def forward(self, ids):
            x = self.embed_tokens(ids)
            for layer in self.layers:
                x = layer(x)
            return self.norm(x)

    class Model(nn.Module):
        def __init__(self, vocab=50, h=16, n=6):
            super().__init__()
            self.model, self.lm_head = Inner(vocab, h, n), nn.Linear(h, vocab, bias=False)

        def forward(self, ids):
            return self.lm_head(self.model(ids))

    model = Model()
    leaves = ["model.embed_tokens", *(f"model.layers.{i}.{s}" for i in range(6) for s in ("self_attn", "mlp")),
              "model.norm", "lm_head"]
    modules = dict(model.named_modules())
    layers = [Layer(name, params=sum(p.numel() for p in modules[name].parameters())) for name in leaves]
    inst = Instance(name="tiny", capacity=10**6, dtype="fp32", layers=layers)
    plan = solve(inst, objective="min_bottleneck", num_partitions=3)
    spec = export_plan(inst, plan, "pippy")["value"]
    pipe = pipeline(model, mb_args=(torch.randint(0, 50, (2, 8)),),
                    split_spec={name: SplitPoint[point] for name, point in spec.items()})
    assert pipe.num_stages == 3
    for j, part in enumerate(plan.partitions):
        held = {name.rsplit(".", 1)[0] for name, _ in pipe.get_stage_module(j).named_parameters()}
        assert held == {leaves[i] for i in part}


def test_accelerate_follows_a_free_pools_chosen_devices():
    from layerfit import Device

    layers = [Layer(f"model.layers.{i}", weight_bytes=30) for i in range(4)]
    pool = (Device("small", 40), Device("big0", 100), Device("big1", 100))
    inst = Instance(name="f", capacity=200, layers=layers, devices=pool, device_order="free")
    plan = solve(inst)
    assert plan.num_partitions == 2 and sorted(plan.devices) == ["big0", "big1"]
    device_map = export_plan(inst, plan, "accelerate")["value"]
    assert set(device_map.values()) == {1, 2}  # places in the pool, never the small device's 0
    assert stage_layer_counts(inst, export_plan(inst, plan, "accelerate")) == [len(p) for p in plan.partitions]
