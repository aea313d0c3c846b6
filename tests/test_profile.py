"""profile_module on a small real transformer: exact parameters, activations within 5 % of a
measured forward, a measured workspace, tied weights found, clear errors."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layerfit.runtime import ModelError, profile_module  # noqa: E402
from layerfit.runtime.profile import _Allocations  # noqa: E402
from layerfit import solve, validate_plan  # noqa: E402


class Block(nn.Module):
    """Pre-norm attention (softmax over explicit scores) and a GELU MLP."""

    def __init__(self, hidden=32, heads=4, ffn=128):
        super().__init__()
        self.heads = heads
        self.ln_1, self.qkv, self.proj = nn.LayerNorm(hidden), nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.ln_2, self.fc, self.out = nn.LayerNorm(hidden), nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

    def forward(self, x):
        b, s, h = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        scores = torch.softmax(q @ k.transpose(-1, -2) / (h // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((scores @ v).transpose(1, 2).reshape(b, s, h))
        return x + self.out(nn.functional.gelu(self.fc(self.ln_2(x))))


class TinyLM(nn.Module):
    def __init__(self, vocab=100, hidden=32, blocks=3, tie=False):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.Sequential(*(Block(hidden) for _ in range(blocks)))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.norm(self.blocks(self.embed(ids))))


LAYERS = ["embed", "blocks.0", "blocks.1", "blocks.2", "norm", "head"]


def measured_saved_bytes(module, x):
    """Storages a real forward (with grad) allocates and leaves alive, less its output: what
    autograd keeps for the backward pass, counted by allocation, not by autograd's hooks."""
    known = {p.untyped_storage().data_ptr() for p in module.parameters()} | {x.untyped_storage().data_ptr()}
    tracker = _Allocations(known)
    with tracker:
        own = x * 1.0  # the block's input, allocated here: kept only if the block saves it
        out = module(own)
    del own
    return tracker.live - out.numel() * out.element_size()


def test_parameters_activations_and_workspace():
    torch.manual_seed(0)
    model = TinyLM()
    ids = torch.randint(0, 100, (4, 16))
    inst = profile_module(model, ids, layers=LAYERS)
    modules = dict(model.named_modules())
    assert [layer.name for layer in inst.layers] == LAYERS
    for layer in inst.layers:
        assert layer.params == sum(p.numel() for p in modules[layer.name].parameters())
        assert layer.weight_bytes == 4 * layer.params
    assert inst.total_params == sum(p.numel() for p in model.parameters())
    assert inst.layers[1].activation_bytes == 4 * 16 * 32 * 4  # each block's output, fp32
    assert inst.layers[-1].activation_bytes == 4 * 16 * 100 * 4  # the logits
    # The attention scores (4·4·16·16 floats) and the MLP's 128-wide hidden are transient.
    assert all(inst.layers[i].buffer_bytes >= 4 * 4 * 16 * 16 * 4 for i in (1, 2, 3))
    assert "workspace: CPU storage allocations" in inst.description
    plan = solve(inst)
    validate_plan(inst, plan)


def test_training_activations_within_5_percent_of_a_measured_forward():
    torch.manual_seed(0)
    model = TinyLM()
    ids = torch.randint(0, 100, (4, 16))
    inst = profile_module(model, ids, layers=LAYERS, training=True)
    hidden = model.embed(ids).detach().requires_grad_()
    for i in (1, 2, 3):
        predicted = inst.layers[i].activation_bytes
        measured = measured_saved_bytes(model.blocks[i - 1], hidden)
        assert abs(predicted - measured) <= 0.05 * measured, (predicted, measured)
        assert inst.layers[i].output_bytes == 4 * 16 * 32 * 4
    assert inst.training is not None and inst.footprint(1).training_state > 0


