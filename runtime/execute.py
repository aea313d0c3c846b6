"""``layerfit.runtime.execute``: run a placement (or plan) on this machine, one process per partition.

The ranks are spawned here (torch.multiprocessing; their store is served by this process on
127.0.0.1 at a free port, and nothing of the run listens beyond loopback), gloo on CPU and NCCL when there is a CUDA GPU per partition, so that tests and
notebooks need no shell; ``layerfit run`` launches the same ranks with torchrun.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import tempfile
from multiprocessing import connection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from layerfit import Instance, LayerfitError, Placement, Plan
from layerfit.model.instance import read_json
from layerfit.report.metrics import plan_metrics

from .faults import finished, first_failure
from .graph import Graph
from .loopback import LOOPBACK, serve_store
from .model import ModelError, PreparedModel, prepare_model
from .rank import OPTIMIZERS, SCHEDULES, Job, run_rank, threads_per_rank
from layerfit.model.graph import check_dag_plan

__all__ = ["ExecutionError", "ExecutionResult", "execute", "load_placement"]


class ExecutionError(LayerfitError, RuntimeError):
    """A rank failed, died or hung; the message names the rank (``.rank``) and its own error,
    and ``.details`` holds that rank's whole traceback (empty when it left none)."""

    rank: int | None = None
    details: str = ""


@dataclass
class ExecutionResult:
    """The last stage's outputs and the measurement report (per rank and overall)."""

    outputs: torch.Tensor | None
    report: dict[str, Any]
    grads: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> float | None:
        """Training: the first timed step's loss (the mean over its micro-batches)."""
        return self.report.get("loss")


def read_placement(source: Placement | Plan | dict | str | Path) -> Placement | Plan:
    """The Placement or Plan that ``source`` is or holds (a file, its JSON dict, or itself)."""
    where = str(source) if isinstance(source, (str, Path)) else None
    if isinstance(source, (str, Path)):
        source = read_json(source)  # InstanceError naming the file: missing, unreadable, not JSON
    if isinstance(source, dict):
        if "layers" in source and "capacity" in source:
            raise ExecutionError(f"{where or 'placement'}: an instance, not a plan or placement; solve it first "
                                 "(layerfit solve FILE --json > plan.json)")
        source = Placement.from_dict(source) if "devices" in source and "boundaries" in source else Plan.from_dict(source)
    return source


def load_placement(source: Placement | Plan | dict | str | Path) -> tuple[list[list[int]], list[int], list[str] | None, int]:
    """(partitions, predicted bytes per partition, devices or None, number of layers).

    Refuses what cannot run: a file that is not a plan's or placement's JSON, or a status with
    no plan.
    """
    source = read_placement(source)
    if isinstance(source, Placement):
        if not source.status.has_plan:
            raise ExecutionError(f"placement: status {source.status} has nothing to run")
        partitions, predicted, devices, n = source.partitions, source.partition_bytes, source.devices, source.num_layers
    elif isinstance(source, Plan):
        if not source.status.has_plan:
            raise ExecutionError(f"plan: status {source.status} has nothing to run")
        predicted = [row["bytes"] for row in source.metrics["partitions"]]
        devices = list(source.devices) if source.devices else None  # a free pool's chosen devices
        partitions, n = source.partitions, source.num_layers
    else:
        raise ExecutionError(f"expected a Placement, a Plan or their JSON, got {type(source).__name__}")
    return partitions, predicted, devices, n


