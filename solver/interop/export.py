"""A plan in the form each framework takes, and back (:func:`export_plan`, :func:`stage_layer_counts`).

=============  ===========================================================================
target         what is exported
=============  ===========================================================================
deepspeed      ``PipelineModule`` stage boundaries ``parts`` (``[0, b1, …, n]``, one
               ``LayerSpec`` per layer, as ``PipelineModule.partitions()`` holds them).
               ``partition_method`` takes no explicit list: set ``self.parts`` in a
               subclass's ``_partition_layers``.
megatron       ``--pipeline-model-parallel-layout``: per stage ``E`` (embedding), one ``t``
               per decoder layer, ``L`` (final norm, output layer and loss), stages joined
               by ``|``; and ``--decoder-first/last-pipeline-num-layers`` where they say it.
vllm           ``VLLM_PP_LAYER_PARTITION``: decoder layers per pipeline rank; vLLM puts
               the embedding on the first rank and the norm and head on the last.
pippy          ``torch.distributed.pipelining`` ``split_spec``: module name → ``BEGINNING``
               at the first module of every stage but the first.
accelerate     a ``device_map``: module name → GPU index (partition j on GPU j; a
               placement's GPUs; a free pool's chosen devices by their place in the pool).
=============  ===========================================================================

Layer names follow the Hugging Face module names (as :func:`~layerfit.from_hf_config` writes
them): blocks ``….layers.N``, ``….h.N`` or ``….layer.N``, sub-layers ``….N.mlp``; a name
``a.b+c`` is the modules ``a.b`` and ``a.c`` in one layer, and a layer's ``modules``, when it
lists them, are what it holds (a sub-layer with its block's norm). An export that cannot express
the plan (a cut inside a block for Megatron or vLLM, the head apart from the final norm)
raises :class:`~layerfit.errors.PlanError` saying why, never drops layers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import PlanError
from ..model.instance import Instance, Layer
from ..placement.placement import Placement
from ..model.plan import Plan

__all__ = ["EXPORT_TARGETS", "BLOCK_NAME", "export_plan", "framework_pins", "stage_layer_counts", "module_names"]

EXPORT_TARGETS = ("deepspeed", "megatron", "vllm", "pippy", "accelerate")
BLOCK_NAME = re.compile(  # a decoder/encoder block or a sub-layer of one
    r"^(?P<stack>(?:.*\.)?(?:layers|h|layer))\.(?P<index>\d+)(?:\.(?P<sub>.+))?$")


def module_names(layer: Layer | str) -> list[str]:
    """The modules a layer stands for: its ``modules`` when it lists them, else its name's
    (``transformer.wte+wpe`` → ``transformer.wte``, ``transformer.wpe``)."""
    if isinstance(layer, Layer):
        if layer.modules:
            return list(layer.modules)
        layer = layer.name
    head, _, last = layer.rpartition(".")
    prefix = f"{head}." if head else ""
    return [prefix + part for part in last.split("+")]


class _Structure:
    """Which layers are decoder blocks (by name), and the runs before and after them."""

    def __init__(self, instance: Instance, target: str):
        self.names = [layer.name for layer in instance.layers]
        self.block_of: list[int | None] = []
        for name in self.names:
            match = BLOCK_NAME.match(name)
            self.block_of.append(int(match["index"]) if match else None)
        blocks = [i for i, b in enumerate(self.block_of) if b is not None]
        if not blocks:
            raise PlanError(f"{target}: no decoder blocks among the layers (names like model.layers.N); "
                            f"the {target} export needs them")
        self.first, self.last = blocks[0], blocks[-1]
        inside = [self.names[i] for i in range(self.first, self.last + 1) if self.block_of[i] is None]
        if inside:
            raise PlanError(f"{target}: layer {inside[0]!r} sits between decoder blocks; {target} has no place for it")
        self.num_blocks = len(dict.fromkeys(b for b in self.block_of if b is not None))

    def blocks_in(self, part: Sequence[int], target: str) -> int:
        """Whole blocks in ``part``; raises when the part cuts a block."""
        for edge in (part[0], part[-1] + 1):
            if 0 < edge < len(self.names) and self.block_of[edge] is not None \
                    and self.block_of[edge] == self.block_of[edge - 1]:
                raise PlanError(
                    f"{target}: the plan cuts inside block {self.names[edge].rsplit('.', 1)[0]!r} (between "
                    f"{self.names[edge - 1]!r} and {self.names[edge]!r}); {target} places whole decoder layers"
                )
        return len({self.block_of[i] for i in part if self.block_of[i] is not None})


def _partitions(instance: Instance, plan: Plan | Placement) -> list[list[int]]:
    """The plan's partitions, once the plan (or placement) is validated against the instance."""
    from ..report.validation import validate_placement, validate_plan

    if isinstance(plan, Placement):
        validate_placement(instance, plan)
    else:
        validate_plan(instance, plan)
    partitions = plan.partitions
    if not plan.status.has_plan or not partitions:
        raise PlanError(f"plan: status {plan.status} has no partitions to export")
    if sum(len(p) for p in partitions) != instance.num_layers:
        raise PlanError(f"plan: its partitions hold {sum(len(p) for p in partitions)} layers, "
                        f"the instance {instance.name!r} has {instance.num_layers}")
    return [list(p) for p in partitions]