@pytest.mark.parametrize("training", [False, True])
def test_timed_layers_plan_by_measured_time(training):
    torch.manual_seed(0)
    model = TinyLM()
    ids = torch.randint(0, 100, (4, 16))
    untimed = profile_module(model, ids, layers=LAYERS, training=training)
    inst = profile_module(model, ids, layers=LAYERS, training=training, time_layers=True)
    assert all(layer.time is not None and layer.time > 0 for layer in inst.layers)
    assert all(layer.time is None for layer in untimed.layers)
    # Timing changes nothing else it measures, and leaves the caller's gradients as they were.
    assert [(l.params, l.activation_bytes) for l in inst.layers] == [(l.params, l.activation_bytes) for l in untimed.layers]
    assert all(p.grad is None for p in model.parameters())
    model.head.weight.grad = torch.ones_like(model.head.weight)
    profile_module(model, ids, layers=LAYERS, training=training, time_layers=True)
    assert torch.equal(model.head.weight.grad, torch.ones_like(model.head.weight))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "head.weight")
    kind = "forward and backward" if training else "forward"
    assert f"; time: median of 21 runs of each layer on cpu with {torch.get_num_threads()} threads, {kind}" in inst.description
    plan = solve(inst, objective="min_stage_time", num_partitions=3)
    validate_plan(inst, plan)
    # The planner keeps times in whole picoseconds: each layer's rounded, so a stage's sum is
    # within half a picosecond per layer of the seconds added up.
    assert plan.metrics["max_time"] == pytest.approx(max(
        sum(inst.layers[i].time for i in part) for part in plan.partitions), abs=0.5e-12 * len(LAYERS) + 1e-15)


def test_a_slice_of_a_batch_is_profiled_as_its_own_rows():
    torch.manual_seed(0)
    model = TinyLM()
    batch = torch.randn(16, 16, 32)
    blocks = nn.Sequential(*model.blocks)  # a chain whose first layer saves its (float) input
    sliced = profile_module(blocks, batch[:4], training=True)
    alone = profile_module(blocks, batch[:4].clone(), training=True)
    assert [l.activation_bytes for l in sliced.layers] == [l.activation_bytes for l in alone.layers]


def test_a_meta_module_cannot_be_timed():
    with torch.device("meta"):
        model = TinyLM()
    with pytest.raises(ModelError, match=r"^time_layers: the module is on the meta device; it has no weights to run and time$"):
        profile_module(model, torch.randint(0, 100, (1, 8)), layers=LAYERS, time_layers=True)


def test_a_meta_module_is_described_without_memory():
    with torch.device("meta"):
        model = TinyLM(vocab=32000, hidden=1024, blocks=3)
    inst = profile_module(model, torch.randint(0, 100, (1, 512)), layers=LAYERS)
    assert inst.layers[1].activation_bytes == 512 * 1024 * 4 and inst.layers[1].buffer_bytes == 0
    assert "workspace: not measured (module on meta)" in inst.description


def test_shared_weights_make_a_tied_group():
    model = TinyLM(tie=True)
    inst = profile_module(model, torch.randint(0, 100, (2, 8)), layers=LAYERS)
    (group,) = inst.constraints.tied
    assert group.layers == ("embed", "head") and group.params == 100 * 32
    assert inst.total_params == sum(p.numel() for p in model.parameters())  # counted once


def test_bad_layers():
    model = TinyLM()
    ids = torch.randint(0, 100, (2, 8))
    with pytest.raises(ModelError, match=r"^layers: the module has no submodule 'blocks\.7'$"):
        profile_module(model, ids, layers=["embed", "blocks.7"])
    with pytest.raises(ModelError, match=r"^layers: parameter 'norm\.weight' belongs to none of the layers$"):
        profile_module(model, ids, layers=["embed", "blocks", "head"])
    with pytest.raises(ModelError, match=r"^device: the module's parameters are on cpu, not 'cuda'; move the module "
                                         r"\(module\.to\('cuda'\)\) to measure it there$"):
        profile_module(model, ids, layers=LAYERS, device="cuda")
