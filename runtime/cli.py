"""``layerfit run PLACEMENT --model M``: launch the ranks with torchrun, print the report.

On one machine this process serves the rendezvous and the ranks' store on 127.0.0.1 (and the
ranks' gloo listens on loopback: :mod:`layerfit.runtime.loopback`); for clusters the usual
``--nnodes``, ``--node-rank`` and ``--rdzv-endpoint`` pass through to torchrun's c10d
rendezvous, and every node runs the same command. The ranks read the job as JSON and
safetensors (:mod:`layerfit.runtime.jobfile`); when they fail, the rank that failed first is
named with its own error (:mod:`layerfit.runtime.faults`). The model is ``package.module:factory`` (with ``--checkpoint`` to load its
weights, or ``--init random``) or a Hugging Face model directory. The batch comes from
``--inputs FILE``; else, for a directory, seeded random token ids of ``--batch`` × ``--seq-len``
(the labels to train on: the same ids); for a factory, its module's ``example_inputs(batch)``
(returning inputs, or (inputs, target) to train).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from layerfit import LayerfitError, load_instance

from .execute import ExecutionError, default_backend, load_placement, make_job, read_placement, summarise
from .faults import clear_records, first_failure
from .hf import HFSource, random_token_ids
from .jobfile import write_job
from .loopback import LOOPBACK, serve_store
from .model import INITS, ModelSource, prepare_model
from .rank import OPTIMIZERS, SCHEDULES, threads_per_rank

__all__ = ["main", "render_report"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerfit run", description=__doc__.splitlines()[0])
    p.add_argument("placement", help="a placement or plan JSON (partition j runs on rank j)")
    p.add_argument("--model", required=True, help="package.module:factory, or a Hugging Face model directory "
                                                  "(config.json and *.safetensors)")
    p.add_argument("--checkpoint", help="the weights each rank reads its own layers from: a safetensors file, a folder "
                                        "of shards, or a torch state_dict (weights only)")
    p.add_argument("--init", choices=INITS, help="seeded random weights instead of loaded ones (benchmarks)")
    p.add_argument("--inputs", help="the batch: a .safetensors file (tensors 'inputs' and 'target') or a .pt file (a "
                                    "tensor, or a dict with 'inputs' and 'target'), read as weights only")
    p.add_argument("--seq-len", type=int, help="a Hugging Face model's random token ids: the sequence length "
                                               "(default 128)")
    p.add_argument("--instance", help="the instance the plan was made for: the model's layer names and parameter "
                                      "counts are checked against it before any rank starts; a DAG's edges are followed")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--micro-batches", type=int, default=1)
    p.add_argument("--schedule", default="gpipe", choices=sorted(SCHEDULES))
    p.add_argument("--train", action="store_true", help="forward, backward and an optimizer step")
    p.add_argument("--optimizer", default="sgd", choices=sorted(OPTIMIZERS), help="training: plain SGD (no state) or Adam")
    p.add_argument("--steps", type=int, default=1, help="timed steps, after one untimed warm-up step")
    p.add_argument("--report", help="write the report as JSON here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a rank waits for the others")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int)
    p.add_argument("--rdzv-endpoint", help="host:port of the rendezvous (several nodes)")
    p.add_argument("--job-dir", help="where ranks write results (shared by the nodes); default: a temporary folder")
    return p


_FLAGS = {"batch": "--batch", "micro_batches": "--micro-batches", "schedule": "--schedule", "steps": "--steps",
          "timeout_s": "--timeout", "optimizer": "--optimizer", "inputs": "--inputs"}


def _read_inputs(path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``--inputs``: (inputs, target or None) from a safetensors or weights-only torch file."""
    file = Path(path)
    if not file.is_file():
        raise ExecutionError(f"--inputs: no such file {path!r}")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors: Any = load_file(str(file))
        else:
            tensors = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ExecutionError(f"--inputs: {path} holds objects other than tensors, which layerfit does not unpickle; "
                             "save a tensor, or a dict of tensors 'inputs' and 'target'") from None
    except Exception as exc:  # unreadable: said in one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ExecutionError(f"--inputs: cannot read {path} ({type(exc).__name__}: {first})") from None
    if isinstance(tensors, torch.Tensor):
        return tensors, None
    if not isinstance(tensors, dict) or not isinstance(tensors.get("inputs"), torch.Tensor) \
            or not isinstance(tensors.get("target", torch.empty(0)), torch.Tensor):
        raise ExecutionError(f"--inputs: {path} holds neither a tensor nor tensors named 'inputs' (and 'target')")
    return tensors["inputs"], tensors.get("target")