def predicted_components(prepared: PreparedModel, instance: Instance | None, placed: Placement | Plan,
                         partitions: list[list[int]], inputs: torch.Tensor, micro_batches: int, schedule: str,
                         train: bool) -> tuple[list[int] | None, list[int] | None, str | None]:
    """Each rank's predicted weight and activation bytes, beside which the report puts what it
    measured: from the importer at the run's own micro-batch and sequence (a Hugging Face
    model), else from the instance, else from the plan's metrics (None without any).

    In training a stage holds its activations for the micro-batches in flight (the run's
    schedule); in inference the runtime measures one micro-batch's, as the seed's model counts.
    """
    micro_batch = inputs.shape[0] // micro_batches
    basis = prepared.source.run_instance(micro_batch, inputs, train)
    where = f"from_hf_config at micro-batch {micro_batch}, sequence {inputs.shape[1]}" if basis is not None else None
    if basis is None and instance is not None:
        basis, where = instance, f"the instance {instance.name!r}"
    if basis is not None:
        basis = dataclasses.replace(basis, schedule=schedule if train else "none", micro_batches=micro_batches if train else 1)
        rows = plan_metrics(basis, partitions)["partitions"]
    elif isinstance(placed, Plan):
        rows, where = placed.metrics["partitions"], "the plan's metrics"
    else:
        return None, None, None
    return [row["weight_bytes"] for row in rows], [row["activation_bytes"] for row in rows], where


# The runtime's optimizers as the planner's Training names them: plain SGD keeps no state.
PLANNED_OPTIMIZER = {"sgd": "none", "adam": "adam"}


def training_note(instance: Instance | None, train: bool, optimizer: str) -> str | None:
    """What the report should say when the run keeps other state than its instance plans for."""
    if instance is None:
        return None
    training = instance.training
    if train and training is None:
        return f"the instance {instance.name!r} plans no training state; this run trains"
    if not train and training is not None:
        return f"the instance {instance.name!r} plans training state; this run is inference"
    if train and training.optimizer is not None and training.optimizer != PLANNED_OPTIMIZER[optimizer]:
        return (f"the instance {instance.name!r} plans {training.optimizer!r} optimizer state; this run's "
                f"{optimizer!r} keeps {PLANNED_OPTIMIZER[optimizer]!r}'s")
    return None


def check_plan_names(placed: Placement | Plan, partitions: list[list[int]], names: list[str]) -> None:
    """ModelError when a plan's partitions start or end at layers the model names otherwise: a
    plan made for another model (a Placement carries no names)."""
    rows = placed.metrics.get("partitions", []) if isinstance(placed, Plan) else []
    for j, (part, row) in enumerate(zip(partitions, rows)):
        for key, index, verb in (("first_layer", part[0], "starts"), ("last_layer", part[-1], "ends")):
            if key in row and row[key] != names[index]:
                raise ModelError(f"plan: partition {j} {verb} at layer {row[key]!r}, the model's layer {index} is "
                                 f"{names[index]!r}: the plan was made for another model")


def graph_of(partitions: list[list[int]], instance: Instance | None) -> Graph | None:
    """The DAG the ranks follow (None: a chain, each stage sending one activation on).

    An instance with ``edges`` makes the run a DAG's: the plan is checked against it (convex
    stages, no edge backwards). A plan whose stages are not runs of the layer list is a DAG
    plan, which needs that instance.
    """
    if instance is not None and instance.edges is not None:
        check_dag_plan(instance, partitions)
        return Graph(instance)
    if [i for part in partitions for i in part] != list(range(sum(len(part) for part in partitions))):
        raise ExecutionError("plan: its partitions are not consecutive runs of the layers (a DAG plan); give the "
                             "instance with its edges (instance=, --instance) for the ranks to follow")
    return None


