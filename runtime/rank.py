"""What one rank does: hold its partition, run it as a pipeline stage, measure it.

Each rank builds the model pruned to its partition's layers, with their weights only
(:mod:`layerfit.runtime.model`), as a stage (:mod:`layerfit.runtime.stage`; a DAG plan's:
:class:`~layerfit.runtime.graph.GraphStage`) and runs it through ``torch.distributed.pipelining``
(``PipelineStage`` with ``ScheduleGPipe`` or ``Schedule1F1B``): the schedule sends each
micro-batch's boundary tensors to the next rank (and, when training, their gradients back).
The rank measures what it held and sent from the tensors themselves: parameter bytes,
activation bytes (each layer's output per micro-batch, and the skips a DAG stage relays;
when training, the bytes autograd saved for backward and still held, at their peak, the
gradients and the optimizer's state), bytes sent and received, and time per micro-batch and
per step. A tensor that layers on several ranks share (a head tied to the embedding) starts
equal on all of them (broadcast from the first), and in training its gradients are summed
over them before each optimizer step, as Megatron and DeepSpeed keep tied embeddings in sync.

A rank runs one untimed warm-up step first (the stage's shape inference, the first
allocations; training: forward and backward, gradients discarded, no weight update), then
``steps`` timed steps. Outputs and gradients are those of the first timed step, taken at
the initial weights, so that they equal the single-process model's.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from .faults import RankRecorder
from .graph import Graph
from .l2_cache import reserve_weights
from .loopback import connect_store, use_loopback
from .model import PreparedModel
from .stage import Stage

__all__ = ["Job", "run_rank", "SCHEDULES", "OPTIMIZERS"]

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}  # plain SGD keeps no state; Adam two moments


@dataclass
class Job:
    """Everything a rank needs; picklable, so it travels to spawned processes (``layerfit run``
    writes it as JSON and safetensors instead: :mod:`layerfit.runtime.jobfile`)."""

    partitions: list[list[int]]
    predicted_bytes: list[int]
    devices: list[str] | None
    model: PreparedModel
    inputs: torch.Tensor | None
    target: torch.Tensor | None
    micro_batches: int
    schedule: str
    train: bool
    backend: str
    master_addr: str | None  # the launcher's store (127.0.0.1, one machine); None: torchrun's env:// (several nodes)
    master_port: int | None
    out_dir: str
    timeout_s: float = 60.0
    seed: int = 0
    lr: float = 0.1
    loss_fn: Any = None
    optimizer: str = "sgd"
    graph: Graph | None = None  # a DAG plan's wiring; None: a chain
    steps: int = 1  # timed steps, after one warm-up step
    threads: int | None = None  # intra-op threads of a CPU rank; None: torch's default
    predicted_weight_bytes: list[int] | None = None  # per rank, beside the parameters it loaded
    predicted_activation_bytes: list[int] | None = None  # per rank, beside the activations it held
    prediction: str | None = None  # where those predictions come from
    note: str | None = None  # a difference between what was planned and what runs, said in the report


def threads_per_rank(ranks_here: int) -> int:
    """Intra-op threads for each of ``ranks_here`` CPU ranks on this machine.

    ``OMP_NUM_THREADS`` when the user set it, else the cores this process may use shared out
    (at least one): ranks that each take every core oversubscribe the machine.
    """
    chosen = os.environ.get("OMP_NUM_THREADS", "")
    if chosen.isdigit() and int(chosen) > 0:
        return int(chosen)
    return max(1, len(os.sched_getaffinity(0)) // max(1, ranks_here))


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        # The stage's shape inference runs on meta tensors: nothing real is held or sent.
        return 0 if value.is_meta else value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


class _Meter:
    """Hooks that count what the stage holds, sends and receives, from the real tensors."""

    def __init__(self, stage: Stage, first: bool, last: bool) -> None:
        self.layer_outputs: dict[str, int] = {}
        self.sent_per_call: list[int] = []
        self.received_per_call: list[int] = []
        self.forward_times: list[float] = []
        self.backward_times: list[float] = []
        self._backward_started = 0.0
        self.saved = self.saved_peak = 0
        self._live: dict[int, list[int]] = {}  # storage address -> [references, bytes]
        self._params = {p.untyped_storage().data_ptr() for p in stage.parameters()}
        self._started = 0.0
        stage.observers.append(self._layer_output)
        stage.register_forward_pre_hook(self._pre)
        stage.register_forward_hook(self._post)
        stage.register_full_backward_pre_hook(self._backward_pre)
        stage.register_full_backward_hook(self._backward_post)
        self.first, self.last = first, last
        self._relayed = getattr(stage, "relayed", [])  # a DAG stage's outputs that only pass through it
        self.relayed_bytes = 0

    def _layer_output(self, name: str, output: Any) -> None:
        self.layer_outputs[name] = max(self.layer_outputs.get(name, 0), _nbytes(output))

    def _pre(self, module, args):  # type: ignore[no-untyped-def]
        self.received_per_call.append(0 if self.first else _nbytes(args))
        self._started = time.perf_counter()

    def _post(self, module, args, output):  # type: ignore[no-untyped-def]
        self.forward_times.append(time.perf_counter() - self._started)
        self.sent_per_call.append(0 if self.last else _nbytes(output))
        outputs = output if isinstance(output, tuple) else (output,)
        self.relayed_bytes = max(self.relayed_bytes, sum(_nbytes(outputs[i]) for i in self._relayed))

    def start_timing(self) -> None:
        """Forget the warm-up step's calls (and the stage's shape inference before it)."""
        self.sent_per_call.clear()
        self.received_per_call.clear()
        self.forward_times.clear()
        self.backward_times.clear()
        self.saved_peak = self.saved

    def step_totals(self, steps: int) -> tuple[int, int]:
        """Bytes sent and received in one timed step."""
        return sum(self.sent_per_call) // steps, sum(self.received_per_call) // steps

    def _backward_pre(self, module, grad_output):  # type: ignore[no-untyped-def]
        self._backward_started = time.perf_counter()

    def _backward_post(self, module, grad_input, grad_output):  # type: ignore[no-untyped-def]
        self.backward_times.append(time.perf_counter() - self._backward_started)

    def pack(self, tensor: torch.Tensor) -> Any:
        storage = tensor.untyped_storage()
        address = storage.data_ptr()
        if address in self._params:  # weights are counted once, as parameters
            return tensor
        entry = self._live.setdefault(address, [0, storage.nbytes()])
        if entry[0] == 0:  # a storage saved twice (a view, or by two ops) is held once
            self.saved += entry[1]
            self.saved_peak = max(self.saved_peak, self.saved)
        entry[0] += 1
        # Detached: a tensor an op saves of its own output would otherwise hold its graph (output →
        # grad_fn → saved → output), a cycle that outlives a forward no backward runs through (the
        # pipeline's shape inference on the first stage), and it would be counted as held for ever.
        return _Saved(tensor.detach(), self, address)

    def unpack(self, saved: Any) -> torch.Tensor:
        return saved.tensor if isinstance(saved, _Saved) else saved

    def release(self, address: int) -> None:
        """Autograd dropped a saved tensor (its backward ran, or the graph was freed)."""
        entry = self._live[address]
        entry[0] -= 1
        if entry[0] == 0:
            self.saved -= entry[1]
            del self._live[address]


class _Saved:
    """What autograd keeps for a saved tensor: the tensor, and a note to the meter when freed."""

    __slots__ = ("tensor", "meter", "address")

    def __init__(self, tensor: torch.Tensor, meter: _Meter, address: int) -> None:
        self.tensor, self.meter, self.address = tensor, meter, address

    def __del__(self) -> None:
        self.meter.release(self.address)


def _device(job: Job, local_rank: int) -> torch.device:
    if job.backend == "nccl":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _shared_tensors(job: Job, rank: int, stage: nn.Module) -> list[tuple[Any, int, nn.Parameter]]:
    """(process group, its first rank, this rank's tensor) for each tensor that layers on
    several ranks share and this rank holds. Every rank makes every group (a collective)."""
    stage_of = {i: j for j, part in enumerate(job.partitions) for i in part}
    out = []
    for layer_of in job.model.shared:
        holders = {key: stage_of[i] for key, i in layer_of.items()}
        ranks = sorted(set(holders.values()))
        if len(ranks) < 2:
            continue  # held by one rank: one tensor there already
        group = dist.new_group(ranks)
        mine = [key for key, r in holders.items() if r == rank]
        if mine:
            out.append((group, ranks[0], stage.get_parameter(mine[0])))
    return out


def _init_process_group(job: Job, rank: int, world: int) -> None:
    """Join the job's process group: through the launcher's store on 127.0.0.1 (one machine; gloo
    and NCCL then listen on the loopback interface too), else torchrun's ``env://``."""
    timeout = timedelta(seconds=job.timeout_s)
    if job.master_addr is None:
        dist.init_process_group(job.backend, rank=rank, world_size=world, timeout=timeout, init_method="env://")
        return
    use_loopback()
    store = connect_store(job.master_addr, job.master_port, job.timeout_s)
    dist.init_process_group(job.backend, rank=rank, world_size=world, timeout=timeout, store=store)


def run_rank(rank: int, job: Job, world_size: int | None = None, local_rank: int | None = None) -> None:
    """Run rank ``rank`` of ``job``; writes its report (and outputs, grads) to ``job.out_dir``,
    and what :mod:`layerfit.runtime.faults` reads when the run fails."""
    world = world_size or len(job.partitions)
    local = rank if local_rank is None else local_rank
    recorder = RankRecorder(job.out_dir, rank)
    try:
        _init_process_group(job, rank, world)
        _run(rank, world, local, job)
    except BaseException as exc:
        # Said before this rank leaves the group: its peers fail next (a reset connection), and
        # the launcher names the rank whose own error came first.
        recorder.failed(exc)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    recorder.finished()
    recorder.close()


def _run(rank: int, world: int, local: int, job: Job) -> None:
    # The first stage's inputs need no gradient, so its backward hook fires on outputs only:
    # expected here, and only timed.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    device = _device(job, local)
    if device.type == "cpu" and job.threads:
        torch.set_num_threads(job.threads)
    first, last = rank == 0, rank == world - 1
    own = job.partitions[rank]
    root, loaded = job.model.build_stage(own, job.seed, device)
    # A chain's stage passes one activation on; a DAG's takes and gives every tensor crossing its boundaries.
    module = (job.graph.stage(root, job.partitions, rank) if job.graph is not None
              else job.model.source.stage(root, [job.model.names[i] for i in own]))
    shared = _shared_tensors(job, rank, module)
    with torch.no_grad():
        for group, first_rank, tensor in shared:
            dist.broadcast(tensor, src=first_rank, group=group)
    l2 = reserve_weights(module, device)  # the seed's step 4: the stage's weights in persisting L2
    meter = _Meter(module, first, last)
    param_bytes = sum(_nbytes(p) for p in module.parameters())
    stage = PipelineStage(module, rank, world, device)
    loss_fn = job.loss_fn or job.model.source.loss_fn() or nn.functional.mse_loss
    schedule = SCHEDULES[job.schedule](stage, n_microbatches=job.micro_batches, loss_fn=loss_fn if job.train else None)
    inputs = job.inputs.to(device) if first and job.inputs is not None else None
    target = job.target.to(device) if last and job.target is not None else None
    optimizer = OPTIMIZERS[job.optimizer](module.parameters(), lr=job.lr) if job.train and param_bytes else None
    args = (inputs,) if first else ()
    module.train(job.train)

    def step(losses: list[torch.Tensor]) -> Any:
        kwargs: dict[str, Any] = {"target": target, "losses": losses} if job.train and last else {}
        if not job.train:
            with torch.no_grad():
                return schedule.step(*args, **kwargs)
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
            return schedule.step(*args, **kwargs)

    step([])  # warm-up: shape inference and first allocations, outside the timing
    module.zero_grad(set_to_none=True)  # its gradients are discarded; no weight was updated
    meter.start_timing()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    dist.barrier()
    losses: list[torch.Tensor] = []
    output, grads, grad_bytes, state_bytes = None, {}, 0, 0
    busy = 0.0  # this rank's time in the timed steps; copying out what it reports is left out

    def timed(work: Any) -> Any:
        nonlocal busy
        started = time.perf_counter()
        result = work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        busy += time.perf_counter() - started
        return result

    def sum_shared() -> None:
        for group, _, tensor in shared:  # a shared tensor's gradient: the sum of its holders'
            if tensor.grad is None:
                tensor.grad = torch.zeros_like(tensor)
            dist.all_reduce(tensor.grad, group=group)

    def update() -> None:
        optimizer.step()  # type: ignore[union-attr]
        optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]

    for index in range(job.steps):
        result = timed(lambda: step(losses if index == 0 else []))
        if optimizer is not None:
            timed(sum_shared)
        if index == 0:  # the outputs and gradients at the initial weights
            output = result.detach().cpu().clone() if isinstance(result, torch.Tensor) else result
            if optimizer is not None:
                grads = {n: p.grad.detach().cpu().clone() for n, p in module.named_parameters() if p.grad is not None}
                grad_bytes = sum(_nbytes(g) for g in grads.values())
        if optimizer is not None:
            timed(update)
            if index == 0:  # the optimizer's state exists once it has stepped
                state_bytes = sum(_nbytes(value) for state in optimizer.state.values() for value in state.values())
    step_s = busy / job.steps
    dist.barrier()

    activation_bytes = sum(meter.layer_outputs.values())
    sent, received = meter.step_totals(job.steps)
    # The terms the plan adds up, each measured: activations (per micro-batch in inference; in
    # training what autograd saved and still held, at its peak; and what a DAG stage relays) beside
    # the weights, and in training the gradients and the optimizer's state.
    activations = meter.relayed_bytes + (meter.saved_peak if job.train else activation_bytes)
    held = param_bytes + activations + (grad_bytes + state_bytes if job.train else 0)
    report = {
        "rank": rank,
        "device": (job.devices or [None] * world)[rank] or str(device),
        "torch_device": str(device),
        "layers": module.layer_names,
        "predicted_bytes": job.predicted_bytes[rank] if job.predicted_bytes else None,
        "param_bytes": param_bytes,
        "predicted_weight_bytes": job.predicted_weight_bytes[rank] if job.predicted_weight_bytes else None,
        # What this rank read of the checkpoint (None: its weights came with the model, or were initialised).
        "loaded_bytes": loaded.get("bytes"),
        "loaded_keys": loaded.get("keys"),
        "predicted_activation_bytes": job.predicted_activation_bytes[rank] if job.predicted_activation_bytes else None,
        "activation_bytes": activations,
        "grad_bytes": grad_bytes if job.train else None,
        "optimizer_state_bytes": state_bytes if job.train else None,
        "activation_bytes_per_micro_batch": activation_bytes,
        "relayed_bytes_per_micro_batch": meter.relayed_bytes,
        "saved_for_backward_peak_bytes": meter.saved_peak if job.train else None,
        "measured_bytes": held,
        "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "l2_reservation": l2,
        "bytes_sent": sent,
        "bytes_received": received,
        "micro_batches": job.micro_batches,
        "steps": job.steps,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "forward_s_per_micro_batch": sum(meter.forward_times) / max(1, len(meter.forward_times)),
        "backward_s_per_micro_batch": sum(meter.backward_times) / len(meter.backward_times) if meter.backward_times else 0.0,
        "step_s": step_s,
        "loss": float(sum(l.item() for l in losses) / len(losses)) if losses else None,
        "pid": os.getpid(),
    }
    out = Path(job.out_dir)
    torch.save(report, out / f"report{rank}.pt")
    if job.train:
        torch.save(grads, out / f"grads{rank}.pt")
    if last:
        torch.save(output, out / "outputs.pt")
