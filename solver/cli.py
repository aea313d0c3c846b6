"""The ``layerfit`` command line: ``solve`` one instance, ``compare`` methods over many,
``map`` a plan onto GPUs, ``import`` a Hugging Face config, ``export`` a plan to a framework,
and ``plan``: a config.json and a GPU name to a framework's flags in one command.

Exit codes: 0 solved (optimal or feasible), 1 infeasible or no solution in time,
2 bad input or usage. ``--json`` prints one JSON document on stdout and nothing else.
Sizes are printed in SI units (1 MB = 10**6 B). Text output fits 120 columns: tables drop
their longest names' middles before they overflow, and prose wraps; ``compare --wide`` adds
the balance and timing columns, and ``--json`` gives everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from .errors import LayerfitError, OptionError
from .model.instance import Device, Instance, load_instance, read_json
from .model.plan import OBJECTIVES, Plan, Status
from .solve import METHODS, solve
from .model.gpus import GPU, GPUS, find_gpu, parse_capacity
from .model.memory import usable_capacity
from .model.units import format_bytes, format_size, parse_size

__all__ = ["main"]

EXIT_SOLVED, EXIT_NO_PLAN, EXIT_BAD_INPUT = 0, 1, 2
COMPARE_METHODS = ("greedy", "dp", "cpsat", "mip", "mip:highs")
VLLM_BLOCK = 16  # vLLM's default KV-cache block size, in tokens
PLAN_SEQ_LEN = 4096  # `layerfit plan`'s default sequence length: the config's context, at most this
WIDTH = 120  # columns of text output (tables and prose), as a terminal or a pull request shows it


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one line, exit 2
        self.print_usage(sys.stderr)
        print(f"layerfit: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="layerfit", description="Partition a model's layers into pieces that fit a capacity.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("solve", help="solve one instance and print its plan")
    p.add_argument("file", help="instance JSON (v1 or the seed shorthand)")
    p.add_argument("--method", default="auto", help=f"one of {', '.join(METHODS)} (default: auto)")
    p.add_argument("--objective", default="min_partitions", help=f"one of {', '.join(OBJECTIVES)}")
    p.add_argument("--num-partitions", type=int, help="k, for --objective min_bottleneck")
    p.add_argument("--time-limit", type=float, help="seconds for CP-SAT / MIP")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, help="CP-SAT workers (--method cpsat)")
    p.add_argument("--backend", help="MIP backend: cbc or highs (--method mip)")
    p.add_argument("--warm-start", help="greedy, dp or none (--method cpsat / mip)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON only")
    p.add_argument("--timing", action="store_true", help="with --json, include solve_time_s (the wall time; without "
                                                         "it the JSON of a deterministic method is byte-identical)")

    c = sub.add_parser("compare", help="greedy against the exact methods over instances, one table")
    c.add_argument("paths", nargs="*", default=["instances"], help="instance files or folders (default: instances)")
    c.add_argument(
        "--methods",
        default=",".join(COMPARE_METHODS),
        help=f"comma-separated, from {', '.join(COMPARE_METHODS)} (default: all)",
    )
    c.add_argument("--time-limit", type=float, default=10.0, help="seconds per exact solve (default: 10)")
    c.add_argument("--max-layers", type=int, help="skip instances with more layers")
    c.add_argument("--wide", action="store_true", help="add the balance and each method's time (wider than 120 columns)")
    c.add_argument("--json", action="store_true", help="print the table as JSON only")

    sub.add_parser("run", help="run a placement with torch.distributed via torchrun (layerfit run --help)", add_help=False)
    m = sub.add_parser("map", help="place a plan's partitions on the GPUs of a topology")
    m.add_argument("file", help="an instance JSON (solved first), or a plan JSON with --instance")
    m.add_argument("--topology", required=True, help="preset name (e.g. dgx-h100, 4×dgx-h100) or `nvidia-smi topo -m` file")
    m.add_argument("--instance", help="the instance a plan JSON was made for")
    m.add_argument("--num-partitions", type=int, help="solve the instance with min_bottleneck and k partitions")
    m.add_argument("--objective", default="min_bottleneck", help="min_bottleneck (slowest boundary) or min_total")
    m.add_argument("--bandwidth-matrix", help="measured P2P bandwidth (GB/s, p2pBandwidthLatencyTest layout)")
    m.add_argument("--plot", metavar="PNG", help="draw the GPUs, links and the placement into a PNG")
    m.add_argument("--json", action="store_true", help="print the placement as JSON only")
    m.add_argument("--timing", action="store_true", help="with --json, include solve_time_s (the wall time)")

    i = sub.add_parser("import", help="an instance from a Hugging Face config.json")
    i.add_argument("config", help="config.json of a Llama, Mistral, Mixtral, Qwen2, Qwen3(-MoE), Gemma 2/3 (text), "
                   "Phi-3, OLMo 2, DeepSeek-V2/V3, GPT-OSS, Falcon, GPT-2 or BERT checkpoint")
    i.add_argument("--batch-size", type=int, required=True)
    i.add_argument("--seq-len", type=int, required=True)
    i.add_argument("--dtype", help="weights (default: the config's dtype, or torch_dtype in older configs)")
    i.add_argument("--activation-dtype", help="activations and KV cache (default: --dtype if 16/32-bit, else bf16)")
    i.add_argument("--training", action="store_true", help="saved activations and mixed-precision Adam state")
    i.add_argument("--kv-cache", action="store_true", help="hold each block's KV cache (inference)")
    i.add_argument("--split", default="block", help="block (default) or sublayer (attention and MLP apart)")
    i.add_argument("--via", default="config", choices=("config", "transformers"),
                   help="config (default: from_hf_config, no torch) or transformers (runtime.from_hf_model: builds "
                        "the model on fake tensors and measures it; any architecture; needs layerfit[hf])")
    i.add_argument("--capacity", help="partition capacity, e.g. 80GB (default: the whole model, one partition)")
    _gpu_options(i)
    _serving_options(i)
    i.add_argument("--name", help="instance name (default: the config file's stem)")
    i.add_argument("--flops-per-s", type=float, help="device throughput: each layer's time = its FLOPs / this")
    i.add_argument("-o", "--output", help="write the instance JSON here (default: stdout)")

    pl = sub.add_parser("plan", help="a config.json to a framework's flags: import, solve, place, export")
    pl.add_argument("config", help="config.json of a Llama, Mistral, Mixtral, Qwen2, GPT-2 or BERT checkpoint")
    pl.add_argument("--to", required=True, dest="target", help="vllm, megatron, deepspeed, accelerate or pippy")
    pl.add_argument("--capacity", help="each GPU's memory as a size, e.g. 80GB, instead of --gpu")
    _gpu_options(pl)
    pl.add_argument("--topology", help="place the stages on a topology: preset name or `nvidia-smi topo -m` file")
    pl.add_argument("--batch-size", type=int, default=1, help="batch (per micro-batch) (default: 1)")
    pl.add_argument("--seq-len", type=int,
                    help=f"sequence length (default: the config's max_position_embeddings, at most {PLAN_SEQ_LEN})")
    pl.add_argument("--dtype", help="weights (default: the config's dtype)")
    pl.add_argument("--activation-dtype", help="activations and KV cache (default: --dtype if 16/32-bit, else bf16)")
    pl.add_argument("--training", action="store_true", help="saved activations and mixed-precision Adam state")
    pl.add_argument("--kv-cache", action="store_true", help="hold each block's KV cache (inference)")
    pl.add_argument("--split", default="block", help="block (default) or sublayer (attention and MLP apart)")
    pl.add_argument("--objective", help="min_partitions (default), or with --gpus min_bottleneck (its default), "
                                        "min_utilization or max-kv-tokens (the most KV-cache tokens a serving "
                                        "engine gets; imports serving memory)")
    _serving_options(pl)
    pl.add_argument("--time-limit", type=float, help="seconds for an exact solve that is not the DP")
    pl.add_argument("--name", help="instance name (default: the config file's stem)")
    pl.add_argument("--json", action="store_true", help="print the instance summary, plan, placement and export as JSON")

    e = sub.add_parser("export", help="a plan as DeepSpeed, Megatron, vLLM, torch.distributed.pipelining or accelerate take it")
    e.add_argument("file", help="an instance JSON (solved first), or a plan or placement JSON with --instance")
    e.add_argument("--to", required=True, dest="target", help="deepspeed, megatron, vllm, pippy or accelerate")
    e.add_argument("--instance", help="the instance a plan JSON was made for")
    e.add_argument("--num-partitions", type=int, help="solve the instance with min_bottleneck and k partitions")
    e.add_argument("--json", action="store_true", help="print the export as JSON only")
    return parser


def _serving_options(p: argparse.ArgumentParser) -> None:
    """The memory vLLM holds when it serves (layerfit.interop.serving.Serving); its defaults."""
    p.add_argument("--serving", action="store_true", help="the memory vLLM holds when serving: KV cache per token, "
                   "one scheduler step's activations, the sampler's logits (implied by --objective max-kv-tokens)")
    p.add_argument("--kv-cache-dtype", help="the KV cache's dtype, e.g. fp8 (default: the activation dtype)")
    p.add_argument("--max-num-batched-tokens", type=int, help="vLLM's tokens per scheduler step (default: 8192)")
    p.add_argument("--max-num-seqs", type=int, help="vLLM's most sequences per step (default: 256)")
    p.add_argument("--gpu-memory-utilization", type=float, help="vLLM's share of each GPU (default: 0.9)")


def _gpu_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", help=f"the GPU: its memory is the capacity ({', '.join(GPUS)})")
    p.add_argument("--gpus", type=int, help="an ordered pool of N such GPUs (GPU0 … GPUN-1)")
    p.add_argument("--reserve", help="held back on every GPU, e.g. 4GiB or 0 (default: the GPU's default reserve)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        # The runtime needs torch; planning never imports it (runtime.cli parses its own options).
        try:
            from layerfit.runtime.cli import main as run_main
        except ImportError as exc:
            print(f"layerfit: error: `layerfit run` needs torch ({exc}); pip install 'layerfit[runtime]'", file=sys.stderr)
            return EXIT_BAD_INPUT
        return run_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "solve":
            return _solve(args)
        if args.command == "map":
            return _map(args)
        if args.command == "import":
            return _import(args)
        if args.command == "export":
            return _export(args)
        if args.command == "plan":
            return _plan(args)
        return _compare(args)
    except LayerfitError as exc:
        print(f"layerfit: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # the reader went away (`layerfit compare | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exiting flushes nowhere
        return EXIT_SOLVED


# -- solve ----------------------------------------------------------------------------


def _solve(args: argparse.Namespace) -> int:
    instance = load_instance(args.file)
    plan = solve(
        instance,
        args.method,
        objective=args.objective.replace("-", "_"),  # max-kv-tokens as the plan command spells it
        num_partitions=args.num_partitions,
        time_limit=args.time_limit,
        seed=args.seed,
        num_workers=args.workers,
        backend=args.backend,
        warm_start=args.warm_start,
    )
    if args.json:
        print(json.dumps(_timed(plan.to_dict(), args), indent=2))
    else:
        print(render_plan(instance, plan))
    return EXIT_SOLVED if plan.status.has_plan else EXIT_NO_PLAN


def _timed(document: dict, args: argparse.Namespace) -> dict:
    """A plan's or placement's JSON as ``--json`` prints it: without its wall time unless
    ``--timing`` asks for it, so that a deterministic method prints the same bytes every run
    (a plan read back without ``solve_time_s`` has 0.0)."""
    if not getattr(args, "timing", False):
        document = {key: value for key, value in document.items() if key != "solve_time_s"}
    return document


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool], *,
           width: int | None = WIDTH, shrink: int = 1) -> list[str]:
    """Aligned columns, two spaces apart. Wider than ``width``, column ``shrink`` (names) gives
    up the difference: its longest cells lose their middle to "…"."""
    widths = [max(len(h), *(len(r[c]) for r in rows)) if rows else len(h) for c, h in enumerate(header)]
    over = sum(widths) + 2 * (len(widths) - 1) - width if width is not None else 0
    if over > 0 and widths[shrink] - over >= len(header[shrink]):
        widths[shrink] -= over
        rows = [[*r[:shrink], _middle(r[shrink], widths[shrink]), *r[shrink + 1:]] for r in rows]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: its middle replaced by "…" when too long."""
    if len(text) <= width:
        return text
    head = width // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def _wrap(text: str) -> str:
    """Prose in lines of at most WIDTH columns; a wrapped line's continuation is indented."""
    lines = []
    for line in text.splitlines():
        indent = line[:len(line) - len(line.lstrip())]
        lines.extend(textwrap.wrap(line, WIDTH, subsequent_indent=indent + "  ", break_long_words=False,
                                   break_on_hyphens=False) or [""])
    return "\n".join(lines)


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def render_plan(instance: Instance, plan: Plan) -> str:
    """A readable report of one plan: partitions, bytes, utilization, balance, traffic."""
    reserve = instance.constraints.reserve
    out = [
        f"instance {instance.name}: {instance.num_layers} layers, capacity "
        f"{format_size(instance.capacity)} ({instance.capacity:,} B"
        + (", the largest device's" if instance.capacity_from_devices else "") + ")"
        + (f" less a reserve of {format_size(reserve)} on each device" if reserve else "")
        + "; sizes in SI units (1 GB = 10^9 B)",
        f"method {plan.method}" + (f" ({plan.backend})" if plan.backend else "")
        + f", objective {plan.objective_name}: {plan.status}"
        + (f" [backend: {plan.backend_status}]" if plan.backend_status else "")
        + f", {plan.solve_time_s * 1000:.1f} ms",
    ]
    if not plan.status.has_plan:
        if plan.explanation:
            out.append(plan.explanation)
        return _wrap("\n".join(out))
    m = plan.metrics
    if plan.objective_name == "min_partitions":
        out.append(
            f"partitions: {plan.num_partitions} (proven lower bound {plan.bound:g}); largest partition "
            f"{format_size(plan.secondary_objective or 0)} (lower bound {format_size(plan.secondary_bound or 0)}, "
            f"gap {_percent(plan.gap or 0.0)})"
        )
    elif plan.objective_name == "min_utilization":
        out.append(
            f"partitions: {plan.num_partitions} (requested); largest utilization {_percent(plan.objective or 0.0)} "
            f"of its device (lower bound {_percent(plan.bound or 0.0)}); largest partition {format_size(m['max_bytes'])}"
        )
    elif plan.objective_name == "max_kv_tokens":
        binding = m["kv_tokens"]["binding_stage"]
        out.append(
            f"partitions: {plan.num_partitions} (requested); KV cache for {plan.objective:,} tokens (upper bound "
            f"{plan.bound:,}, gap {_percent(plan.gap or 0.0)}), {format_size(m['kv_tokens']['bytes_per_token'])} a "
            f"token; stage {binding} binds"
        )
    elif plan.objective_name == "min_stage_time":
        out.append(
            f"partitions: {plan.num_partitions} (requested); slowest stage {_seconds(plan.objective or 0.0)} "
            f"(lower bound {_seconds(plan.bound or 0.0)}, gap {_percent(plan.gap or 0.0)}); largest partition "
            f"{format_size(m['max_bytes'])}"
        )
    else:
        out.append(
            f"partitions: {plan.num_partitions} (requested); largest partition {format_size(plan.objective or 0)} "
            f"(lower bound {format_size(plan.bound or 0)}, gap {_percent(plan.gap or 0.0)})"
        )
    header = ["#", "layers", "n", "bytes", "weights", "activations", "buffers", "utilization"]
    has_state = any(row.get("training_state_bytes") for row in m["partitions"])
    has_kv = any(row.get("kv_cache_bytes") for row in m["partitions"])
    has_tokens = "kv_tokens" in m
    if has_tokens:
        header.insert(7, "KV tokens")
    if has_kv:
        header.insert(7, "KV cache")
    if has_state:
        header.insert(7, "training state")
    has_device = "device" in m["partitions"][0]
    if has_device:
        header.insert(1, "device")
    has_time = "max_time" in m
    if has_time:
        header.append("time")
    rows = []
    for row in m["partitions"]:
        span = row["first_layer"] if row["num_layers"] == 1 else f"{row['first_layer']} … {row['last_layer']}"
        cells = [
            str(row["index"]), span, str(row["num_layers"]), format_size(row["bytes"]),
            format_size(row["weight_bytes"]), format_size(row["activation_bytes"]),
            format_size(row["buffer_bytes"]), _percent(row["utilization"]),
        ]
        if has_tokens:
            tokens = row["kv_tokens"]
            cells.insert(7, "any" if tokens is None else f"{tokens:,}" if tokens >= 0 else "none fit")
        if has_kv:
            cells.insert(7, format_size(row["kv_cache_bytes"]))
        if has_state:
            cells.insert(7, format_size(row["training_state_bytes"]))
        if has_device:
            cells.insert(1, row["device"])
        if has_time:
            cells.append(_seconds(row["time"]))
        rows.append(cells)
    shown = rows if len(rows) <= 40 else [*rows[:20], ["…"] * len(header), *rows[-20:]]
    table = _table(header, shown, [True, False, *([False] if has_device else []),
                                   *[True] * (len(header) - 2 - has_device)], shrink=1 + has_device)
    b, c = m["balance"], m["communication"]
    after = [
        f"balance: max/mean {b['max_over_mean']:.3f}, coefficient of variation {b['cv']:.3f}, "
        f"min {format_size(b['min_bytes'])}, max {format_size(b['max_bytes'])}",
        f"traffic: {c['transfers']} transfer{'s' if c['transfers'] != 1 else ''} per batch, "
        f"{format_size(c['total_bytes'])} in all, the largest {format_size(c['max_bytes'])}",
    ]
    if "pipeline" in m:
        pipe = m["pipeline"]
        after.append(
            f"pipeline: slowest stage {_seconds(m['max_time'])}; {pipe['micro_batches']} micro-batch"
            f"{'es' if pipe['micro_batches'] != 1 else ''} in {_seconds(pipe['batch_time_s'])} "
            f"({pipe['micro_batches_per_s']:.4g} per second), bubble {_percent(pipe['bubble_fraction'])}"
        )
    if plan.explanation:
        after.append(f"note: {plan.explanation}")
    return "\n".join([_wrap("\n".join(out)), "", *table, "", _wrap("\n".join(after))])