def _inputs(args: argparse.Namespace, source: ModelSource) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch of the run: ``--inputs``, a directory's random token ids, or ``example_inputs``."""
    hf = isinstance(source, HFSource)
    if args.seq_len is not None and (not hf or args.inputs):
        raise ExecutionError("--seq-len: sets the random token ids of a Hugging Face model directory; "
                             + ("--inputs gives the batch" if hf else f"{args.model} is not one"))
    if args.inputs:
        inputs, target = _read_inputs(args.inputs)
    elif hf:
        seq_len = 128 if args.seq_len is None else args.seq_len
        if seq_len < 1:
            raise ExecutionError(f"--seq-len: expected a positive number of tokens, got {seq_len}")
        inputs, target = random_token_ids(source.config, args.batch, seq_len, args.seed), None
    else:
        module = importlib.import_module(args.model.partition(":")[0])
        make = getattr(module, "example_inputs", None)
        if make is None:
            raise ExecutionError(f"--model: {module.__name__} has no example_inputs(batch) to make a batch from; "
                                 "give --inputs")
        made = make(args.batch, args.seed) if "seed" in make.__code__.co_varnames else make(args.batch)
        inputs, target = made if isinstance(made, tuple) else (made, None)
    if hf and target is None:
        target = inputs  # language modelling: the labels are the inputs, shifted by the loss
    if args.train and target is None:
        raise ExecutionError("--train: no target to train on (" + ("--inputs has none named 'target'" if args.inputs
                                                                    else "example_inputs returned none") + ")")
    return inputs, target