def export_plan(instance: Instance, plan: Plan | Placement, target: str) -> dict[str, Any]:
    """``plan`` (or a placement) of ``instance`` in the form ``target`` takes.

    Returns a JSON-ready dict: ``target``, ``value`` (what the framework takes), ``usage``
    (where it goes) and ``notes`` (what the framework does differently from the plan).

    Raises
    ------
    PlanError
        If the target cannot express the plan (the message says why), or the plan has none.
    """
    if target not in EXPORT_TARGETS:
        raise PlanError(f"target: unknown export target {target!r} (allowed: {', '.join(EXPORT_TARGETS)})")
    parts = _partitions(instance, plan)
    notes = []
    split_tied = [list(g.layers) for g, (members, _) in zip(instance.constraints.tied, instance.tied_groups)
                  if len({j for j, p in enumerate(parts) for i in p if i in members}) > 1]
    for group in split_tied:
        notes.append(f"tied weights {group} are on several stages: each holds a copy (DeepSpeed TiedLayerSpec, "
                     f"Megatron's shared embedding), whose gradients must be all-reduced")
    names = [layer.name for layer in instance.layers]
    out: dict[str, Any] = {"target": target, "num_stages": len(parts)}
    if target == "deepspeed":
        bounds = [0, *(p[-1] + 1 for p in parts)]
        out["value"] = {"parts": bounds, "layers": names}
        out["usage"] = ("PipelineModule(layers=[one LayerSpec per name in 'layers'], num_stages=%d); in a subclass's "
                        "_partition_layers set self.parts = %s" % (len(parts), bounds))
    elif target in ("megatron", "vllm"):
        structure = _Structure(instance, target)
        counts = [structure.blocks_in(p, target) for p in parts]
        lead, tail = range(0, structure.first), range(structure.last + 1, len(names))
        where = {i: j for j, p in enumerate(parts) for i in p}
        last = len(parts) - 1
        off = [names[i] for i in tail if where[i] != last]
        if off:
            pins = ", ".join(f"{names[i]!r}: -1" for i in tail)
            raise PlanError(f"{target}: layer {off[0]!r} is not on the last stage; {target} puts the final norm and "
                            f"head there (with the last decoder layers): plan with constraints.pinned {{{pins}}}")
        if target == "vllm":
            empty = [j for j, c in enumerate(counts) if c == 0]
            if empty:
                raise PlanError(f"vllm: stage {empty[0]} holds no decoder layer; every vLLM pipeline rank runs decoder "
                                f"layers: pin a block to it (constraints.pinned) or plan fewer stages")
            value = ",".join(map(str, counts))
            out["value"] = value
            out["usage"] = f"VLLM_PP_LAYER_PARTITION={value} vllm serve MODEL --pipeline-parallel-size {len(parts)}"
        else:
            stages = []
            for j, p in enumerate(parts):
                has_lead = any(where[i] == j for i in lead)
                stages.append(("E" if has_lead else "") + "t" * counts[j] + ("L" if j == last and tail else ""))
            layout = "|".join(stages)
            out["value"] = layout
            out["args"] = ["--pipeline-model-parallel-size", str(len(parts)),
                           "--pipeline-model-parallel-layout", layout]
            middle = set(counts[1:-1])
            if len(parts) > 2 and len(middle) == 1:
                out["args_without_layout"] = [
                    "--pipeline-model-parallel-size", str(len(parts)),
                    "--decoder-first-pipeline-num-layers", str(counts[0]),
                    "--decoder-last-pipeline-num-layers", str(counts[-1]),
                ]
            out["usage"] = "pretrain_gpt.py " + " ".join(out["args"])
        out["num_decoder_layers"] = structure.num_blocks
    elif target == "pippy":
        spec = {module_names(instance.layers[p[0]])[0]: "BEGINNING" for p in parts[1:]}
        out["value"] = spec
        out["usage"] = ("torch.distributed.pipelining.pipeline(model, mb_args, split_spec={name: SplitPoint.BEGINNING "
                        "for name in value})")
    else:  # accelerate
        gpus = _gpu_indices(instance, plan, len(parts))
        device_map = {module: gpus[j] for j, p in enumerate(parts) for i in p for module in module_names(instance.layers[i])}
        out["value"] = device_map
        out["usage"] = "AutoModelForCausalLM.from_pretrained(MODEL, device_map=value)"
        if split_tied:
            notes.append("accelerate keeps one copy of a tied weight and moves it between devices as needed")
    out["notes"] = notes
    return out