# -- map ------------------------------------------------------------------------------


def _plan_of(args: argparse.Namespace, *, placements: bool = False):  # type: ignore[no-untyped-def]
    """The instance and plan a command works on: a plan (or placement) JSON with --instance,
    or an instance JSON solved here (min_bottleneck with --num-partitions)."""
    path = Path(args.file)
    raw = read_json(path)
    if isinstance(raw, dict) and "partitions" in raw:  # no instance has partitions: a plan or placement
        if not args.instance:
            raise LayerfitError(f"{path} is a plan: give the instance it was made for with --instance")
        instance = load_instance(args.instance)
        from .errors import PlanError
        from .report.validation import validate_placement, validate_plan

        try:  # checked against the instance before anything else reads it; errors name the file
            if placements and "topology_name" in raw:  # a placement (a plan has no topology)
                from .placement.placement import Placement

                placement = Placement.from_dict(raw)
                validate_placement(instance, placement)
                return instance, placement
            plan = Plan.from_dict(raw)
            validate_plan(instance, plan)
            return instance, plan
        except PlanError as exc:
            raise PlanError(f"{path}: {exc}") from None
    instance = load_instance(path)
    if args.num_partitions is not None:
        return instance, solve(instance, objective="min_bottleneck", num_partitions=args.num_partitions)
    return instance, solve(instance)


