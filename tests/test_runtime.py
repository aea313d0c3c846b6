"""The runtime with real processes (gloo on CPU): outputs and gradients equal the
single-process model's, failures name the rank, torchrun launches (one node and two)."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from layerfit import runtime  # noqa: E402
from layerfit.runtime.execute import free_port  # noqa: E402
from layerfit.runtime.model import ModelError, build_model  # noqa: E402
from layerfit.runtime.synthetic import example_inputs, synthetic_instance, synthetic_model  # noqa: E402
from runtime_models import UNET_EDGES, failing_chain, linear_chain  # noqa: E402
from layerfit import Instance, Layer, Plan, PlanError, Status, solve  # noqa: E402
from layerfit.report.metrics import plan_metrics  # noqa: E402

from helpers import ROOT  # noqa: E402
from layerfit.model.graph import dag_cuts  # noqa: E402


def plan_for(instance, partitions):
    metrics = plan_metrics(instance, partitions)
    return Plan(status=Status.FEASIBLE, partitions=partitions, objective_name="min_bottleneck",
                objective=metrics["max_bytes"], bound=0, method="manual", instance_name=instance.name,
                num_layers=instance.num_layers, metrics=metrics, num_partitions_requested=len(partitions))


def chain_instance(n=8, width=16, micro_batch=2):
    return Instance(name="chain", capacity=10**6, dtype="fp32",
                    layers=[Layer(f"l{i}", params=width * width + width, activation_bytes=micro_batch * width * 4) for i in range(n)])


@pytest.mark.parametrize("ranks, schedule, micro_batches", [(2, "gpipe", 2), (4, "1f1b", 4)])
def test_inference_outputs_equal_the_single_process_model(ranks, schedule, micro_batches):
    torch.manual_seed(0)
    model = linear_chain()
    inst = chain_instance()
    plan = solve(inst, objective="min_bottleneck", num_partitions=ranks)
    x = torch.randn(8, 16)
    result = runtime.execute(plan, model, x, instance=inst, micro_batches=micro_batches, schedule=schedule)
    assert torch.allclose(result.outputs, model(x), atol=1e-6)
    report = result.report
    assert report["stages"] == ranks and report["backend"] == "gloo"
    assert report["theoretical_bubble_fraction"] == pytest.approx((ranks - 1) / (micro_batches + ranks - 1))
    for rank in report["ranks"]:
        # Each boundary sends its activation once per micro-batch: 8 rows × 16 floats in all.
        assert rank["bytes_sent"] == (0 if rank["rank"] == ranks - 1 else 8 * 16 * 4)
        assert rank["bytes_received"] == (0 if rank["rank"] == 0 else 8 * 16 * 4)
        assert rank["l2_reservation"]["reserved_bytes"] == 0  # the seed's step 4 is a no-op said on CPU
        assert rank["l2_reservation"]["note"].startswith("cpu: no L2 persisting cache")


@pytest.mark.parametrize("schedule, partitions", [("gpipe", [[0, 1, 2], [3, 4, 5, 6, 7]]),
                                                  ("1f1b", [[0], [1, 2, 3, 4], [5, 6], [7]])])
def test_training_gradients_equal_the_single_process_model(schedule, partitions):
    torch.manual_seed(1)
    model = linear_chain()
    inst = chain_instance()
    x, y = torch.randn(8, 16), torch.randn(8, 16)
    result = runtime.execute(plan_for(inst, partitions), model, x, target=y, instance=inst, micro_batches=4,
                             schedule=schedule, train=True)
    model.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    for name, param in model.named_parameters():
        assert torch.allclose(result.grads[name], param.grad, atol=1e-6), name
    assert result.report["ranks"][-1]["loss"] is not None


def test_several_steps_report_the_first_steps_outputs_and_gradients():
    torch.manual_seed(3)
    model = linear_chain()
    inst = chain_instance()
    x, y = torch.randn(8, 16), torch.randn(8, 16)
    result = runtime.execute(plan_for(inst, [[0, 1, 2, 3], [4, 5, 6, 7]]), model, x, target=y, micro_batches=2,
                             train=True, steps=3)
    model.zero_grad()
    out = model(x)
    nn.functional.mse_loss(out, y).backward()
    # A warm-up step ran first and two more SGD steps after: what is reported is taken at the
    # initial weights, and the bytes moved are one step's.
    assert torch.allclose(result.outputs, out, atol=1e-6)
    for name, param in model.named_parameters():
        assert torch.allclose(result.grads[name], param.grad, atol=1e-6), name
    assert result.report["steps"] == 3 and all(r["steps"] == 3 for r in result.report["ranks"])
    assert result.report["ranks"][0]["bytes_sent"] == 8 * 16 * 4
    with pytest.raises(runtime.ExecutionError, match=r"^steps: expected a whole number of steps ≥ 1, got 0$"):
        runtime.execute(plan_for(inst, [[0, 1, 2, 3], [4, 5, 6, 7]]), model, x, steps=0)
    with pytest.raises(runtime.ExecutionError, match=r"^inputs: expected a batch tensor \(samples along dimension 0\), got list$"):
        runtime.execute(plan_for(inst, [[0, 1, 2, 3], [4, 5, 6, 7]]), model, [[1.0] * 16])
    with pytest.raises(runtime.ExecutionError, match=r"^timeout_s: expected a positive number of seconds, got 0$"):
        runtime.execute(plan_for(inst, [[0, 1, 2, 3], [4, 5, 6, 7]]), model, x, timeout_s=0)
    with pytest.raises(runtime.ExecutionError, match=r"^optimizer: unknown optimizer 'lamb' \(allowed: sgd, adam\)$"):
        runtime.execute(plan_for(inst, [[0, 1, 2, 3], [4, 5, 6, 7]]), model, x, target=y, train=True, optimizer="lamb")


def test_saved_for_backward_bytes_are_those_still_held():
    # GPipe runs every forward before any backward: a stage holds all micro-batches' saved
    # tensors at once, as much as the whole batch in one piece. 1F1B frees each micro-batch's
    # after its backward, so both stages peak lower.
    model = synthetic_model()
    inst = synthetic_instance(model, micro_batch=4)
    plan = solve(inst, objective="min_bottleneck", num_partitions=2)
    x, y = example_inputs(16)

    def peaks(schedule, micro_batches):
        result = runtime.execute(plan, model, x, target=y, micro_batches=micro_batches, schedule=schedule, train=True)
        return [r["saved_for_backward_peak_bytes"] for r in result.report["ranks"]]

    whole, gpipe, one_f_one_b = peaks("gpipe", 1), peaks("gpipe", 4), peaks("1f1b", 4)
    assert gpipe == whole and all(b > 0 for b in whole)
    assert all(f < g for f, g in zip(one_f_one_b, gpipe)), (one_f_one_b, gpipe)


@pytest.mark.parametrize("schedule, optimizer", [("gpipe", "sgd"), ("1f1b", "sgd"), ("gpipe", "adam"), ("1f1b", "adam")])
def test_training_memory_matches_a_profiled_training_instance(schedule, optimizer):
    # profile_module(training=True) counts what each layer saves for backward; with the
    # schedule's micro-batches in flight and the optimizer's state (plain SGD: gradients only,
    # optimizer "none"; Adam on fp32 weights: gradients and two moments), the plan predicts
    # what each rank then holds: weights, gradients, state and the saved tensors at their peak.
    import dataclasses

    from layerfit.runtime import profile_module
    from layerfit import Training

    model = synthetic_model()
    x, y = example_inputs(16)
    profiled = profile_module(model, x[:4], training=True)
    inst = dataclasses.replace(profiled, schedule=schedule, micro_batches=4,
                               training=Training("none" if optimizer == "sgd" else "adam"))
    plan = solve(inst, objective="min_bottleneck", num_partitions=4)
    result = runtime.execute(plan, model, x, target=y, micro_batches=4, schedule=schedule, train=True, optimizer=optimizer)
    ranks = result.report["ranks"]
    tensors = len(list(model.parameters()))  # at least each rank's: Adam keeps a step counter per tensor
    for r in ranks:
        assert r["grad_bytes"] == r["param_bytes"]
        if optimizer == "sgd":
            assert r["optimizer_state_bytes"] == 0
        else:  # exp_avg and exp_avg_sq per parameter, and a scalar step counter per tensor
            assert 2 * r["param_bytes"] < r["optimizer_state_bytes"] <= 2 * r["param_bytes"] + 8 * tensors
    # The prediction also holds each stage's largest workspace, which a peak of saved tensors
    # does not see; the last rank holds the loss's saved output and target besides, which no
    # layer of the instance has.
    assert all(r["measured_over_predicted"] == pytest.approx(1.0, abs=0.05) for r in ranks[:-1]), ranks
    assert 1.0 <= ranks[-1]["measured_over_predicted"] <= 1.15, ranks[-1]


def test_cpu_ranks_share_the_cores(monkeypatch):
    from layerfit.runtime.rank import threads_per_rank

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(__import__("os").sched_getaffinity(0))
    assert threads_per_rank(1) == cores and threads_per_rank(cores * 4) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins
    assert threads_per_rank(2) == 3
    inst = chain_instance(4)
    result = runtime.execute(solve(inst, objective="min_bottleneck", num_partitions=2), linear_chain(4), torch.randn(4, 16))
    assert [r["threads"] for r in result.report["ranks"]] == [3, 3]


def unet_instance(model, micro_batch):
    from layerfit.runtime.model import layers_of, param_count
    from runtime_models import UNET_EDGES

    return Instance(name="unet", capacity=10**6, dtype="fp32", edges=UNET_EDGES,
                    layers=[Layer(name, params=param_count(layer), activation_bytes=micro_batch * 16 * 4)
                            for name, layer in layers_of(model)])


@pytest.mark.parametrize("schedule, partitions", [("gpipe", [[0, 1], [2, 3], [4, 5]]), ("1f1b", [[0], [1, 2, 3, 4], [5]]),
                                                  ("gpipe", [[0, 1, 2], [3, 4, 5]])])
def test_a_dag_plan_runs_with_its_skips_relayed(schedule, partitions):
    from layerfit.runtime.graph import graph_forward
    from runtime_models import unet_like

    torch.manual_seed(4)
    model = unet_like()
    inst = unet_instance(model, micro_batch=2)
    x = torch.randn(8, 16)
    result = runtime.execute(plan_for(inst, partitions), model, x, instance=inst, micro_batches=4, schedule=schedule)
    assert torch.allclose(result.outputs, graph_forward(model, inst, x), atol=1e-6)
    ranks = result.report["ranks"]
    # Every tensor that crosses a boundary is sent over it, a skip relayed through the stages
    # between: the bytes the planner counts for each cut, for each of the 4 micro-batches.
    assert [r["bytes_sent"] for r in ranks] == [4 * cut for cut in dag_cuts(inst, partitions)] + [0]
    # Held: weights, the layers' outputs and the skips relayed, as the plan's S(P) counts them.
    assert all(r["measured_over_predicted"] == 1.0 for r in ranks), ranks


def test_a_dag_plan_trains_to_the_single_process_gradients():
    from layerfit.runtime.graph import graph_forward
    from runtime_models import unet_like

    torch.manual_seed(5)
    model = unet_like()
    inst = unet_instance(model, micro_batch=2)
    x, y = torch.randn(8, 16), torch.randn(8, 16)
    partitions = [[0, 1], [2, 3], [4, 5]]  # enc0's skip is relayed through the middle stage
    result = runtime.execute(plan_for(inst, partitions), model, x, target=y, instance=inst, micro_batches=4,
                             schedule="1f1b", train=True)
    assert result.report["ranks"][1]["relayed_bytes_per_micro_batch"] == 2 * 16 * 4
    model.zero_grad()
    nn.functional.mse_loss(graph_forward(model, inst, x), y).backward()
    for name, param in model.named_parameters():
        assert torch.allclose(result.grads[name], param.grad, atol=1e-6), name


def test_a_dag_relays_the_models_input_too():
    # a and b both read the input; with b on a later stage the input crosses to it (a tensor that
    # needs no gradient, relayed beside a's output), and c joins them.
    from collections import OrderedDict

    from layerfit.runtime.graph import graph_forward
    from runtime_models import Join

    torch.manual_seed(6)
    model = nn.Sequential(OrderedDict([("a", nn.Linear(16, 16)), ("b", nn.Linear(16, 16)), ("c", Join(16))]))
    inst = Instance(name="two-in", capacity=10**6, dtype="fp32", edges=(("a", "c"), ("b", "c")),
                    layers=[Layer(n, params=sum(p.numel() for p in m.parameters()), activation_bytes=2 * 16 * 4)
                            for n, m in model.named_children()])
    x, y = torch.randn(8, 16), torch.randn(8, 16)
    result = runtime.execute(plan_for(inst, [[0], [1], [2]]), model, x, target=y, instance=inst, micro_batches=4,
                             schedule="1f1b", train=True)
    model.zero_grad()
    nn.functional.mse_loss(graph_forward(model, inst, x), y).backward()
    for name, param in model.named_parameters():
        assert torch.allclose(result.grads[name], param.grad, atol=1e-6), name
    # the input (8 × 16 floats) and a's output cross both boundaries; the planner counts a's only
    assert [r["bytes_sent"] for r in result.report["ranks"]] == [2 * 8 * 16 * 4, 2 * 8 * 16 * 4, 0]


def test_a_dag_plan_needs_its_instance_and_its_order():
    from runtime_models import unet_like

    model = unet_like()
    inst = unet_instance(model, micro_batch=2)
    with pytest.raises(runtime.ExecutionError, match=r"^plan: its partitions are not consecutive runs of the layers "
                                                     r"\(a DAG plan\); give the instance with its edges"):
        runtime.execute(plan_for(inst, [[0, 1, 3], [2, 4, 5]]), model, torch.randn(4, 16))
    with pytest.raises(PlanError, match=r"^edge mid → dec1 runs backwards: partition 1 feeds partition 0$"):
        runtime.execute(plan_for(inst, [[0, 1, 3], [2, 4, 5]]), model, torch.randn(4, 16), instance=inst)
    two_outputs = dataclasses.replace(inst, edges=UNET_EDGES[:4] + UNET_EDGES[5:])  # head fed by nothing... and dec0 feeds none
    with pytest.raises(ModelError, match=r"^edges: the runtime runs a DAG with one output layer; 'dec0', 'head' feed no "
                                         r"other layer$"):
        runtime.execute(plan_for(two_outputs, [[0, 1, 2], [3, 4, 5]]), model, torch.randn(4, 16), instance=two_outputs)


def test_the_callers_model_is_not_modified_by_training():
    torch.manual_seed(2)
    model = linear_chain(4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inst = chain_instance(4)
    runtime.execute(solve(inst, objective="min_bottleneck", num_partitions=2), model, torch.randn(4, 16),
                    target=torch.randn(4, 16), train=True, micro_batches=2)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_a_factory_is_materialised_per_rank_and_matches_build_model():
    model = synthetic_model()
    inst = synthetic_instance(model, micro_batch=2)
    plan = solve(inst, objective="min_bottleneck", num_partitions=4)
    x, _ = example_inputs(8)
    result = runtime.execute(plan, "layerfit.runtime.synthetic:synthetic_model", x, instance=inst, micro_batches=4, seed=5)
    reference = build_model("layerfit.runtime.synthetic:synthetic_model", seed=5)
    assert torch.allclose(result.outputs, reference(x), atol=1e-5)
    for rank in result.report["ranks"]:
        # Inference holds the weights and each layer's output per micro-batch: the seed's S(P).
        assert rank["measured_over_predicted"] == pytest.approx(1.0, rel=0.2)


def test_a_rank_that_raises_names_itself():
    inst = Instance(name="f", capacity=10**6, layers=[Layer(f"l{i}", weight_bytes=1) for i in range(4)])
    with pytest.raises(runtime.ExecutionError, match=r"^rank 1 failed: RuntimeError: boom in layer l2; the other ranks were stopped$"):
        runtime.execute(plan_for(inst, [[0, 1], [2, 3]]), failing_chain(), torch.randn(4, 16), timeout_s=20)


def test_a_rank_that_dies_stops_the_others():
    inst = Instance(name="f", capacity=10**6, layers=[Layer(f"l{i}", weight_bytes=1) for i in range(4)])
    with pytest.raises(runtime.ExecutionError, match=r"^rank 1 died \(exit code 3\); the other ranks were stopped$"):
        runtime.execute(plan_for(inst, [[0, 1], [2, 3]]), failing_chain(die=True), torch.randn(4, 16), timeout_s=20)


def test_a_mismatched_model_fails_before_any_process_starts():
    inst = chain_instance()
    plan = solve(inst, objective="min_bottleneck", num_partitions=2)
    with pytest.raises(ModelError, match=r"^model has 7 layers, the plan 8$"):
        runtime.execute(plan, linear_chain(7), torch.randn(4, 16))
    wide = linear_chain()
    wide.l3 = nn.Linear(16, 64)
    with pytest.raises(ModelError, match=r"^layer 3 \(l3\): the model has 1,088 parameters, the instance 272$"):
        runtime.execute(plan, wide, torch.randn(4, 16), instance=inst)
    renamed = nn.Sequential(*linear_chain())  # children named 0, 1, ...
    with pytest.raises(ModelError, match=r"^layer 'l0': the model has no module 'l0'$"):
        runtime.execute(plan, renamed, torch.randn(4, 16), instance=inst)
    with pytest.raises(runtime.ExecutionError, match=r"^micro_batches: 1F1B needs at least one micro-batch per stage \(2\), got 1$"):
        runtime.execute(plan, linear_chain(), torch.randn(4, 16), schedule="1f1b")
    import dataclasses

    convex = dataclasses.replace(plan, partitions=[[0, 2, 3], [1, 4, 5, 6, 7]])  # a DAG plan's sets
    with pytest.raises(runtime.ExecutionError, match=r"^plan: its partitions are not consecutive runs of the layers"):
        runtime.execute(convex, linear_chain(), torch.randn(4, 16))


def _write_plan(tmp_path, partitions_count):
    model = synthetic_model()
    inst = synthetic_instance(model, micro_batch=2)
    plan = solve(inst, objective="min_bottleneck", num_partitions=partitions_count)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_dict()))
    return path


def test_layerfit_run_with_torchrun(tmp_path):
    from layerfit import load_topology, map_plan

    model = synthetic_model()
    inst = synthetic_instance(model, micro_batch=2)
    placement = map_plan(inst, solve(inst, objective="min_bottleneck", num_partitions=2), load_topology("dgx-h100"))
    plan = tmp_path / "placement.json"  # a placement: partition j on rank j, its GPU named in the report
    plan.write_text(json.dumps(placement.to_dict()))
    report = tmp_path / "report.json"
    out = subprocess.run([sys.executable, "-m", "layerfit.cli", "run", str(plan), "--model", "layerfit.runtime.synthetic:synthetic_model",
                          "--batch", "8", "--micro-batches", "4", "--train", "--optimizer", "adam", "--steps", "2",
                          "--report", str(report)],
                         capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 ranks (gloo), schedule gpipe, 4 micro-batches of 2: step " in out.stdout
    assert " ms (mean of 2 after a warm-up), " in out.stdout
    doc = json.loads(report.read_text())
    assert [r["rank"] for r in doc["ranks"]] == [0, 1] and doc["ranks"][1]["loss"] is not None
    assert [r["device"] for r in doc["ranks"]] == placement.devices
    assert all(r["optimizer_state_bytes"] > 2 * r["param_bytes"] for r in doc["ranks"])  # Adam's two moments
    assert f"   0  {placement.devices[0]}@cpu " in out.stdout


def test_two_nodes_on_loopback(tmp_path):
    port = free_port()
    plan = _write_plan(tmp_path, 4)
    job_dir = tmp_path / "job"
    common = [sys.executable, "-m", "layerfit.cli", "run", str(plan), "--model", "layerfit.runtime.synthetic:synthetic_model",
              "--batch", "8", "--micro-batches", "4", "--schedule", "1f1b", "--nnodes", "2",
              "--rdzv-endpoint", f"127.0.0.1:{port}", "--job-dir", str(job_dir), "--timeout", "60"]
    nodes = [subprocess.Popen([*common, "--node-rank", str(r)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    outs = [node.communicate(timeout=240) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [o[1][-1500:] for o in outs]
    assert sorted(p.name for p in Path(job_dir).glob("report*.pt")) == [f"report{r}.pt" for r in range(4)]
    assert (job_dir / "outputs.pt").exists()


def test_a_rendezvous_that_cannot_form_fails_clearly(tmp_path):
    plan = _write_plan(tmp_path, 2)
    out = subprocess.run([sys.executable, "-m", "layerfit.cli", "run", str(plan), "--model", "layerfit.runtime.synthetic:synthetic_model",
                          "--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--timeout", "5",
                          "--job-dir", str(tmp_path / "job")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 1
    assert "layerfit: error: the ranks failed (torchrun exit code 1)" in out.stderr
    assert "RendezvousTimeoutError" in out.stderr


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "--steps: expected a whole number of steps ≥ 1, got 0"),
    (["--batch", "6", "--micro-batches", "4"], "--micro-batches: 4 must be ≥ 1 and divide the batch of 6"),
    (["--micro-batches", "0"], "--micro-batches: 0 must be ≥ 1 and divide the batch of 8"),
    (["--schedule", "1f1b", "--micro-batches", "1"], "--micro-batches: 1F1B needs at least one micro-batch per stage (2), got 1"),
    (["--batch", "0"], "--batch: the batch needs at least one sample, got 0"),
    (["--timeout", "-1"], "--timeout: expected a positive number of seconds, got -1.0"),
    (["--nnodes", "0"], "--nnodes: 2 ranks do not split evenly over 0 nodes"),
    (["--nnodes", "2", "--node-rank", "2"], "--node-rank: expected 0 to 1 for 2 nodes, got 2"),
    (["--nnodes", "2", "--rdzv-endpoint", "localhost"], "--rdzv-endpoint: expected HOST:PORT, got 'localhost'"),
])
def test_layerfit_run_refuses_bad_options_before_launching(tmp_path, capsys, extra, message):
    from layerfit.cli import main

    plan = _write_plan(tmp_path, 2)
    assert main(["run", str(plan), "--model", "layerfit.runtime.synthetic:synthetic_model", *extra]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"layerfit: error: {message}\n"


def test_layerfit_run_refuses_bad_files_and_models(tmp_path, capsys):
    import dataclasses

    from layerfit.cli import main

    plan = _write_plan(tmp_path, 2)
    broken = tmp_path / "broken.json"
    broken.write_text("{bad")
    instance = tmp_path / "instance.json"
    instance.write_text(json.dumps(chain_instance().to_dict()))
    cases = [
        ([str(broken), "--model", "layerfit.runtime.synthetic:synthetic_model"],
         f"{broken}: not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2)"),
        ([str(tmp_path / "missing.json"), "--model", "layerfit.runtime.synthetic:synthetic_model"],
         f"{tmp_path / 'missing.json'}: no such file"),
        ([str(instance), "--model", "layerfit.runtime.synthetic:synthetic_model"],
         f"{instance}: an instance, not a plan or placement; solve it first (layerfit solve FILE --json > plan.json)"),
        ([str(plan), "--model", "layerfit.runtime.synthetic:nothing"], "model: 'layerfit.runtime.synthetic' has no function 'nothing'"),
        ([str(plan), "--model", "no_such_module:build"], "model: cannot import 'no_such_module' (No module named 'no_such_module')"),
        ([str(plan), "--model", "runtime_models:failing_chain"], "model has 4 layers, the plan 8"),
        ([str(plan), "--model", "layerfit.runtime.synthetic:example_inputs"],
         "model: the factory failed on the meta device (TypeError: example_inputs() missing 1 required positional "
         "argument: 'batch')"),
    ]
    synthetic = tmp_path / "synthetic.json"
    synthetic.write_text(json.dumps(synthetic_instance(synthetic_model(), micro_batch=2).to_dict()))
    short = tmp_path / "short.json"
    short.write_text(json.dumps(dataclasses.replace(chain_instance(4), name="short").to_dict()))
    wide = tmp_path / "wide.json"  # the same layer names, a wider model than the factory builds
    wide.write_text(json.dumps(synthetic_instance(synthetic_model(hidden=128), micro_batch=2).to_dict()))
    cases += [
        ([str(plan), "--model", "layerfit.runtime.synthetic:synthetic_model", "--instance", str(instance)],
         "layer 'l0': the model has no module 'l0'"),
        ([str(plan), "--model", "layerfit.runtime.synthetic:synthetic_model", "--instance", str(short)],
         "instance: 'short' has 4 layers, the plan 8"),
        ([str(plan), "--model", "layerfit.runtime.synthetic:synthetic_model", "--instance", str(wide)],
         "layer 0 (embed): the model has 32,832 parameters, the instance 65,664"),
        ([str(plan), "--model", "layerfit.runtime.synthetic:synthetic_model", "--instance", str(tmp_path / "none.json")],
         f"{tmp_path / 'none.json'}: no such file"),
    ]
    convex = tmp_path / "convex.json"  # a DAG plan's sets, without the instance that makes them so
    convex.write_text(json.dumps(plan_for(synthetic_instance(synthetic_model(), 2), [[0, 2, 3], [1, 4, 5, 6, 7]]).to_dict()))
    cases.append(([str(convex), "--model", "layerfit.runtime.synthetic:synthetic_model"],
                  "plan: its partitions are not consecutive runs of the layers (a DAG plan); give the instance with its "
                  "edges (instance=, --instance) for the ranks to follow"))
    for args, message in cases:
        assert main(["run", *args]) == 2, args
        out, err = capsys.readouterr()
        assert out == "" and err == f"layerfit: error: {message}\n", (args, err)


def _stopped(pid):
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status  # exited, not yet reaped


def _interrupt_when_ranks_run(command, tmp_path):
    """Start ``command``, wait until both ranks have run a layer, interrupt it (SIGINT to the
    launcher alone, not its process group); its exit code and the ranks' pids."""
    import os
    import signal
    import time

    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "LAYERFIT_TEST_PIDS": str(pids), "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}"}
    launcher = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ranks = []
    try:
        deadline = time.monotonic() + 120
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline and launcher.poll() is None:
            time.sleep(0.2)
        ranks = [int(p.name) for p in pids.iterdir()]
        assert len(ranks) >= 2, launcher.communicate(timeout=5)
        launcher.send_signal(signal.SIGINT)
        _, err = launcher.communicate(timeout=60)
        deadline = time.monotonic() + 20
        while not all(_stopped(pid) for pid in ranks) and time.monotonic() < deadline:
            time.sleep(0.2)
        return launcher.returncode, err, [pid for pid in ranks if not _stopped(pid)]
    finally:  # a failing run leaves nothing behind
        for pid in [launcher.pid, *ranks]:
            if not _stopped(pid):
                os.kill(pid, signal.SIGKILL)


