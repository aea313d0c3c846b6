"""``layerfit run PLACEMENT --model SPEC``: launch the ranks with torchrun, print the report.

On one machine torchrun runs standalone (rendezvous on 127.0.0.1); for clusters the usual
``--nnodes``, ``--node-rank`` and ``--rdzv-endpoint`` pass through, and every node runs the
same command. The model spec is ``package.module:factory``; the batch comes from the same
module's ``example_inputs(batch)`` (returning inputs, or (inputs, target) to train).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from solver import LayerfitError, load_instance

from .execute import (ExecutionError, check_run, default_backend, describe_error, graph_of, load_placement,
                      recorded_errors, summarise)
from .model import check_layers, meta_layers
from .rank import OPTIMIZERS, SCHEDULES, Job, threads_per_rank

__all__ = ["main", "render_report"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerfit run", description=__doc__.splitlines()[0])
    p.add_argument("placement", help="a placement or plan JSON (partition j runs on rank j)")
    p.add_argument("--model", required=True, help="package.module:factory")
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
          "timeout_s": "--timeout", "optimizer": "--optimizer"}


def _inputs(spec: str, batch: int, seed: int, train: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    module = importlib.import_module(spec.partition(":")[0])
    make = getattr(module, "example_inputs", None)
    if make is None:
        raise ExecutionError(f"--model: {module.__name__} has no example_inputs(batch) to make a batch from")
    made = make(batch, seed) if "seed" in make.__code__.co_varnames else make(batch)
    inputs, target = made if isinstance(made, tuple) else (made, None)
    if train and target is None:
        raise ExecutionError("--train: example_inputs returned no target")
    return inputs, target


def _device_label(rank: dict) -> str:
    """The placement's device name, and where the rank ran when that differs (a CPU stand-in)."""
    named, ran = rank["device"], rank["torch_device"]
    return ran if named == ran else f"{named}@{ran}"


def render_report(report: dict) -> str:
    lines = [
        f"{report['stages']} ranks ({report['backend']}), schedule {report['schedule']}, {report['micro_batches']} "
        f"micro-batches of {report['batch'] // report['micro_batches']}: step {report['step_s'] * 1e3:.1f} ms "
        f"(mean of {report['steps']} after a warm-up), "
        f"{report['throughput_samples_per_s']:.1f} samples/s; bubble {100 * report['measured_bubble_fraction']:.0f}% "
        f"measured, {100 * report['theoretical_bubble_fraction']:.0f}% in theory",
        "",
        f"{'rank':>4}  {'device':<12} {'layers':<22} {'predicted':>11} {'measured':>11} {'ratio':>6} {'sent':>10} "
        f"{'received':>10} {'fwd/mb':>9}",
    ]
    for r in report["ranks"]:
        layers = r["layers"][0] if len(r["layers"]) == 1 else f"{r['layers'][0]} … {r['layers'][-1]}"
        ratio = r["measured_over_predicted"]
        lines.append(
            f"{r['rank']:>4}  {_device_label(r):<12} {layers:<22} {r['predicted_bytes']:>11,} {r['measured_bytes']:>11,} "
            f"{'-' if ratio is None else f'{ratio:.2f}':>6} {r['bytes_sent']:>10,} {r['bytes_received']:>10,} "
            f"{r['forward_s_per_micro_batch'] * 1e3:>7.2f}ms"
        )
    lines.append("")
    lines.append("measured = parameter bytes + activations (training: gradients + optimizer state + what autograd saved "
                 "for backward and still holds, at its peak); predicted = the plan's S(P). Bytes are exact; on CUDA, "
                 "cuda_max_allocated_bytes is in the JSON.")
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


def _run(args: argparse.Namespace) -> int:
    partitions, predicted, devices, num_layers = load_placement(args.placement)
    layers, _ = meta_layers(args.model)
    instance = load_instance(args.instance) if args.instance else None
    check_layers(layers, num_layers, instance)
    graph = graph_of(partitions, instance)
    world = len(partitions)
    check_run(world, args.batch, args.micro_batches, args.schedule, args.steps, args.timeout, args.optimizer,
              names=_FLAGS)
    if args.nnodes < 1 or world % args.nnodes:
        raise ExecutionError(f"--nnodes: {world} ranks do not split evenly over {args.nnodes} nodes")
    if args.node_rank is not None and not 0 <= args.node_rank < args.nnodes:
        raise ExecutionError(f"--node-rank: expected 0 to {args.nnodes - 1} for {args.nnodes} nodes, got {args.node_rank}")
    endpoint = args.rdzv_endpoint or "127.0.0.1:29400"
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ExecutionError(f"--rdzv-endpoint: expected HOST:PORT, got {args.rdzv_endpoint!r}")
    per_node = world // args.nnodes
    inputs, target = _inputs(args.model, args.batch, args.seed, args.train)
    torchrun = shutil.which("torchrun")
    job_dir = Path(args.job_dir or tempfile.mkdtemp(prefix="layerfit-run-"))
    job_dir.mkdir(parents=True, exist_ok=True)
    job = Job(
        partitions=partitions, predicted_bytes=predicted, devices=devices, model=args.model, inputs=inputs,
        target=target, micro_batches=args.micro_batches, schedule=args.schedule, train=args.train,
        backend=default_backend(per_node), master_addr=None, master_port=None, out_dir=str(job_dir),
        timeout_s=args.timeout, seed=args.seed, steps=args.steps, optimizer=args.optimizer, graph=graph,
        threads=threads_per_rank(per_node),
    )
    job_file = job_dir / "job.pt"
    torch.save(job, job_file)
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    command = [*launcher, f"--nproc-per-node={per_node}"]
    if args.nnodes == 1 and args.rdzv_endpoint is None:
        command.append("--standalone")  # rendezvous on 127.0.0.1, a free port
    else:
        command += [f"--nnodes={args.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                    # A rendezvous that cannot form fails within the timeout instead of waiting on.
                    f"--rdzv-conf=join_timeout={int(args.timeout)}"]
        if args.node_rank is not None:
            command.append(f"--node-rank={args.node_rank}")
    command += ["-m", "runtime.worker", str(job_file)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(job.threads))  # else torchrun sets 1, with a warning
    code = _launch(command, env)
    if code != 0:
        errors = recorded_errors(job_dir)
        if errors:
            print(f"layerfit: error: {describe_error(errors[0])}; the other ranks were stopped", file=sys.stderr)
        else:
            print(f"layerfit: error: the ranks failed (torchrun exit code {code}); see torchrun's report above "
                  f"(RendezvousTimeoutError: not every node joined within {args.timeout:g} s)", file=sys.stderr)
        return 1
    reports = sorted((torch.load(p) for p in job_dir.glob("report*.pt")), key=lambda r: r["rank"])
    if len(reports) != world:
        print(f"layerfit: this node's ranks finished; reports for {len(reports)} of {world} ranks are in {job_dir}")
        return 0
    report = summarise(reports, inputs.shape[0], args.schedule, args.micro_batches, job.backend)
    print(render_report(report))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0