def _no_plan(args: argparse.Namespace, instance: Instance, plan: Plan) -> int:
    """Print a plan without partitions (its status and why) and return exit code 1."""
    if args.json:
        print(json.dumps(_timed(plan.to_dict(), args), indent=2))
    else:
        print(render_plan(instance, plan))
    return EXIT_NO_PLAN


def _map(args: argparse.Namespace) -> int:
    from .placement.mapper import map_plan
    from .placement.topology_files import load_topology

    instance, plan = _plan_of(args)
    if not plan.status.has_plan:
        return _no_plan(args, instance, plan)
    topology = load_topology(args.topology, bandwidth_matrix=args.bandwidth_matrix)
    placement = map_plan(instance, plan, topology, args.objective)
    if args.plot and placement.status.has_plan:
        from .report.plot import plot_placement

        plot_placement(placement, topology, args.plot)
    if args.json:
        print(json.dumps(_timed(placement.to_dict(), args), indent=2))
    else:
        print(render_placement(placement))
    return EXIT_SOLVED if placement.status.has_plan else EXIT_NO_PLAN


def _imported(args: argparse.Namespace, *, seq_len: int, flops_per_s: float | None = None) -> Instance:
    """``from_hf_config`` with the GPU options: ``--gpu`` (or ``--capacity``) the memory of each
    GPU, ``--gpus`` an ordered pool of that many, ``--reserve`` what each holds back (default:
    the GPU's default reserve, :mod:`layerfit.model.gpus`; 0 with a plain ``--capacity``)."""
    from .interop.hf_config import from_hf_config

    if args.gpu is not None and args.capacity is not None:
        raise LayerfitError(f"--gpu {args.gpu} and --capacity {args.capacity}: give one (--gpu is that GPU's memory)")
    capacity = find_gpu(args.gpu, "--gpu").name if args.gpu is not None else args.capacity
    if args.gpus is not None:
        if capacity is None:
            raise LayerfitError("--gpus: needs --gpu (or --capacity), the memory of each GPU")
        if args.gpus < 1:
            raise LayerfitError(f"--gpus: must be at least 1, got {args.gpus}")
    if args.reserve is not None and capacity is None:
        raise LayerfitError("--reserve: needs --gpu (or --capacity), the memory it is held back from")
    mode = "training" if args.training else "inference"
    serving = _serving(args)
    if getattr(args, "via", "config") == "transformers":
        for flag, value in (("--activation-dtype", args.activation_dtype), ("--flops-per-s", flops_per_s),
                            ("--serving", serving)):
            if value is not None:
                raise LayerfitError(f"{flag}: not with --via transformers (it measures the model in --dtype, "
                                    "untimed); use --via config")
        try:  # the runtime needs torch and transformers; planning never imports them
            from layerfit.runtime.hf_import import from_hf_model
        except ImportError as exc:
            raise LayerfitError(f"--via transformers needs torch and transformers ({exc}); "
                                "pip install 'layerfit[hf]'") from None
        instance = from_hf_model(args.config, batch_size=args.batch_size, seq_len=seq_len, dtype=args.dtype,
                                 mode=mode, kv_cache=args.kv_cache, split=args.split, capacity=capacity,
                                 name=args.name)
    else:
        instance = from_hf_config(
            args.config, batch_size=args.batch_size, seq_len=seq_len, dtype=args.dtype,
            activation_dtype=args.activation_dtype,
            mode=mode, kv_cache=args.kv_cache, split=args.split,
            capacity=capacity, name=args.name, flops_per_s=flops_per_s, serving=serving,
        )
    if args.reserve is not None:
        text = args.reserve.strip()
        reserve = parse_size(int(text) if text.isdigit() else text, "--reserve")  # 0 needs no unit
        if reserve >= instance.capacity:
            raise LayerfitError(f"--reserve: {format_bytes(reserve)} leaves nothing of the capacity, "
                                f"{format_bytes(instance.capacity)}")
        instance = dataclasses.replace(instance, constraints=dataclasses.replace(instance.constraints, reserve=reserve))
    if args.gpus is not None:
        devices = tuple(Device(f"GPU{j}", capacity) for j in range(args.gpus))
        instance = dataclasses.replace(instance, capacity=None, devices=devices)
    return instance