def test_interrupting_execute_stops_every_rank(tmp_path):
    script = ("import torch, runtime\n"
              "from runtime_models import hanging_chain\n"
              "from layerfit import Instance, Layer, solve\n"
              "inst = Instance(name='h', capacity=10**6, layers=[Layer(f'l{i}', weight_bytes=1) for i in range(4)])\n"
              "if __name__ == '__main__':\n"
              "    runtime.execute(solve(inst, objective='min_bottleneck', num_partitions=2), hanging_chain(),\n"
              "                    torch.randn(4, 16), timeout_s=600)\n")
    path = tmp_path / "run.py"
    path.write_text(script)
    code, err, alive = _interrupt_when_ranks_run([sys.executable, str(path)], tmp_path)
    assert "KeyboardInterrupt" in err and code != 0
    assert alive == []


def test_interrupting_layerfit_run_stops_every_rank(tmp_path):
    inst = Instance(name="h", capacity=10**6, layers=[Layer(f"l{i}", weight_bytes=1) for i in range(4)])
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(solve(inst, objective="min_bottleneck", num_partitions=2).to_dict()))
    command = [sys.executable, "-m", "layerfit.cli", "run", str(plan), "--model", "runtime_models:hanging_chain",
               "--batch", "4", "--timeout", "600", "--job-dir", str(tmp_path / "job")]
    code, err, alive = _interrupt_when_ranks_run(command, tmp_path)
    assert code == 130 and err.endswith("layerfit: interrupted; torchrun stopped the ranks\n"), err[-2000:]
    assert alive == []


