"""``runtime.execute``: run a placement (or plan) on this machine, one process per partition.

The ranks are spawned here (torch.multiprocessing, rendezvous on 127.0.0.1 at a free
port), gloo on CPU and NCCL when there is a CUDA GPU per partition, so that tests and
notebooks need no shell; ``layerfit run`` launches the same ranks with torchrun.
"""

from __future__ import annotations

import json
import math
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from solver import Instance, LayerfitError, Placement, Plan
from solver.dag import check_dag_plan
from solver.instance import read_json

from .graph import Graph
from .model import check_layers, meta_layers
from .rank import OPTIMIZERS, SCHEDULES, Job, run_rank, threads_per_rank

__all__ = ["ExecutionError", "ExecutionResult", "execute", "load_placement"]


class ExecutionError(LayerfitError, RuntimeError):
    """A rank failed, died or timed out; the message names the rank."""


@dataclass
class ExecutionResult:
    """The last stage's outputs and the measurement report (per rank and overall)."""

    outputs: torch.Tensor | None
    report: dict[str, Any]
    grads: dict[str, torch.Tensor] = field(default_factory=dict)


def load_placement(source: Placement | Plan | dict | str | Path) -> tuple[list[list[int]], list[int], list[str] | None, int]:
    """(partitions, predicted bytes per partition, devices or None, number of layers).

    Refuses what cannot run: a file that is not a plan's or placement's JSON, or a status with
    no plan.
    """
    where = str(source) if isinstance(source, (str, Path)) else None
    if isinstance(source, (str, Path)):
        source = read_json(source)  # InstanceError naming the file: missing, unreadable, not JSON
    if isinstance(source, dict):
        if "layers" in source and "capacity" in source:
            raise ExecutionError(f"{where or 'placement'}: an instance, not a plan or placement; solve it first "
                                 "(layerfit solve FILE --json > plan.json)")
        source = Placement.from_dict(source) if "devices" in source and "boundaries" in source else Plan.from_dict(source)
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
        An ``nn.Module`` whose children are the layers, or a picklable factory (or
        ``"module:function"``) built on the meta device, each rank materialising its own
        layers (runtime.model).
    inputs, target:
        The batch (split into ``micro_batches`` along dimension 0) and, to train, its target.
    instance:
        When given, layer names and parameter counts are checked against it.
    train:
        Forward, backward (``loss_fn``, default MSE) and an optimizer step with ``lr``:
        ``optimizer`` ``"sgd"`` (plain, no state) or ``"adam"``.
    steps:
        Timed steps, after one untimed warm-up step; the report's times are per step.
        Outputs and gradients are the first timed step's (at the initial weights).

    Raises
    ------
    ModelError
        Before any process starts, when the model does not match the plan.
    ExecutionError
        When a rank raises, dies or times out (naming the rank).
    """
    partitions, predicted, devices, num_layers = load_placement(placement)
    layers, shipped = meta_layers(model)
    check_layers(layers, num_layers, instance)
    graph = graph_of(partitions, instance)
    world = len(partitions)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0:
        raise ExecutionError(f"inputs: expected a batch tensor (samples along dimension 0), got {type(inputs).__name__}"
                             + (" with no dimensions" if isinstance(inputs, torch.Tensor) else ""))
    check_run(world, inputs.shape[0], micro_batches, schedule, steps, timeout_s, optimizer)
    if train and target is None:
        raise ExecutionError("target: training needs a target for the loss")
    backend = backend or default_backend(world)
    with tempfile.TemporaryDirectory(prefix="layerfit-run-") as out_dir:
        job = Job(
            partitions=partitions, predicted_bytes=predicted, devices=devices, model=shipped, inputs=inputs,
            target=target, micro_batches=micro_batches, schedule=schedule, train=train, backend=backend,
            master_addr="127.0.0.1", master_port=free_port(), out_dir=out_dir, timeout_s=timeout_s, seed=seed,
            lr=lr, loss_fn=loss_fn, optimizer=optimizer, steps=steps, threads=threads_per_rank(world), graph=graph,
        )
        context = mp.start_processes(run_rank, args=(job,), nprocs=world, join=False, start_method="spawn")
        try:
            while not context.join():
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException):
            raise ExecutionError(_first_failure(Path(out_dir), context)) from None
        finally:
            _stop(context)  # an interrupt (or any error here) leaves no rank running
        out = Path(out_dir)
        ranks = [torch.load(out / f"report{r}.pt") for r in range(world)]
        outputs = torch.load(out / "outputs.pt") if (out / "outputs.pt").exists() else None
        grads: dict[str, torch.Tensor] = {}
        if train:
            for r in range(world):
                grads.update(torch.load(out / f"grads{r}.pt"))
    return ExecutionResult(outputs=outputs, report=summarise(ranks, inputs.shape[0], schedule, micro_batches, backend), grads=grads)


def _stop(context: Any, grace_s: float = 5.0) -> None:
    """Terminate the ranks still running, then kill any that outlive the grace period."""
    alive = [p for p in context.processes if p.is_alive()]
    for process in alive:
        process.terminate()
    for process in alive:
        process.join(grace_s)
        if process.is_alive():
            process.kill()
            process.join()


def recorded_errors(out: Path) -> list[dict[str, Any]]:
    """The errors the ranks recorded in ``out`` (rank, time, message), earliest first."""
    errors = []
    for path in out.glob("error*.json"):
        try:
            errors.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(errors, key=lambda e: e["time"])


def describe_error(error: dict[str, Any]) -> str:
    message = error["error"].splitlines()[-1] if error["error"] else "unknown error"
    return f"rank {error['rank']} failed: {message}"


def _first_failure(out: Path, context: Any) -> str:
    """The rank that failed first: one that died on its own, else the earliest error.

    When one rank fails, its peers fail next (their connections reset) and the launcher
    stops the rest (SIGTERM, a negative exit code); those are consequences, not causes.
    """
    errors = recorded_errors(out)
    reported = {e["rank"] for e in errors}
    for rank, process in enumerate(context.processes):
        code = process.exitcode
        if code is not None and code > 0 and rank not in reported:
            return f"rank {rank} died (exit code {code}); the other ranks were stopped"
    return describe_error(errors[0]) if errors else "a rank failed without a report; the other ranks were stopped"


def summarise(ranks: list[dict[str, Any]], batch: int, schedule: str, micro_batches: int, backend: str) -> dict[str, Any]:
    """The overall report: throughput and the pipeline bubble, measured against theory."""
    p, m = len(ranks), micro_batches
    step = max(r["step_s"] for r in ranks)
    busy = [(r["forward_s_per_micro_batch"] + r["backward_s_per_micro_batch"]) * m for r in ranks]
    for r in ranks:
        predicted = r["predicted_bytes"]
        r["measured_over_predicted"] = r["measured_bytes"] / predicted if predicted else None
    return {
        "backend": backend,
        "schedule": schedule,
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