def _serving(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The Serving options the flags ask for, or None (no --serving and no serving flag)."""
    from .interop.serving import Serving

    given = {key: getattr(args, key) for key in ("kv_cache_dtype", "max_num_batched_tokens", "max_num_seqs",
                                                 "gpu_memory_utilization") if getattr(args, key) is not None}
    if not (args.serving or given):
        return None
    if args.training:
        raise LayerfitError("--serving: the memory of serving, not with --training")
    return Serving(**given)


def _import(args: argparse.Namespace) -> int:
    instance = _imported(args, seq_len=args.seq_len, flops_per_s=args.flops_per_s)
    text = json.dumps(instance.to_dict(), indent=1) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        reserve = instance.constraints.reserve
        print(f"{args.output}: {instance.num_layers} layers, {instance.total_params:,} parameters, "
              + (f"{len(instance.devices)} devices of " if instance.devices else "")
              + f"capacity {format_size(instance.capacity)}"
              + (f", reserve {format_size(reserve)}" if reserve else ""), file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_SOLVED


def _export(args: argparse.Namespace) -> int:
    from .interop.export import export_plan

    instance, plan = _plan_of(args, placements=True)
    if not plan.status.has_plan:
        return _no_plan(args, instance, plan)
    exported = export_plan(instance, plan, args.target)
    if args.json:
        print(json.dumps(exported, indent=2))
        return EXIT_SOLVED
    value = exported["value"]
    print(value if isinstance(value, str) else json.dumps(value, indent=1 if args.target != "deepspeed" else None))
    print(f"# {exported['num_stages']} stages; {exported['usage']}", file=sys.stderr)
    for note in exported["notes"]:
        print(f"# note: {note}", file=sys.stderr)
    return EXIT_SOLVED


# -- plan: a config.json to a framework's flags ------------------------------------------

PLAN_OBJECTIVES = ("min_partitions", "min_bottleneck", "min_utilization", "max_kv_tokens")


def _plan(args: argparse.Namespace) -> int:
    """Import a config.json for a GPU, solve (fewest GPUs; with --gpus N the most balanced plan on
    N), place it on --topology if given, export it to --to, and print the line to paste."""
    from .interop.export import EXPORT_TARGETS, export_plan, framework_pins

    if args.target not in EXPORT_TARGETS:
        raise LayerfitError(f"--to: unknown target {args.target!r} (allowed: {', '.join(EXPORT_TARGETS)})")
    if args.gpu is None and args.capacity is None:
        raise LayerfitError(f"--gpu: required, the GPU to plan for ({', '.join(GPUS)}), or --capacity")
    if args.target in ("vllm", "megatron") and args.split != "block":
        raise LayerfitError(f"--split {args.split}: {args.target} places whole decoder layers; use --split block")
    objective = (args.objective or ("min_bottleneck" if args.gpus is not None else "min_partitions")).replace("-", "_")
    if objective not in PLAN_OBJECTIVES:
        raise LayerfitError(f"--objective: {args.objective!r} is not one plan solves "
                            f"(allowed: {', '.join(PLAN_OBJECTIVES)}; - for _ is accepted)")
    if objective != "min_partitions" and args.gpus is None:
        raise LayerfitError(f"--objective {args.objective}: needs --gpus N, the number of GPUs to "
                            + ("serve on" if objective == "max_kv_tokens" else "balance over"))
    if objective == "max_kv_tokens":
        if args.training:
            raise LayerfitError("--objective max-kv-tokens: the KV cache of serving, not with --training")
        args.serving = True  # the tokens are only real with the memory a serving engine holds
    seq_len, seq_default = _plan_seq_len(args)
    instance = _imported(args, seq_len=seq_len)
    gpu = parse_capacity(args.gpu if args.gpu is not None else args.capacity, "--gpu")[1]
    instance, pins = framework_pins(instance, args.target)
    plan = solve(instance, objective=objective, num_partitions=None if objective == "min_partitions" else args.gpus,
                 time_limit=args.time_limit)
    placement = exported = None
    if plan.status.has_plan and args.topology:
        from .placement.mapper import map_plan
        from .placement.topology_files import load_topology

        placed = instance
        if objective == "max_kv_tokens":  # the stages hold the plan's tokens of KV cache, as its metrics say
            from .model.memory import with_kv_tokens

            placed = with_kv_tokens(instance, int(plan.objective))  # type: ignore[arg-type]
        placement = map_plan(placed, plan, load_topology(args.topology))
    if plan.status.has_plan and (placement is None or placement.status.has_plan):
        exported = export_plan(placed if placement is not None else instance,
                               placement if placement is not None else plan, args.target)
    paste = _paste(exported) if exported else None
    if args.json:
        print(json.dumps({
            "instance": _plan_summary(instance, gpu, seq_default, pins), "objective": objective, "plan": plan.to_dict(),
            "placement": placement.to_dict() if placement is not None else None, "export": exported, "paste": paste,
        }, indent=2))
    else:
        out = [_wrap("\n".join(_plan_header(instance, gpu, seq_default, pins))), "", render_plan(instance, plan)]
        if objective == "max_kv_tokens" and plan.status.has_plan:
            tokens = int(plan.objective)  # type: ignore[arg-type]
            out.append(_wrap(f"serving: {tokens:,} tokens of KV cache on every rank, {tokens // VLLM_BLOCK:,} blocks of "
                             f"{VLLM_BLOCK} tokens (vLLM's default block size); {tokens // seq_len:,} sequences of "
                             f"{seq_len:,} tokens at once"))
        if placement is not None:
            out += ["", render_placement(placement)]
        if exported is not None:
            out += ["", f"{args.target}: {exported['num_stages']} stage{'s' if exported['num_stages'] != 1 else ''}; "
                        f"paste:", *_shell_lines(paste)]
            if args.target in ("deepspeed", "pippy", "accelerate"):
                out.append(_wrap(f"usage: {exported['usage']}"))
            out += [_wrap(f"note: {note}") for note in exported["notes"]]
        print("\n".join(out))
    return EXIT_SOLVED if exported is not None else EXIT_NO_PLAN


def _plan_seq_len(args: argparse.Namespace) -> tuple[int, int | None]:
    """--seq-len, else the config's context (max_position_embeddings, GPT-2's n_positions) up to
    PLAN_SEQ_LEN; the second value is the config's context when the default was taken."""
    if args.seq_len is not None:
        return args.seq_len, None
    raw = read_json(Path(args.config))
    context = raw.get("max_position_embeddings", raw.get("n_positions")) if isinstance(raw, dict) else None
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise LayerfitError(f"--seq-len: {args.config} gives no max_position_embeddings to default to; give --seq-len")
    return min(context, PLAN_SEQ_LEN), context