def check_run(world: int, batch: int, micro_batches: Any, schedule: str, steps: Any, timeout_s: Any,
              optimizer: str, names: dict[str, str] | None = None) -> None:
    """Refuse run options that cannot work, before any process starts; ``names`` renames the
    fields in the messages (the CLI's flags; in Python the batch is ``inputs``)."""
    fields = {"batch": "inputs", **(names or {})}

    def name(key: str) -> str:
        return fields.get(key, key)

    if schedule not in SCHEDULES:
        raise ExecutionError(f"{name('schedule')}: unknown schedule {schedule!r} (allowed: {', '.join(SCHEDULES)})")
    if optimizer not in OPTIMIZERS:
        raise ExecutionError(f"{name('optimizer')}: unknown optimizer {optimizer!r} (allowed: {', '.join(OPTIMIZERS)})")
    if batch < 1:
        raise ExecutionError(f"{name('batch')}: the batch needs at least one sample, got {batch}")
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1 or batch % micro_batches:
        raise ExecutionError(f"{name('micro_batches')}: {micro_batches!r} must be ≥ 1 and divide the batch of {batch}")
    if schedule == "1f1b" and micro_batches < world:
        raise ExecutionError(f"{name('micro_batches')}: 1F1B needs at least one micro-batch per stage ({world}), got "
                             f"{micro_batches}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ExecutionError(f"{name('steps')}: expected a whole number of steps ≥ 1, got {steps!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise ExecutionError(f"{name('timeout_s')}: expected a positive number of seconds, got {timeout_s!r}")


def make_job(placed: Placement | Plan, prepared: PreparedModel, inputs: Any, target: Any, *, instance: Instance | None,
             micro_batches: Any, schedule: str, train: bool, steps: Any, timeout_s: Any, optimizer: str,
             names: dict[str, str] | None = None, **launch: Any) -> Job:
    """The job the ranks run, once everything about it is checked (before any rank starts):
    the plan against the instance's edges, the run's options (``names``: the CLI's flags),
    the batch against the model. ``launch``: the Job's fields of where and how to run."""
    partitions, predicted, devices, _ = load_placement(placed)
    graph = graph_of(partitions, instance)
    check_plan_names(placed, partitions, prepared.names)
    if graph is not None and prepared.source.loss_fn() is not None:
        raise ModelError("instance: a Hugging Face causal LM is a chain; its instance has no edges")
    inputs_name = (names or {}).get("inputs", "inputs")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0:
        raise ExecutionError(f"{inputs_name}: expected a batch tensor (samples along dimension 0), got {type(inputs).__name__}"
                             + (" with no dimensions" if isinstance(inputs, torch.Tensor) else ""))
    check_run(len(partitions), inputs.shape[0], micro_batches, schedule, steps, timeout_s, optimizer, names)
    if train and target is None:
        raise ExecutionError("target: training needs a target for the loss")
    if target is not None and (not isinstance(target, torch.Tensor) or target.dim() == 0
                               or target.shape[0] != inputs.shape[0]):
        got = (f"{target.shape[0] if target.dim() else 'no'} samples" if isinstance(target, torch.Tensor)
               else type(target).__name__)
        raise ExecutionError(f"target: expected a tensor of the batch's {inputs.shape[0]} samples, got {got}")
    prepared.source.check_batch(inputs, target)
    weights, activations, where = predicted_components(prepared, instance, placed, partitions, inputs, micro_batches,
                                                       schedule, train)
    return Job(partitions=partitions, predicted_bytes=predicted, devices=devices, model=prepared, inputs=inputs,
               target=target, micro_batches=micro_batches, schedule=schedule, train=train, steps=steps,
               timeout_s=timeout_s, optimizer=optimizer, graph=graph, predicted_weight_bytes=weights,
               predicted_activation_bytes=activations, prediction=where,
               note=training_note(instance, train, optimizer), **launch)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_backend(world_size: int) -> str:
    """NCCL when there is a CUDA GPU for every rank, else gloo."""
    return "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world_size else "gloo"


def execute(
    placement: Placement | Plan | dict | str | Path,
    model: Any,
    inputs: torch.Tensor,
    *,
    target: torch.Tensor | None = None,
    instance: Instance | None = None,
    checkpoint: str | Path | None = None,
    init: str | None = None,
    backend: str | None = None,
    micro_batches: int = 1,
    schedule: str = "gpipe",
    train: bool = False,
    steps: int = 1,
    loss_fn: Any = None,
    lr: float = 0.1,
    optimizer: str = "sgd",
    seed: int = 0,
    timeout_s: float = 60.0,
) -> ExecutionResult:
    """Run ``model`` split as ``placement`` says, one process per partition.

    Parameters
    ----------
    placement:
        A Placement or Plan (or their JSON dict or file): partition j runs on rank j.
    model:
        An ``nn.Module``; a factory (a picklable callable, or ``"module:function"``) that each
        rank calls; a factory with ``checkpoint``; or a Hugging Face model directory
        (:mod:`layerfit.runtime.model`). Each rank holds only its own layers.
    inputs, target:
        The batch (split into ``micro_batches`` along dimension 0) and, to train, its target.
        A Hugging Face model takes token ids [batch, sequence] and gives logits; its target is
        the labels (token ids; the loss shifts them as transformers does).
    instance:
        When given, layer names (module paths) and parameter counts are checked against it.
    checkpoint:
        With a factory: a safetensors file, a folder of shards, or a weights-only state_dict,
        from which each rank reads its own layers' tensors. With a Hugging Face directory:
        weights to read instead of the directory's.
    init:
        ``"random"``: seeded random weights (``seed``), for benchmarks.
    train:
        Forward, backward (``loss_fn``; default MSE, or a Hugging Face model's causal-LM loss)
        and an optimizer step with ``lr``: ``optimizer`` ``"sgd"`` (plain, no state) or ``"adam"``.
    steps:
        Timed steps, after one untimed warm-up step; the report's times are per step.
        Outputs and gradients are the first timed step's (at the initial weights).

    Raises
    ------
    ModelError
        Before any process starts, when the model, its checkpoint or its initialisation does
        not match the plan.
    ExecutionError
        When a rank raises, dies or hangs: one line naming the rank that failed first and its own
        error (``.rank``; ``.details``: its whole traceback; see :mod:`layerfit.runtime.faults`);
        or, called from a script without ``if __name__ == "__main__":``, one line saying so.
    """
    refuse_unguarded_main()
    placed = read_placement(placement)
    partitions, _, _, num_layers = load_placement(placed)  # refuses a plan with nothing to run
    prepared = prepare_model(model, num_layers, instance, checkpoint=checkpoint, init=init)
    world = len(partitions)
    backend = backend or default_backend(world)
    with tempfile.TemporaryDirectory(prefix="layerfit-run-") as out_dir:
        out = Path(out_dir)
        job = make_job(placed, prepared, inputs, target, instance=instance, micro_batches=micro_batches,
                       schedule=schedule, train=train, steps=steps, timeout_s=timeout_s, optimizer=optimizer,
                       backend=backend, master_addr=LOOPBACK, master_port=None, out_dir=out_dir, seed=seed,
                       lr=lr, loss_fn=loss_fn, threads=threads_per_rank(world))
        store = serve_store(timeout_s=timeout_s)  # on 127.0.0.1 only; the ranks connect to it
        job.master_port = store.port
        os.environ[_SPAWNING] = out_dir  # where a rank importing an unguarded script says so
        try:
            context = mp.start_processes(run_rank, args=(job,), nprocs=world, join=False, start_method="spawn")
        finally:
            del os.environ[_SPAWNING]
        try:
            exits = _wait(context, out)
        finally:
            _stop(context)  # an interrupt (or any error here) leaves no rank running
        if (out / _UNGUARDED).exists():
            raise ExecutionError(MAIN_GUARD)
        if exits is not None or not all(finished(out, r) for r in range(world)):
            rank, message, details = first_failure(out, world, exits or {}, timeout_s)
            error = ExecutionError(f"{message}; the other ranks were stopped")
            error.rank, error.details = rank, details
            raise error
        del store
        ranks = [_load(out / f"report{r}.pt") for r in range(world)]
        outputs = _load(out / "outputs.pt") if (out / "outputs.pt").exists() else None
        grads: dict[str, torch.Tensor] = {}
        if train:
            for r in range(world):
                grads.update(_load(out / f"grads{r}.pt"))
    return ExecutionResult(outputs=outputs, report=summarise(ranks, job), grads=grads)


def _load(path: Path) -> Any:
    """What a rank wrote (tensors, numbers, strings and containers of them): never unpickled
    beyond that (``weights_only``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


_SPAWNING = "LAYERFIT_EXECUTE_SPAWNING"  # set while execute spawns its ranks: the run's folder
_UNGUARDED = "unguarded-main"
MAIN_GUARD = ('runtime.execute: call it under `if __name__ == "__main__":` in your script; each rank is a new '
              "process that imports the script, and unguarded the call runs again there")


def refuse_unguarded_main() -> None:
    """In a rank that is importing the user's script (torch.multiprocessing's spawn), a call to
    execute means the script has no main guard: say so to the launcher, which raises
    :data:`MAIN_GUARD`, and end this process quietly (no traceback per rank)."""
    if not getattr(mp.current_process(), "_inheriting", False):
        return
    folder = os.environ.get(_SPAWNING)
    if folder and Path(folder).is_dir():
        (Path(folder) / _UNGUARDED).touch()
    raise SystemExit(1)


def _wait(context: Any, out: Path) -> dict[int, int | None] | None:
    """Wait for the ranks: None when every one ends well; else, as soon as one exits otherwise
    (an exit code other than 0, or 0 without finishing: torch.multiprocessing ends a rank
    interrupted by SIGINT with 0), every rank's exit code at that moment (None: still running)."""
    processes = list(context.processes)
    running = {p.sentinel: (rank, p) for rank, p in enumerate(processes)}
    while running:
        for sentinel in connection.wait(list(running)):
            rank, process = running.pop(sentinel)
            process.join()
            if process.exitcode != 0 or not finished(out, rank):
                return {rank: p.exitcode for rank, p in enumerate(processes)}
    return None


def _stop(context: Any, grace_s: float = 5.0) -> None:
    """Terminate the ranks still running (each writes its stack as it goes: see
    :mod:`layerfit.runtime.faults`), then kill any that outlive the grace period."""
    alive = [p for p in context.processes if p.is_alive()]
    for process in alive:
        process.terminate()
    for process in alive:
        process.join(grace_s)
        if process.is_alive():
            process.kill()
            process.join()


def summarise(ranks: list[dict[str, Any]], job: Job) -> dict[str, Any]:
    """The overall report: throughput and the pipeline bubble, measured against theory."""
    p, m, batch = len(ranks), job.micro_batches, job.inputs.shape[0]
    step = max(r["step_s"] for r in ranks)
    busy = [(r["forward_s_per_micro_batch"] + r["backward_s_per_micro_batch"]) * m for r in ranks]
    for r in ranks:
        for measured, predicted, ratio in (("measured_bytes", "predicted_bytes", "measured_over_predicted"),
                                           ("param_bytes", "predicted_weight_bytes", "weights_measured_over_predicted"),
                                           ("activation_bytes", "predicted_activation_bytes",
                                            "activations_measured_over_predicted")):
            r[ratio] = r[measured] / r[predicted] if r.get(predicted) else None
    return {
        "backend": job.backend,
        "schedule": job.schedule,
        "train": job.train,
        "prediction": job.prediction,
        "note": job.note,
        "loss": ranks[-1]["loss"],  # the last stage's, the mean over its micro-batches
        "stages": p,
        "micro_batches": m,
        "batch": batch,
        "steps": ranks[0]["steps"],  # timed, after a warm-up step; times are per step
        "step_s": step,
        "throughput_samples_per_s": batch / step if step else None,
        # GPipe and 1F1B idle (p − 1) of (m + p − 1) slots per stage, with equal stages.
        "theoretical_bubble_fraction": (p - 1) / (m + p - 1),
        "measured_bubble_fraction": 1 - sum(busy) / (p * step) if step else None,
        "ranks": ranks,
    }