def _device_label(rank: dict) -> str:
    """The placement's device name, and where the rank ran when that differs (a CPU stand-in)."""
    named, ran = rank["device"], rank["torch_device"]
    return ran if named == ran else f"{named}@{ran}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def render_report(report: dict) -> str:
    ranks = report["ranks"]
    spans = [r["layers"][0] if len(r["layers"]) == 1 else f"{r['layers'][0]} … {r['layers'][-1]}" for r in ranks]
    width = max(6, *(len(span) for span in spans))
    lines = [
        f"{report['stages']} ranks ({report['backend']}), schedule {report['schedule']}, {report['micro_batches']} "
        f"micro-batch{'es' if report['micro_batches'] > 1 else ''} of {report['batch'] // report['micro_batches']}: "
        f"step {report['step_s'] * 1e3:.1f} ms (mean of {report['steps']} after a warm-up), "
        f"{report['throughput_samples_per_s']:.1f} samples/s; bubble {100 * report['measured_bubble_fraction']:.0f}% "
        f"measured, {100 * report['theoretical_bubble_fraction']:.0f}% in theory"
        + (f"; loss {report['loss']:.4f}" if report.get("loss") is not None else ""),
        "",
        f"{'rank':>4}  {'device':<12} {'layers':<{width}} {'predicted':>11} {'measured':>11} {'ratio':>6} {'sent':>10} "
        f"{'received':>10} {'fwd/mb':>9}",
    ]
    for r, span in zip(ranks, spans):
        lines.append(
            f"{r['rank']:>4}  {_device_label(r):<12} {span:<{width}} {_bytes(r['predicted_bytes']):>11} "
            f"{r['measured_bytes']:>11,} {_ratio(r['measured_over_predicted']):>6} {r['bytes_sent']:>10,} "
            f"{r['bytes_received']:>10,} {r['forward_s_per_micro_batch'] * 1e3:>7.2f}ms"
        )
    lines += ["", "measured = parameter bytes + activations (training: gradients + optimizer state + what autograd "
                  "saved for backward and still holds, at its peak); predicted = the plan's S(P). Bytes are exact; on "
                  "CUDA, cuda_max_allocated_bytes is in the JSON."]
    if report.get("note"):
        lines.append(f"note: {report['note']}.")
    if any(r["predicted_weight_bytes"] is not None or r["loaded_bytes"] is not None for r in ranks):
        lines += ["", f"{'rank':>4}  {'weights':>13} {'parameters':>13} {'read':>13} {'activations':>13} {'measured':>13} "
                      f"{'ratio':>6}",
                  f"{'':>4}  {'(predicted)':>13} {'(held)':>13} {'(checkpoint)':>13} {'(predicted)':>13} {'':>13} {'':>6}"]
        for r in ranks:
            lines.append(f"{r['rank']:>4}  {_bytes(r['predicted_weight_bytes']):>13} {r['param_bytes']:>13,} "
                         f"{_bytes(r['loaded_bytes']):>13} {_bytes(r['predicted_activation_bytes']):>13} "
                         f"{r['activation_bytes']:>13,} {_ratio(r['activations_measured_over_predicted']):>6}")
        lines += ["", f"predicted: {report['prediction']}; activations: "
                      + ("saved for backward, at the peak" if report.get("train") else "each layer's output, one "
                         "micro-batch")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except LayerfitError as exc:  # a bad plan, model or option: named, before any rank starts
        print(f"layerfit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layerfit: interrupted; torchrun stopped the ranks", file=sys.stderr)
        return 130


def _launch(command: list[str], env: dict[str, str]) -> int:
    """Run torchrun and return its exit code. An interrupt is passed on to torchrun, which
    stops its ranks; torchrun is killed only if it has not exited after a grace period."""
    process = subprocess.Popen(command, env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise


def _job_dir(chosen: str | None) -> Path:
    """The job's folder: ``--job-dir`` (made private, 0700, when layerfit makes it), else a new
    private temporary folder."""
    if chosen is None:
        return Path(tempfile.mkdtemp(prefix="layerfit-run-"))  # 0700
    folder = Path(chosen)
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700)
    return folder


def _run(args: argparse.Namespace) -> int:
    placed = read_placement(args.placement)
    partitions, _, _, num_layers = load_placement(placed)
    instance = load_instance(args.instance) if args.instance else None
    prepared = prepare_model(args.model, num_layers, instance, checkpoint=args.checkpoint, init=args.init)
    world = len(partitions)
    if args.nnodes < 1 or world % args.nnodes:
        raise ExecutionError(f"--nnodes: {world} ranks do not split evenly over {args.nnodes} nodes")
    if args.node_rank is not None and not 0 <= args.node_rank < args.nnodes:
        raise ExecutionError(f"--node-rank: expected 0 to {args.nnodes - 1} for {args.nnodes} nodes, got {args.node_rank}")
    endpoint = args.rdzv_endpoint or "127.0.0.1:29400"
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ExecutionError(f"--rdzv-endpoint: expected HOST:PORT, got {args.rdzv_endpoint!r}")
    per_node = world // args.nnodes
    if args.batch < 1:  # before a batch of random token ids is made from it
        raise ExecutionError(f"--batch: the batch needs at least one sample, got {args.batch}")
    inputs, target = _inputs(args, prepared.source)
    job = make_job(placed, prepared, inputs, target, instance=instance, micro_batches=args.micro_batches,
                   schedule=args.schedule, train=args.train, steps=args.steps, timeout_s=args.timeout,
                   optimizer=args.optimizer, names=_FLAGS, backend=default_backend(per_node), master_addr=None,
                   master_port=None, out_dir="", seed=args.seed, threads=threads_per_rank(per_node))
    one_machine = args.nnodes == 1
    # One machine: this process serves the rendezvous (torchrun's agent joins it as a client) and
    # the ranks' store, on 127.0.0.1 only; several nodes: torchrun's own c10d rendezvous.
    try:
        store = serve_store(int(port) if args.rdzv_endpoint else 0, args.timeout) if one_machine else None
    except OSError as exc:  # the port given is taken
        raise ExecutionError(f"--rdzv-endpoint: cannot listen on {LOOPBACK}:{port} ({exc.strerror or exc})") from None
    if store is not None:
        job.master_addr, job.master_port = LOOPBACK, store.port
    job_dir = _job_dir(args.job_dir)  # made once the job is known to be good
    if one_machine:
        clear_records(job_dir)  # what an earlier run left there would be read as this run's
    job.out_dir = str(job_dir)
    job_file = write_job(job, job_dir, instance)
    failures = job_dir / f"failures-{socket.gethostname()}-{os.getpid()}.json"
    command = [sys.executable, "-m", "layerfit.runtime.torchrun", str(failures), f"--nproc-per-node={per_node}",
               f"--nnodes={args.nnodes}", "--rdzv-backend=c10d"]
    env = dict(os.environ)
    if store is not None:
        command += [f"--rdzv-endpoint={LOOPBACK}:{store.port}", f"--local-addr={LOOPBACK}",
                    f"--rdzv-conf=is_host=false,join_timeout={int(args.timeout)}"]
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"  # else torchrun's agent serves the ranks a store on *:port
    else:
        command += [f"--rdzv-endpoint={endpoint}",
                    # A rendezvous that cannot form fails within the timeout instead of waiting on.
                    f"--rdzv-conf=join_timeout={int(args.timeout)}"]
        if args.node_rank is not None:
            command.append(f"--node-rank={args.node_rank}")
    command += ["-m", "layerfit.runtime.worker", str(job_file)]
    env.setdefault("OMP_NUM_THREADS", str(job.threads))  # else torchrun sets 1, with a warning
    code = _launch(command, env)
    del store
    if code != 0:
        seen = json.loads(failures.read_text()) if failures.exists() else {}
        if not seen and not list(job_dir.glob("state*.json")):  # no rank of this node started
            print(f"layerfit: error: the ranks failed (torchrun exit code {code}); see torchrun's report above "
                  f"(RendezvousTimeoutError: not every node joined within {args.timeout:g} s)", file=sys.stderr)
            return 1
        exits = {int(rank): failure["exitcode"] for rank, failure in seen.items()}
        _, message, _ = first_failure(job_dir, world, exits, args.timeout)
        print(f"layerfit: error: {message}; the other ranks were stopped", file=sys.stderr)
        return 1
    reports = sorted((torch.load(p, map_location="cpu", weights_only=True) for p in job_dir.glob("report*.pt")),
                     key=lambda r: r["rank"])
    if len(reports) != world:
        print(f"layerfit: this node's ranks finished; reports for {len(reports)} of {world} ranks are in {job_dir}")
        return 0
    report = summarise(reports, job)
    print(render_report(report))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0