def _plan_summary(instance: Instance, gpu: GPU | None, seq_default: int | None, pins: dict[str, int]) -> dict:
    return {
        "name": instance.name, "description": instance.description, "layers": instance.num_layers,
        "total_params": instance.total_params, "total_bytes": instance.total_bytes,
        "gpu": None if gpu is None else {"name": gpu.name, "memory": gpu.memory, "default_reserve": gpu.reserve,
                                         "source": gpu.source},
        "gpus": len(instance.devices) if instance.devices else None,
        "capacity": instance.capacity, "reserve": instance.constraints.reserve,
        "usable": usable_capacity(instance),
        "seq_len_default_from": seq_default, "pinned": pins,
    }


def _plan_header(instance: Instance, gpu: GPU | None, seq_default: int | None, pins: dict[str, int]) -> list[str]:
    lines = [f"{instance.name}: {instance.num_layers} layers, {instance.total_params:,} parameters, "
             f"{format_size(instance.total_bytes)} in all; {instance.description}"]
    if seq_default is not None:
        lines.append(f"sequence length {min(seq_default, PLAN_SEQ_LEN)}: the config's context ({seq_default:,}), "
                     f"at most {PLAN_SEQ_LEN} (--seq-len sets it)")
    reserve = instance.constraints.reserve
    what = f"GPU {gpu.name}: {format_bytes(gpu.memory)} as its driver reports it" if gpu is not None else \
        f"capacity {format_bytes(instance.capacity)}"
    pool = f"{len(instance.devices)} × " if instance.devices else ""
    held = (f", less a reserve of {format_bytes(reserve)} held back on each"
            + (" (its default: CUDA context, NCCL, fragmentation; --reserve changes it)"
               if gpu is not None and reserve == gpu.reserve else "") if reserve else ", no reserve")
    lines.append(f"{pool}{what}{held}: {format_bytes(usable_capacity(instance))} for the model on each")
    if pins:
        where = ", ".join(f"{name} to the {'first' if j == 0 else 'last'} stage" for name, j in pins.items())
        lines.append(f"pinned: {where} (where the framework runs them)")
    return lines