def test_layerfit_run_names_the_rank_that_failed(tmp_path):
    import os

    inst = Instance(name="f", capacity=10**6, layers=[Layer(f"l{i}", weight_bytes=1) for i in range(4)])
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(plan_for(inst, [[0, 1], [2, 3]]).to_dict()))
    out = subprocess.run([sys.executable, "-m", "layerfit.cli", "run", str(plan), "--model", "runtime_models:failing_chain",
                          "--batch", "4", "--timeout", "20", "--job-dir", str(tmp_path / "job")], capture_output=True, text=True,
                         cwd=ROOT, timeout=180, env={**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}"})
    assert out.returncode == 1
    assert out.stderr.endswith("layerfit: error: rank 1 failed: RuntimeError: boom in layer l2; the other ranks were stopped\n"), \
        out.stderr[-2000:]


def test_layerfit_run_follows_a_dags_edges(tmp_path):
    import os

    from runtime_models import unet_like

    inst = unet_instance(unet_like(), micro_batch=2)
    instance = tmp_path / "unet.json"
    instance.write_text(json.dumps(inst.to_dict()))
    plan = tmp_path / "plan.json"
    # Runs of the layer list, but dec1 and dec0 take skips: only the instance's edges say so.
    plan.write_text(json.dumps(plan_for(inst, [[0, 1, 2], [3, 4, 5]]).to_dict()))
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "layerfit.cli", "run", str(plan), "--model", "runtime_models:unet_like", "--batch", "8",
               "--micro-batches", "4", "--instance", str(instance), "--report", str(report)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}"}
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(report.read_text())
    # enc0's and enc1's outputs cross the one boundary (the skips), mid's too: 3 tensors × 8 rows × 16 floats
    assert doc["ranks"][0]["bytes_sent"] == 3 * 8 * 16 * 4

