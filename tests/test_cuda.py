"""The runtime and the profiler on a CUDA GPU (skipped without one): a one-rank NCCL run
equals the model on CPU, reports the allocator's peak and the L2 reservation, and
profile_module measures workspace and time on the GPU. With one GPU a plan runs as one
rank: NCCL puts one rank on each GPU."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layerfit import runtime  # noqa: E402
from layerfit.runtime.synthetic import example_inputs, synthetic_instance, synthetic_model  # noqa: E402
from layerfit import solve, validate_plan  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def one_stage():
    model = synthetic_model()
    inst = synthetic_instance(model, micro_batch=2)
    return model, inst, solve(inst, objective="min_bottleneck", num_partitions=1)


def test_one_rank_inference_on_cuda_equals_the_cpu_model():
    model, inst, plan = one_stage()
    x, _ = example_inputs(8)
    result = runtime.execute(plan, model, x, instance=inst, micro_batches=4)
    assert result.report["backend"] == "nccl"
    (rank,) = result.report["ranks"]
    assert rank["torch_device"] == "cuda:0"
    assert torch.allclose(result.outputs, model(x), atol=1e-4)
    # The allocator holds at least the weights; the plan's bytes are beside it in the report.
    assert rank["cuda_max_allocated_bytes"] >= rank["param_bytes"] > 0
    l2 = rank["l2_reservation"]
    if (l2["persisting_l2_max_bytes"] or 0) >= l2["weight_bytes"]:
        assert l2["reserved_bytes"] >= l2["weight_bytes"] and l2["window_bytes"] > 0, l2
    else:
        assert l2["reserved_bytes"] == 0 and l2["note"], l2


def test_one_rank_training_on_cuda_gives_the_cpu_gradients():
    model, inst, plan = one_stage()
    x, y = example_inputs(8)
    result = runtime.execute(plan, model, x, target=y, instance=inst, micro_batches=2, train=True)
    model.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    for name, param in model.named_parameters():
        assert torch.allclose(result.grads[name], param.grad, atol=1e-4), name


def test_profile_module_measures_workspace_and_time_on_cuda():
    torch.manual_seed(0)
    model = synthetic_model().cuda()
    x, _ = example_inputs(64)
    inst = runtime.profile_module(model, x.cuda(), device="cuda", time_layers=True)
    assert "workspace: CUDA allocator peak" in inst.description and "time: median of 21 runs of each layer on cuda" in inst.description
    assert all(layer.time > 0 for layer in inst.layers)
    # A block's GELU keeps its 256-wide hidden only inside the block: workspace, not output.
    assert all(layer.buffer_bytes > 0 for layer in inst.layers if layer.name.startswith("block"))
    plan = solve(inst, objective="min_stage_time", num_partitions=2)
    validate_plan(inst, plan)


def test_a_hugging_face_model_runs_on_cuda(tmp_path):
    pytest.importorskip("transformers")
    from hf_models import save, token_ids

    from layerfit import from_hf_config

    model = save("llama", tmp_path).eval()
    plan = solve(from_hf_config(tmp_path / "config.json", batch_size=2, seq_len=9), objective="min_bottleneck",
                 num_partitions=1)
    ids = token_ids(4, 9)
    result = runtime.execute(plan, tmp_path, ids, micro_batches=2)
    (rank,) = result.report["ranks"]
    assert result.report["backend"] == "nccl" and rank["torch_device"] == "cuda:0"
    with torch.no_grad():
        assert torch.allclose(result.outputs, model(ids).logits, atol=1e-4)
    assert rank["loaded_bytes"] == rank["param_bytes"] == rank["predicted_weight_bytes"]
    assert rank["cuda_max_allocated_bytes"] >= rank["param_bytes"]