def _paste(exported: dict) -> str:
    """The command line that takes the export: what to paste into a shell."""
    target, value, stages = exported["target"], exported["value"], exported["num_stages"]
    if target == "vllm":
        return f'VLLM_PP_LAYER_PARTITION="{value}" vllm serve MODEL --pipeline-parallel-size {stages}'
    if target == "megatron":  # double quotes: the layout's | is a shell pipe, and a shell joins \-newline in them
        args = (a if re.fullmatch(r"[\w.,=/:+-]+", a) else f'"{a}"' for a in exported["args"])
        return "pretrain_gpt.py " + " ".join(args)
    if target == "deepspeed":
        return f"self.parts = {json.dumps(value['parts'])}"
    if target == "pippy":
        return f"split_spec = {json.dumps(value)}"
    return f"device_map = {json.dumps(value)}"


def _shell_lines(text: str) -> list[str]:
    """``text`` in lines of at most WIDTH columns that a shell joins back: each ends in a
    backslash, which the shell removes with the newline (inside a word too), broken after a
    space, ``|`` or ``,`` where one is near the end."""
    lines = []
    while len(text) > WIDTH:
        cut = max(text.rfind(c, 0, WIDTH - 1) for c in " |,") + 1
        cut = cut if cut > WIDTH // 2 else WIDTH - 1
        lines.append(text[:cut] + "\\")
        text = text[cut:]
    return [*lines, text]


def _seconds(t: float) -> str:
    return f"{t * 1e6:.1f} µs" if t < 1e-3 else f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