def _gpu_indices(instance: Instance, plan: Plan | Placement, count: int) -> list[int]:
    """GPU index per partition: a placement's GPUs (GPU3 → 3); a plan on a free pool, its
    devices' places in the pool; else partition j on GPU j (an ordered pool's device j)."""
    if isinstance(plan, Placement):
        indices = []
        for name in plan.devices:
            match = re.search(r"(\d+)$", name)
            if match is None:
                raise PlanError(f"accelerate: device {name!r} of the placement has no GPU index")
            indices.append(int(match[1]))
        return indices
    if plan.devices:
        pool = [d.name for d in instance.devices or ()]
        return [pool.index(name) for name in plan.devices]
    return list(range(count))


def stage_layer_counts(instance: Instance, exported: Mapping[str, Any]) -> list[int]:
    """Read an export back into the number of the instance's layers on each stage."""
    target, value = exported["target"], exported["value"]
    names = [layer.name for layer in instance.layers]
    if target == "deepspeed":
        bounds = value["parts"]
        return [b - a for a, b in zip(bounds, bounds[1:])]
    if target == "pippy":
        starts = [0]
        first_module = {module_names(layer)[0]: i for i, layer in enumerate(instance.layers)}
        starts += sorted(first_module[module] for module in value)
        return [b - a for a, b in zip(starts, [*starts[1:], len(names)])]
    if target == "accelerate":
        devices = []
        for layer in instance.layers:
            devices.append(value[module_names(layer)[0]])
        counts: list[int] = []
        for i, device in enumerate(devices):
            if i and device == devices[i - 1]:
                counts[-1] += 1
            else:
                counts.append(1)
        return counts
    structure = _Structure(instance, target)
    per_block = (structure.last + 1 - structure.first) // structure.num_blocks
    lead, tail = structure.first, len(names) - structure.last - 1
    if target == "vllm":
        blocks = [int(c) for c in value.split(",")]
        counts = [b * per_block for b in blocks]
        counts[0] += lead
        counts[-1] += tail
        return counts
    if target == "megatron":
        return [stage.count("E") * lead + stage.count("t") * per_block + stage.count("L") * tail
                for stage in value.split("|")]
    raise PlanError(f"target: unknown export target {target!r} (allowed: {', '.join(EXPORT_TARGETS)})")


def framework_pins(instance: Instance, target: str) -> tuple[Instance, dict[str, int]]:
    """What the framework fixes, as pins: vLLM runs the embedding on the first rank, the final
    norm and head on the last, and decoder layers on every rank (the first decoder block pinned
    to the first stage, the last to the last); Megatron puts the final norm and head (``L``) on
    the last stage (the first layer after the blocks pinned to it). The others place any cut."""
    names = [layer.name for layer in instance.layers]
    blocks = [i for i, name in enumerate(names) if BLOCK_NAME.match(name)]
    pins: dict[str, int] = {}
    if target == "vllm" and blocks:
        pins = {names[blocks[0]]: 0, names[blocks[-1]]: -1} if blocks[0] != blocks[-1] else {names[blocks[0]]: 0}
    elif target == "megatron" and blocks and blocks[-1] + 1 < len(names):
        pins = {names[blocks[-1] + 1]: -1}
    if not pins:
        return instance, {}
    merged = dict(instance.constraints.pinned) | pins
    constraints = dataclasses.replace(instance.constraints, pinned=tuple(merged.items()))
    return dataclasses.replace(instance, constraints=constraints), pins