def render_placement(placement) -> str:  # type: ignore[no-untyped-def]
    """A readable report of a placement: GPU per partition, each boundary's link and time."""
    out = [
        f"placement of {placement.instance_name} on {placement.topology_name}: {len(placement.partitions)} partitions, "
        f"objective {placement.objective_name}, method {placement.method}: {placement.status}, "
        f"{placement.solve_time_s * 1000:.1f} ms",
    ]
    if not placement.status.has_plan:
        out.append(placement.explanation or "")
        return "\n".join(out)
    out.append(
        f"objective {_seconds(placement.objective)} (lower bound {_seconds(placement.bound)}); "
        + (
            f"rank order ({', '.join(placement.naive_devices[:4])}{', …' if len(placement.naive_devices) > 4 else ''}): "
            f"{_seconds(placement.naive_objective)}, {placement.naive_ratio:.2f}× the chosen"
            if placement.naive_objective is not None else "rank order does not fit the GPUs' memory"
        )
    )
    rows = []
    for j, device in enumerate(placement.devices):
        cells = [str(j), device, format_size(placement.partition_bytes[j])]
        if j < len(placement.boundaries):
            b = placement.boundaries[j]
            cells += [f"→ {b['to']}", b["kind"], f"{b['bandwidth'] / 1e9:.4g} GB/s", format_size(b["bytes"]), _seconds(b["time"])]
        else:
            cells += ["", "", "", "", ""]
        rows.append(cells)
    shown = rows if len(rows) <= 40 else [*rows[:20], ["…"] * 8, *rows[-20:]]
    out.append("")
    header = ["#", "device", "bytes", "next", "link", "bandwidth", "sends", "time"]
    out.extend(_table(header, shown, [True, False, True, False, False, True, True, True]))
    return "\n".join(out)


# -- compare --------------------------------------------------------------------------


def _instance_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(path.glob("*.json")))
        elif path.is_file():
            files.append(path)
        else:
            raise LayerfitError(f"{raw}: no such file or folder")
    if not files:
        raise LayerfitError(f"no instance files (*.json) in {', '.join(paths)}")
    return files


def _parse_methods(spec: str) -> list[str]:
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    for m in methods:
        if m not in COMPARE_METHODS:
            raise LayerfitError(f"--methods: unknown method {m!r} (allowed: {', '.join(COMPARE_METHODS)})")
    if not methods:
        raise LayerfitError("--methods: empty")
    return methods


def _run_method(instance: Instance, spec: str, time_limit: float) -> Plan:
    method, _, backend = spec.partition(":")
    options: dict[str, object] = {}
    if method in ("cpsat", "mip"):
        options["time_limit"] = time_limit
    if backend:
        options["backend"] = backend
    return solve(instance, method, **options)  # type: ignore[arg-type]


def compare_instances(files: Sequence[Path], methods: Sequence[str], time_limit: float, max_layers: int | None):
    """Solve every instance with every method; one row of results per instance."""
    rows = []
    for path in files:
        instance = load_instance(path)
        if max_layers is not None and instance.num_layers > max_layers:
            continue
        results, skipped = {}, {}
        for spec in methods:
            try:
                results[spec] = _run_method(instance, spec, time_limit)
            except OptionError as exc:  # the method does not handle this instance's options
                skipped[spec] = str(exc)
        rows.append({"file": str(path), "instance": instance, "results": results, "skipped": skipped})
    return rows


def summarise(row: dict) -> dict:
    instance: Instance = row["instance"]
    results: dict[str, Plan] = row["results"]
    exact = {spec: plan for spec, plan in results.items() if not spec.startswith("greedy")}
    greedy = results.get("greedy")
    best = None
    proven = [p for p in exact.values() if p.status is Status.OPTIMAL]
    if proven:
        best = proven[0]
    elif exact:
        candidates = [p for p in exact.values() if p.status.has_plan]
        best = min(candidates, key=lambda p: (p.objective, p.secondary_objective)) if candidates else None
    keys = {(p.objective, p.secondary_objective) for p in proven}
    if len(keys) > 1:
        proof = "DISAGREE"
    elif proven:
        proof = f"optimal ({len(proven)}/{len(exact)} proved)"
    elif any(p.status is Status.INFEASIBLE for p in results.values()):
        proof = "infeasible"
    elif best is not None:
        proof = f"feasible (gap {_percent(best.gap or 0.0)})"
    else:
        proof = "unknown"

    def balance(plan: Plan | None) -> float | None:
        return plan.metrics["balance"]["max_over_mean"] if plan is not None and plan.status.has_plan else None

    def count(plan: Plan | None) -> int | None:
        return plan.num_partitions if plan is not None and plan.status.has_plan else None

    def largest(plan: Plan | None) -> int | None:
        return plan.metrics["max_bytes"] if plan is not None and plan.status.has_plan else None

    # Time as the objective (layers with times): the fastest plan at greedy's count, by the exact DP.
    timed = {}
    if instance.has_times and greedy is not None and greedy.status.has_plan:
        fastest = solve(instance, objective="min_stage_time", num_partitions=greedy.num_partitions)
        timed = {"greedy_slowest_stage_s": greedy.metrics["max_time"],
                 "optimal_slowest_stage_s": fastest.objective if fastest.status.has_plan else None}

    return {
        "file": row["file"],
        "instance": instance.name,
        "layers": instance.num_layers,
        "capacity": instance.capacity,
        "greedy_partitions": count(greedy),
        "optimal_partitions": count(best),
        "greedy_largest_bytes": largest(greedy),
        "optimal_largest_bytes": largest(best),
        "greedy_max_over_mean": balance(greedy),
        "optimal_max_over_mean": balance(best),
        "proof": proof,
        **timed,
        "methods": {
            spec: {
                "status": plan.status.value,
                "num_partitions": count(plan),
                "largest_bytes": largest(plan),
                "objective": plan.objective,
                "bound": plan.bound,
                "secondary_objective": plan.secondary_objective,
                "secondary_bound": plan.secondary_bound,
                "gap": plan.gap,
                "solve_time_s": plan.solve_time_s,
                "backend_status": plan.backend_status,
            }
            for spec, plan in results.items()
        } | {spec: {"status": "n/a", "reason": reason, "solve_time_s": None} for spec, reason in row.get("skipped", {}).items()},
    }


def _compare(args: argparse.Namespace) -> int:
    methods = _parse_methods(args.methods)
    if not args.time_limit > 0:
        raise LayerfitError(f"--time-limit: must be a positive number of seconds, got {args.time_limit!r}")
    rows = compare_instances(_instance_files(args.paths), methods, args.time_limit, args.max_layers)
    summaries = [summarise(r) for r in rows]
    if args.json:
        print(json.dumps({"methods": methods, "time_limit_s": args.time_limit, "instances": summaries}, indent=2))
        return EXIT_SOLVED
    print(render_compare(summaries, methods, wide=args.wide))
    return EXIT_SOLVED


def render_compare(summaries: Sequence[dict], methods: Sequence[str], *, wide: bool = False) -> str:
    """The comparison table: partition counts, the largest partition and the proof per
    instance (``wide``: also the balance, and each method's time, past 120 columns)."""

    def opt(value, fmt) -> str:  # type: ignore[no-untyped-def]
        return "-" if value is None else fmt(value)

    header = ["instance", "layers", "capacity", "greedy k", "optimal k", "greedy max", "optimal max", "proof"]
    right = [False, True, True, True, True, True, True, False]
    if wide:
        header[5:7] = ["greedy largest", "optimal largest", "greedy max/mean", "optimal max/mean"]
        right[5:7] = [True] * 4
        header += [f"{m} time" for m in methods]
        right += [True] * len(methods)
    rows = []
    for s in summaries:
        s = {**s, "methods": {m: {**r, "is_greedy": m == "greedy"} for m, r in s["methods"].items()}}
        row = [
            s["instance"], str(s["layers"]), format_size(s["capacity"]),
            opt(s["greedy_partitions"], str), opt(s["optimal_partitions"], str),
            opt(s["greedy_largest_bytes"], format_size), opt(s["optimal_largest_bytes"], format_size),
            s["proof"],
        ]
        if wide:
            row[7:7] = [opt(s["greedy_max_over_mean"], lambda v: f"{v:.3f}"),
                        opt(s["optimal_max_over_mean"], lambda v: f"{v:.3f}")]
            row += [_method_cell(s["methods"][m]) for m in methods]
        rows.append(row)
    lines = _table(header, rows, right, width=None if wide else WIDTH, shrink=0)
    feasible = [s for s in summaries if s["greedy_partitions"] is not None and s["optimal_partitions"] is not None]
    same_count = sum(s["greedy_partitions"] == s["optimal_partitions"] for s in feasible)
    fewer = [s["instance"] for s in summaries if s["optimal_partitions"] is not None
             and (s["greedy_partitions"] is None or s["greedy_partitions"] > s["optimal_partitions"])]
    lines.append("")
    lines.append(
        f"{len(summaries)} instances, {len(feasible)} solved by greedy and an exact method. Greedy's count equals "
        f"the optimum on {same_count} of them: on an additive chain greedy stays ahead, so its count is optimal."
    )
    if fewer:
        lines.append(
            f"The exact plan needs fewer partitions than greedy (or greedy finds none) on {len(fewer)}: "
            f"{', '.join(fewer)} — memory that depends on the stage's place in the pipeline schedule, free device "
            f"pools greedy fills in their listed order, or rules (pins, layer counts, cut rules) greedy does not "
            f"plan for."
        )
    better = [s for s in feasible if s["greedy_partitions"] == s["optimal_partitions"]
              and s["optimal_largest_bytes"] < s["greedy_largest_bytes"]]
    if better:
        worst = max(better, key=lambda s: s["greedy_largest_bytes"] / s["optimal_largest_bytes"])
        ratio = worst["greedy_largest_bytes"] / worst["optimal_largest_bytes"]
        lines.append(
            f"With the same count, the exact plan has a smaller largest partition on {len(better)}; greedy's is up to "
            f"{ratio:.2f}× the optimum ({worst['instance']})."
        )
    faster = [s for s in summaries if s.get("optimal_slowest_stage_s") is not None
              and s["optimal_slowest_stage_s"] < s["greedy_slowest_stage_s"]]
    if faster:
        cells = ", ".join(f"{s['instance']} {_seconds(s['greedy_slowest_stage_s'])} → "
                          f"{_seconds(s['optimal_slowest_stage_s'])}" for s in faster)
        lines.append(f"With layer times, at greedy's count the exact plan's slowest stage is faster on {len(faster)}: "
                     f"{cells} (objective min_stage_time).")
    not_planned = [f"{m} on {s['instance']}" for s in summaries for m in methods if s["methods"][m]["status"] == "n/a"]
    if not_planned:
        lines.append(f"n/a: a method that does not plan the instance (it refuses an option it cannot honour): "
                     f"{', '.join(not_planned)}.")
    lines.append("k: partitions; "
                 + ("largest: the largest partition's bytes; max/mean: the largest over the mean partition; "
                    if wide else "max: the largest partition's bytes; ")
                 + "proof: how many exact methods proved the optimum. "
                 + ("Times are wall time per solve. " if wide else "--wide adds the balance and each method's time. ")
                 + "Sizes in SI units (1 GB = 10^9 B).")
    return "\n".join(lines[:len(rows) + 2] + [_wrap(line) for line in lines[len(rows) + 2:]])


def _method_cell(result: dict) -> str:
    mark = {"optimal": "", "feasible": " (feasible)", "infeasible": " (infeasible)", "unknown": " (unknown)"}
    if result["status"] == "n/a":
        return "n/a"
    t = result["solve_time_s"]
    shown = f"{t * 1000:.1f} ms" if t < 1 else f"{t:.2f} s"
    if result.get("is_greedy") and result["status"] != "infeasible":
        return shown  # greedy proves nothing about balance: no mark
    return shown + mark[result["status"]]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
