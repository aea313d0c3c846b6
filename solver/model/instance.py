"""Instances: the layers of a model, their memory, and the capacity of a partition.

An instance is a chain of layers (execution order) with a memory footprint each, and
the capacity C that every contiguous partition must fit. It is read from JSON (v1 of
DESIGN.md), from the seed methodology's shorthand, or built in Python; every check
happens here, once, with a message that names the field and the value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import InstanceError
from .memory import OPTIMIZER_STATE_BYTES, Footprint, layer_footprint, tied_shares, usable_capacity
from .gpus import GPU, parse_capacity
from .units import dtype_bytes, normalise_dtype, parse_count, parse_size, shown

__all__ = ["Layer", "Device", "SeedModel", "Training", "TiedGroup", "Constraints", "Instance", "load_instance",
           "read_json"]

_LAYER_KEYS = ("name", "params", "weight_bytes", "activation_bytes", "buffer_bytes", "kv_cache_bytes", "output_bytes",
               "dtype", "time", "flops", "modules")
_DEVICE_KEYS = ("name", "capacity", "speed")
_MODEL_KEYS = (
    "num_layers",
    "total_params",
    "dtype",
    "batch_size",
    "seq_len",
    "hidden_size",
    "activation_dtype",
    "buffer_bytes",
)
_INSTANCE_KEYS = (
    "name", "description", "capacity", "dtype", "layers", "model", "devices", "edges", "constraints", "training",
    "schedule", "micro_batches", "buffer_reuse", "activation_recompute", "device_order", "flops_per_s", "kv_tokens",
)
DEVICE_ORDERS = ("ordered", "free")
MAX_LAYERS = 100_000  # the seed shorthand's num_layers: bounded before its layers are built
_MISSING_CAPACITY = ("capacity: missing (the bytes one partition may hold, e.g. \"50MB\", or a GPU name such as "
                     "\"H100-80GB\"; optional when every device of 'devices' has one)")
SCHEDULES = ("none", "gpipe", "1f1b")
_TRAINING_KEYS = ("optimizer", "master_weights", "bytes_per_param")
OPTIMIZERS = tuple(OPTIMIZER_STATE_BYTES)
# Keys of the v1 format that later versions of layerfit honour; refused rather than ignored.
_NOT_YET_SUPPORTED: dict[str, str] = {}
_CONSTRAINT_KEYS = ("pinned", "max_layers_per_partition", "min_layers_per_partition", "no_cut_after",
                    "must_cut_after", "reserve", "gpu_memory_utilization", "tied")
_TIED_KEYS = ("layers", "params", "mode")
TIED_MODES = ("replicate", "together")


def _check_keys(raw: object, allowed: Sequence[str], where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise InstanceError(f"{where}: expected an object, got {raw!r}")
    unknown = [key for key in raw if key not in allowed]
    if unknown:
        raise InstanceError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")
    return raw


def _check_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InstanceError(f"{where}: expected a non-empty string, got {shown(value)}")
    if not value.isprintable() or any("\ud800" <= c <= "\udfff" for c in value):
        # A name is printed in tables and messages: no control characters, no lone surrogates.
        escaped = value.encode("utf-8", "backslashreplace")
        raise InstanceError(f"{where}: expected printable characters, got {escaped!r}")
    return value


def _as_float(value: object) -> float | None:
    """A JSON number as a float, or None when it is not one or no float holds it (10^400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _check_dtype(value: object, where: str) -> str | None:
    if value is None:
        return None
    return normalise_dtype(value, where)  # Hugging Face's bfloat16, float16, float32 too


def _check_seconds(value: object, where: str) -> float | None:
    if value is None:
        return None
    number = _as_float(value)
    if number is None or not math.isfinite(number):
        raise InstanceError(f"{where}: expected a finite number of seconds, got {shown(value)}")
    if value < 0:
        raise InstanceError(f"{where}: must not be negative, got {value!r}")
    return float(value)


def _check_speed(value: object, where: str) -> float:
    number = _as_float(value)
    if number is None or not math.isfinite(number) or number <= 0:
        raise InstanceError(f"{where}: expected a positive finite number, got {shown(value)}")
    return float(value)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


@dataclass(frozen=True)
class Layer:
    """One layer of the chain.

    Its weight bytes are ``weight_bytes`` when given, else ``params`` times the bytes of
    its dtype (``dtype``, else the instance's). ``activation_bytes`` is the activation it
    holds (its output; in training, what it saves for the backward pass) and, unless
    ``output_bytes`` says otherwise, what crosses a cut after it; ``buffer_bytes`` its
    operator workspace; ``kv_cache_bytes`` its KV cache (held for the whole batch, whatever
    the schedule). ``time`` is optional, in seconds per batch. Sizes may be given as unit
    strings (``"32MiB"``) and are stored as exact integers. ``modules`` lists the modules of
    the model the layer holds (``model.layers.3.input_layernorm``, ``model.layers.3.self_attn``),
    when its name alone does not say (a sub-layer with its block's norm); exports key on them.
    """

    name: str
    params: int = 0
    weight_bytes: int | None = None
    activation_bytes: int = 0
    buffer_bytes: int = 0
    kv_cache_bytes: int = 0
    output_bytes: int | None = None
    dtype: str | None = None
    time: float | None = None
    flops: float | None = None
    modules: tuple[str, ...] = ()

    @property
    def sent_bytes(self) -> int:
        """What crosses a cut after this layer: ``output_bytes``, else ``activation_bytes``."""
        return self.activation_bytes if self.output_bytes is None else self.output_bytes

    def __post_init__(self) -> None:
        where = f"layer {self.name!r}" if isinstance(self.name, str) else "layer"
        for key, value in _normalise_layer(self.__dict__, where).items():
            object.__setattr__(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        """The layer as JSON v1, leaving out fields at their defaults."""
        out: dict[str, Any] = {"name": self.name}
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _normalise_layer(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check one layer's fields; return them normalised (exact integer bytes)."""
    out: dict[str, Any] = {"name": _check_name(raw.get("name"), _join(where, "name"))}
    out["params"] = parse_count(raw.get("params", 0), _join(where, "params"))
    weight = raw.get("weight_bytes")
    out["weight_bytes"] = None if weight is None else parse_size(weight, _join(where, "weight_bytes"))
    out["activation_bytes"] = parse_size(raw.get("activation_bytes", 0), _join(where, "activation_bytes"))
    out["buffer_bytes"] = parse_size(raw.get("buffer_bytes", 0), _join(where, "buffer_bytes"))
    out["kv_cache_bytes"] = parse_size(raw.get("kv_cache_bytes", 0), _join(where, "kv_cache_bytes"))
    output = raw.get("output_bytes")
    out["output_bytes"] = None if output is None else parse_size(output, _join(where, "output_bytes"))
    out["dtype"] = _check_dtype(raw.get("dtype"), _join(where, "dtype"))
    out["time"] = _check_seconds(raw.get("time"), _join(where, "time"))
    flops = raw.get("flops")
    if flops is not None:
        number = _as_float(flops)
        if number is None or not math.isfinite(number) or number < 0:
            raise InstanceError(f"{_join(where, 'flops')}: expected a non-negative finite number, got {shown(flops)}")
        if out["time"] is not None:
            raise InstanceError(f"{_join(where, 'flops')}: give a layer time or its flops, not both")
        flops = float(flops)
    out["flops"] = flops
    out["modules"] = _check_modules(raw.get("modules", ()), _join(where, "modules"))
    return out


def _check_modules(value: object, where: str) -> tuple[str, ...]:
    """A list of distinct, non-empty module names (dotted paths of the model's modules)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InstanceError(f"{where}: expected a list of module names, got {value!r}")
    for index, name in enumerate(value):
        if not isinstance(name, str) or not name or name != name.strip():
            raise InstanceError(f"{where}[{index}]: expected a module name, got {name!r}")
    if len(set(value)) != len(value):
        repeated = next(name for name in value if value.count(name) > 1)
        raise InstanceError(f"{where}: module {repeated!r} listed twice")
    return tuple(value)


@dataclass(frozen=True)
class Device:
    """A device of a pool: a name, a memory capacity in bytes and a relative speed.

    The capacity may be a GPU name (``"H100-80GB"``): that GPU's memory as its driver reports
    it (:mod:`layerfit.model.gpus`); ``gpu`` keeps the GPU, whose default reserve the instance
    then holds back unless it gives its own.
    """

    name: str
    capacity: int
    speed: float = 1.0
    gpu: GPU | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        where = f"device {self.name!r}" if isinstance(self.name, str) else "device"
        _check_name(self.name, _join(where, "name"))
        capacity, gpu = parse_capacity(self.capacity, _join(where, "capacity"))
        if capacity == 0:  # like the instance's capacity: a device that holds nothing is a mistake
            raise InstanceError(f"{_join(where, 'capacity')}: must be positive, got {self.capacity!r}")
        object.__setattr__(self, "capacity", capacity)
        object.__setattr__(self, "gpu", gpu)
        object.__setattr__(self, "speed", _check_speed(self.speed, _join(where, "speed")))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "capacity": self.capacity}
        if self.speed != 1.0:
            out["speed"] = self.speed
        return out


@dataclass(frozen=True)
class SeedModel:
    """The seed methodology's shorthand: ``num_layers`` equal layers of a model.

    Expansion (seed formulas): each layer gets ``total_params / num_layers`` parameters
    (the remainder, if any, one each to the first layers) stored in ``dtype``, and an
    activation of ``batch_size × seq_len × hidden_size`` elements in ``activation_dtype``
    (default: ``dtype``). The seed's "5.24GB" per layer counts those elements
    (128 × 10000 × 4096 = 5.24e9); in bf16 they take 10.49 GB.
    """

    num_layers: int
    total_params: int
    dtype: str
    batch_size: int
    seq_len: int
    hidden_size: int
    activation_dtype: str | None = None
    buffer_bytes: int = 0

    def __post_init__(self) -> None:
        where = "model"
        for key in ("num_layers", "total_params", "batch_size", "seq_len", "hidden_size"):
            object.__setattr__(self, key, parse_count(getattr(self, key), _join(where, key)))
        if self.num_layers < 1:
            raise InstanceError(f"model.num_layers: must be at least 1, got {self.num_layers}")
        if self.num_layers > MAX_LAYERS:  # before any list of layers is built
            raise InstanceError(f"model.num_layers: at most {MAX_LAYERS:,} layers, got {shown(self.num_layers)}")
        if self.dtype is None:
            raise InstanceError("model.dtype: missing")
        object.__setattr__(self, "dtype", _check_dtype(self.dtype, "model.dtype"))
        object.__setattr__(self, "activation_dtype", _check_dtype(self.activation_dtype, "model.activation_dtype"))
        object.__setattr__(self, "buffer_bytes", parse_size(self.buffer_bytes, "model.buffer_bytes"))

    @property
    def activation_elements(self) -> int:
        """Elements of one layer's activation: batch × sequence × hidden (the seed's 5.24e9)."""
        return self.batch_size * self.seq_len * self.hidden_size

    def expand(self) -> tuple[Layer, ...]:
        """The equal layers this shorthand stands for."""
        base, remainder = divmod(self.total_params, self.num_layers)
        act_dtype = self.activation_dtype or self.dtype
        activation = dtype_bytes(act_dtype, self.activation_elements, "model.activation_dtype")
        return tuple(
            Layer(
                name=f"layer{i}",
                params=base + (1 if i < remainder else 0),
                activation_bytes=activation,
                buffer_bytes=self.buffer_bytes,
            )
            for i in range(self.num_layers)
        )

    def to_dict(self) -> dict[str, Any]:
        """The shorthand as JSON, leaving out optional fields at their defaults."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _MODEL_KEYS[:6] or value != f.default:
                out[f.name] = value
        return out


@dataclass(frozen=True)
class Training:
    """Training state held beside the weights (table in :mod:`layerfit.model.memory`).

    Either ``optimizer`` (``"none"``, ``"sgd"``, ``"adam"``) with ``master_weights``
    (None: on when the weights are 16-bit and there is an optimizer), or
    ``bytes_per_param``: the whole per-parameter total, weights included.
    """

    optimizer: str | None = "adam"
    master_weights: bool | None = None
    bytes_per_param: float | None = None

    def __post_init__(self) -> None:
        if self.bytes_per_param is not None:
            if self.optimizer not in (None, "adam") or self.master_weights is not None:
                raise InstanceError("training: give either bytes_per_param or optimizer/master_weights, not both")
            value = self.bytes_per_param
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InstanceError(f"training.bytes_per_param: expected a non-negative number, got {value!r}")
            object.__setattr__(self, "optimizer", None)
            return
        if self.optimizer not in OPTIMIZERS:
            raise InstanceError(
                f"training.optimizer: unknown optimizer {self.optimizer!r} (allowed: {', '.join(OPTIMIZERS)})"
            )
        if self.master_weights is not None and not isinstance(self.master_weights, bool):
            raise InstanceError(f"training.master_weights: expected true or false, got {self.master_weights!r}")

    def to_dict(self) -> dict[str, Any]:
        if self.bytes_per_param is not None:
            return {"bytes_per_param": self.bytes_per_param}
        out: dict[str, Any] = {"optimizer": self.optimizer}
        if self.master_weights is not None:
            out["master_weights"] = self.master_weights
        return out


@dataclass(frozen=True)
class TiedGroup:
    """Layers that share one weight (GPT-2's lm_head and token embedding).

    Every member's ``params`` includes the ``params`` shared weights (what the module
    holds); :attr:`Instance.total_params` counts them once. ``mode``:

    * ``"replicate"`` (default, DeepSpeed's ``TiedLayerSpec`` and Megatron's tied
      embeddings): the group may be split; every partition holding a member pays the
      shared weight (and its training state) once, and those copies are kept in sync.
    * ``"together"``: the whole group, and so every layer between its members, stays in
      one partition, which pays the shared weight once.
    """

    layers: tuple[str, ...]
    params: int
    mode: str = "replicate"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layers": list(self.layers), "params": self.params}
        if self.mode != "replicate":
            out["mode"] = self.mode
        return out


@dataclass(frozen=True)
class Constraints:
    """What users ask of a split beyond the capacity (issue: constraints users ask for).

    ``pinned``: layer name → partition index (the embedding in the first, the head in the
    last: -1 counts from the end). ``max/min_layers_per_partition``. ``no_cut_after`` /
    ``must_cut_after``: layer names. ``reserve``: bytes held back on every device (framework,
    CUDA context, KV cache), so each partition must fit capacity − reserve; None (not given):
    the instance makes it 0, or, when a capacity is a GPU name, that GPU's default reserve
    (:func:`layerfit.model.gpus.default_reserve`; the largest of them on a pool of several
    GPUs). An :class:`Instance`'s constraints always hold a number. ``gpu_memory_utilization``:
    the fraction of each device's capacity the model may use at all (vLLM's option of that name,
    0 < u ≤ 1; None: 1), so each partition fits ⌊capacity · u⌋ − reserve. ``tied``:
    :class:`TiedGroup` s of layers that share weights.
    """

    pinned: tuple[tuple[str, int], ...] = ()
    max_layers_per_partition: int | None = None
    min_layers_per_partition: int | None = None
    no_cut_after: tuple[str, ...] = ()
    must_cut_after: tuple[str, ...] = ()
    reserve: int | None = None
    tied: tuple[TiedGroup, ...] = ()
    gpu_memory_utilization: float | None = None

    def __post_init__(self) -> None:
        u = self.gpu_memory_utilization
        if u is not None and (isinstance(u, bool) or not isinstance(u, (int, float)) or not math.isfinite(u)
                              or not 0 < u <= 1):
            raise InstanceError(f"constraints.gpu_memory_utilization: must be a fraction in (0, 1], got {shown(u)}")

    @staticmethod
    def resolve_pin(pin: int, count: int) -> int:
        """The partition a pin names among ``count`` partitions (−1 the last, −2 the one before)."""
        return pin if pin >= 0 else count + pin

    @property
    def structural(self) -> bool:
        """Whether a rule on the cuts is asked, beyond the capacity and the reserve (pins,
        layer counts, cut rules, tied groups kept together): only the exact DP honours these."""
        return bool(self.pinned or self.max_layers_per_partition or self.min_layers_per_partition
                    or self.no_cut_after or self.must_cut_after
                    or any(group.mode == "together" for group in self.tied))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.pinned:
            out["pinned"] = dict(self.pinned)
        for key in ("max_layers_per_partition", "min_layers_per_partition"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key in ("no_cut_after", "must_cut_after"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        if self.reserve:
            out["reserve"] = self.reserve
        if self.gpu_memory_utilization is not None:
            out["gpu_memory_utilization"] = self.gpu_memory_utilization
        if self.tied:
            out["tied"] = [group.to_dict() for group in self.tied]
        return out


def _parse_tied(raw: object, layers: Sequence[Layer]) -> tuple[TiedGroup, ...]:
    if not isinstance(raw, list):
        raise InstanceError(f"constraints.tied: expected a list of groups, got {raw!r}")
    params_of = {layer.name: layer.params for layer in layers}
    groups = []
    seen: dict[str, int] = {}
    for g, spec in enumerate(raw):
        where = f"constraints.tied[{g}]"
        spec = _check_keys(spec, _TIED_KEYS, where)
        members = spec.get("layers")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise InstanceError(f"{where}.layers: expected a list of layer names, got {members!r}")
        if len(set(members)) < 2:
            raise InstanceError(f"{where}.layers: a tied group needs at least two distinct layers, got {members!r}")
        for name in members:
            if name not in params_of:
                raise InstanceError(f"{where}.layers: unknown layer {name!r}")
            if name in seen and seen[name] != g:
                raise InstanceError(f"{where}.layers: layer {name!r} is already in constraints.tied[{seen[name]}]")
            seen[name] = g
        if "params" not in spec:
            raise InstanceError(f"{where}.params: missing (the number of shared parameters)")
        shared = parse_count(spec["params"], f"{where}.params")
        if shared < 1:
            raise InstanceError(f"{where}.params: must be at least 1, got {shared}")
        for name in members:
            if params_of[name] < shared:
                raise InstanceError(
                    f"{where}.params: {shared} shared parameters, but layer {name!r} has only {params_of[name]} "
                    f"(each member's params include the shared weight)"
                )
        mode = spec.get("mode", "replicate")
        if mode not in TIED_MODES:
            raise InstanceError(f"{where}.mode: unknown mode {mode!r} (allowed: {', '.join(TIED_MODES)})")
        groups.append(TiedGroup(tuple(dict.fromkeys(members)), shared, mode))
    return tuple(groups)


def _parse_constraints(raw: object, layers: Sequence[Layer], capacity: int | None,
                       devices: Sequence[Device] | None = None) -> Constraints:
    spec = _check_keys(raw, _CONSTRAINT_KEYS, "constraints")
    names = [layer.name for layer in layers]
    known = set(names)
    pinned = spec.get("pinned", {})
    if not isinstance(pinned, Mapping):
        raise InstanceError(f"constraints.pinned: expected an object of layer name → partition index, got {pinned!r}")
    pins = []
    for name, where in pinned.items():
        if name not in known:
            raise InstanceError(f"constraints.pinned: unknown layer {name!r}")
        if isinstance(where, str):
            device_names = [d.name for d in devices or ()]
            if not device_names:
                raise InstanceError(f"constraints.pinned.{name}: pinning to a device ({where!r}) needs a device pool ('devices')")
            if where not in device_names:
                raise InstanceError(f"constraints.pinned.{name}: unknown device {where!r} (devices: {', '.join(device_names)})")
            where = device_names.index(where)  # an ordered pool: partition j runs on device j
        if isinstance(where, bool) or not isinstance(where, int):
            raise InstanceError(f"constraints.pinned.{name}: expected a partition index, got {where!r}")
        pins.append((name, where))
    limits = {}
    for key in ("max_layers_per_partition", "min_layers_per_partition"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InstanceError(f"constraints.{key}: must be a whole number ≥ 1, got {value!r}")
        limits[key] = value
    if limits["max_layers_per_partition"] and limits["min_layers_per_partition"] and \
            limits["min_layers_per_partition"] > limits["max_layers_per_partition"]:
        raise InstanceError(
            f"constraints: min_layers_per_partition {limits['min_layers_per_partition']} exceeds "
            f"max_layers_per_partition {limits['max_layers_per_partition']}"
        )
    cuts = {}
    for key in ("no_cut_after", "must_cut_after"):
        value = spec.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InstanceError(f"constraints.{key}: expected a list of layer names, got {value!r}")
        for name in value:
            if name not in known:
                raise InstanceError(f"constraints.{key}: unknown layer {name!r}")
        cuts[key] = tuple(value)
    both = sorted(set(cuts["no_cut_after"]) & set(cuts["must_cut_after"]))
    if both:
        raise InstanceError(f"constraints: layer {both[0]!r} is in both no_cut_after and must_cut_after")
    if names and names[-1] in cuts["must_cut_after"]:
        raise InstanceError(f"constraints.must_cut_after: {names[-1]!r} is the last layer; nothing follows it")
    reserve = parse_size(spec["reserve"], "constraints.reserve") if "reserve" in spec else None
    if reserve is not None and capacity is not None and reserve >= capacity:
        raise InstanceError(f"constraints.reserve: {reserve} B leaves nothing of the capacity ({capacity} B)")
    tied = _parse_tied(spec["tied"], layers) if "tied" in spec else ()
    index = {name: i for i, name in enumerate(names)}
    for g, group in enumerate(tied):
        if group.mode != "together":
            continue
        members = sorted(index[m] for m in group.layers)
        for name in cuts["must_cut_after"]:
            if members[0] <= index[name] < members[-1]:
                raise InstanceError(
                    f"constraints: must_cut_after {name!r} splits constraints.tied[{g}], which is kept together"
                )
    return Constraints(tuple(pins), limits["max_layers_per_partition"], limits["min_layers_per_partition"],
                       cuts["no_cut_after"], cuts["must_cut_after"], reserve, tied,
                       spec.get("gpu_memory_utilization"))


@dataclass(frozen=True)
class Instance:
    """A chain of layers and the capacity every partition must fit.

    Parameters
    ----------
    name:
        A label, printed in tables and kept in plans.
    capacity:
        C, in bytes (or a unit string): the most one partition may hold, S(P) ≤ C. A GPU name
        (``"H100-80GB"``, :data:`layerfit.model.gpus.GPUS`) is that GPU's memory as the driver
        reports it, and brings its default reserve (see ``constraints``), settled when the
        instance is built: ``dataclasses.replace(inst, capacity="H100-80GB")`` keeps ``inst``'s
        reserve (give ``constraints`` too, or build the instance with the name). Optional with a device
        pool: then it is the largest device's capacity (it limits nothing), and ``to_dict``
        writes none.
    layers:
        The layers, in execution order (partitions are contiguous runs of them).
    dtype:
        The default dtype of the layers' weights (a layer's own ``dtype`` wins).
    devices:
        A device pool: at most one partition per device, each within its device's capacity
        (and the instance's). ``device_order`` ``"ordered"`` (default): partition j runs on
        device j. ``"free"``: the planner chooses which devices, in which order
        (:mod:`layerfit.methods.pools`), and the plan names them.
    model:
        The seed shorthand the layers were expanded from, kept so that ``to_dict``
        round-trips and explanations can speak of it.
    description:
        Free text: where the numbers came from.
    training:
        Gradients and optimizer state per parameter (:class:`Training`); None: inference.
    constraints:
        :class:`Constraints` (pinned layers, layer counts, cut rules, a reserve).
    flops_per_s:
        A device's sustained throughput: a layer with ``flops`` (and no ``time``) takes
        flops / flops_per_s seconds (on a device of speed 1).
    edges:
        A DAG instead of the chain: (producer, consumer) layer names, every data dependency
        (the chain's too). Partitions are then ordered convex sets (no edge runs backwards);
        a tensor crossing a cut is held by every partition it passes through and sent over
        every boundary it crosses (:mod:`layerfit.methods.dag`).
    activation_recompute:
        Recompute activations in the backward pass: a stage holds, per micro-batch in flight,
        only its input (what the layer before it sends; nothing for the first stage), and
        for one micro-batch at a time the largest activation of its layers (the layer being
        recomputed and back-propagated), instead of every layer's activation.
    buffer_reuse:
        Count a partition's operator workspace as the largest of its layers' (the workspace
        is transient, reused layer after layer) instead of the seed's sum.
    kv_tokens:
        The tokens whose keys and values the layers' ``kv_cache_bytes`` hold (batch × sequence
        of the import): a layer holds ``kv_cache_bytes · T / kv_tokens`` for T tokens. Needed by
        the objective ``max_kv_tokens``, which chooses T (:mod:`layerfit.methods.kv_tokens`).
    schedule, micro_batches:
        ``"none"`` (the seed's formula, the default), ``"gpipe"`` or ``"1f1b"`` with m
        micro-batches. With a schedule, ``activation_bytes`` is per micro-batch and stage j
        of p holds it for the micro-batches in flight there: m under GPipe, min(p − j, m)
        under 1F1B (:func:`layerfit.model.memory.in_flight`).

    Examples
    --------
    >>> inst = Instance(name="tiny", capacity="10kB", dtype="bf16",
    ...                 layers=[Layer("a", params=1000), Layer("b", params=3000)])
    >>> inst.sizes
    (2000, 6000)
    """

    name: str
    capacity: int = None  # type: ignore[assignment]  # int once built; None: the largest device's
    layers: tuple[Layer, ...] = ()
    dtype: str | None = None
    devices: tuple[Device, ...] | None = None
    model: SeedModel | None = None
    description: str | None = None
    training: Training | None = None
    schedule: str = "none"
    micro_batches: int = 1
    constraints: Constraints = field(default_factory=Constraints)
    buffer_reuse: bool = False
    activation_recompute: bool = False
    device_order: str = "ordered"
    edges: tuple[tuple[str, str], ...] | None = None
    flops_per_s: float | None = None
    kv_tokens: int | None = None
    _sizes: tuple[int, ...] = field(init=False, repr=False, compare=False, default=())
    # Whether the capacity was given (False: the largest device's, and to_dict writes none).
    _capacity_given: bool = field(init=False, repr=False, compare=False, default=True)
    # The GPU the capacity names, if it names one (to_dict writes its bytes).
    capacity_gpu: GPU | None = field(init=False, repr=False, compare=False, default=None)
    # Per tied group: its members' indices and the shared weight's footprint, paid once per partition.
    _tied: tuple[tuple[tuple[int, ...], Footprint], ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        _check_name(self.name, "name")
        if self.capacity is None:
            if self.devices is None:
                raise InstanceError(_MISSING_CAPACITY)
            object.__setattr__(self, "_capacity_given", False)  # the largest device's, once they are checked
        else:
            capacity, gpu = parse_capacity(self.capacity, "capacity")
            object.__setattr__(self, "capacity", capacity)
            object.__setattr__(self, "capacity_gpu", gpu)
            if self.capacity == 0:
                raise InstanceError("capacity: must be positive, got 0")
        object.__setattr__(self, "dtype", _check_dtype(self.dtype, "dtype"))
        if self.schedule not in SCHEDULES:
            raise InstanceError(f"schedule: unknown schedule {self.schedule!r} (allowed: {', '.join(SCHEDULES)})")
        m = self.micro_batches
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise InstanceError(f"micro_batches: must be a whole number ≥ 1, got {m!r}")
        if self.schedule == "none" and m != 1:
            raise InstanceError(f"micro_batches: {m} needs a schedule (gpipe or 1f1b)")
        for option in ("buffer_reuse", "activation_recompute"):
            if not isinstance(getattr(self, option), bool):
                raise InstanceError(f"{option}: expected true or false, got {getattr(self, option)!r}")
        if self.device_order not in DEVICE_ORDERS:
            raise InstanceError(f"device_order: unknown order {self.device_order!r} (allowed: {', '.join(DEVICE_ORDERS)})")
        if self.device_order == "free" and self.devices is None:
            raise InstanceError("device_order: 'free' needs a device pool ('devices')")
        if self.training is not None and not isinstance(self.training, Training):
            raise InstanceError(f"training: expected a Training, got {self.training!r}")
        if self.description is not None and not isinstance(self.description, str):
            raise InstanceError(f"description: expected a string, got {self.description!r}")
        if self.model is not None:
            if self.layers:
                raise InstanceError("layers: give either 'layers' or the seed shorthand 'model', not both")
            if self.dtype not in (None, self.model.dtype):
                raise InstanceError(f"dtype: {self.dtype!r} conflicts with model.dtype {self.model.dtype!r}")
            object.__setattr__(self, "layers", self.model.expand())
            object.__setattr__(self, "dtype", self.model.dtype)
        layers = tuple(self.layers)
        if not layers:
            raise InstanceError("layers: the list is empty (an instance needs at least one layer)")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise InstanceError(f"layers[{i}]: expected a Layer, got {layer!r}")
        object.__setattr__(self, "layers", layers)
        seen: dict[str, int] = {}
        for i, layer in enumerate(layers):
            if layer.name in seen:
                raise InstanceError(f"layers[{i}].name: duplicate layer name {layer.name!r} (also layers[{seen[layer.name]}])")
            seen[layer.name] = i
        holder: dict[str, int] = {}  # a module belongs to one layer: exports map it to one device
        for i, layer in enumerate(layers):
            for module in layer.modules:
                if module in holder:
                    raise InstanceError(f"layers[{i}].modules: module {module!r} is also held by "
                                        f"layers[{holder[module]}] ({layers[holder[module]].name!r})")
                holder[module] = i
        if self.devices is not None:
            devices = tuple(self.devices)
            if not devices:
                raise InstanceError("devices: the list is empty")
            names = [d.name for d in devices]
            for i, name in enumerate(names):
                if name in names[:i]:
                    raise InstanceError(f"devices[{i}].name: duplicate device name {name!r}")
            object.__setattr__(self, "devices", devices)
            if not self._capacity_given:
                largest = max(d.capacity for d in devices)
                if largest == 0:
                    raise InstanceError("devices: every device's capacity is 0")
                object.__setattr__(self, "capacity", largest)
        object.__setattr__(self, "_sizes", tuple(self.footprint(i).total for i in range(len(layers))))
        if self.flops_per_s is not None:
            value = self.flops_per_s
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InstanceError(f"flops_per_s: expected a positive finite number, got {value!r}")
        kv = self.kv_tokens
        if kv is not None and (isinstance(kv, bool) or not isinstance(kv, int) or kv < 1):
            raise InstanceError(f"kv_tokens: must be a whole number ≥ 1 (the tokens the layers' kv_cache_bytes "
                                f"hold), got {shown(kv)}")
        for i, layer in enumerate(layers if kv is not None else ()):
            if layer.kv_cache_bytes % kv:
                raise InstanceError(f"layers[{i}].kv_cache_bytes: {layer.kv_cache_bytes} B is not a whole number of "
                                    f"bytes a token for kv_tokens {kv} (a KV cache holds whole bytes per token)")
        counted = [layer.name for layer in layers if layer.flops is not None]
        if counted and self.flops_per_s is None:
            raise InstanceError(f"flops_per_s: layer {counted[0]!r} gives flops; the instance needs a throughput to time it")
        if self.edges is not None:
            object.__setattr__(self, "edges", _check_edges(self.edges, [layer.name for layer in layers]))
            c = self.constraints if isinstance(self.constraints, Constraints) else Constraints()
            others = [name for name, on in (("devices", self.devices is not None),
                                            ("buffer_reuse", self.buffer_reuse),
                                            ("activation_recompute", self.activation_recompute),
                                            ("constraints.no_cut_after", bool(c.no_cut_after)),
                                            ("constraints.must_cut_after", bool(c.must_cut_after)),
                                            ("constraints.tied", bool(c.tied))) if on]
            if others:
                raise InstanceError(f"edges: a DAG instance does not combine with {others[0]} in this version")
        if not isinstance(self.constraints, Constraints):
            raise InstanceError(f"constraints: expected a Constraints, got {self.constraints!r}")
        object.__setattr__(self, "constraints", dataclasses.replace(self.constraints, reserve=self._reserve()))
        reserve = self.constraints.reserve
        if reserve and reserve >= self.capacity:  # the JSON reader says so too; Python-built instances here
            raise InstanceError(f"constraints.reserve: {reserve} B leaves nothing of the capacity ({self.capacity} B)")
        if self.constraints.gpu_memory_utilization is not None and usable_capacity(self) <= 0:
            raise InstanceError(f"constraints.gpu_memory_utilization: {self.constraints.gpu_memory_utilization:g} of "
                                f"the capacity ({self.capacity} B) leaves nothing beside the reserve ({reserve} B)")
        if self.constraints.tied:
            _parse_tied([group.to_dict() for group in self.constraints.tied], layers)  # the same checks as JSON
            footprints = [self.footprint(i) for i in range(len(layers))]
            object.__setattr__(self, "_tied", tied_shares(layers, footprints, self.constraints.tied))

    def _reserve(self) -> int:
        """The reserve as given, else the default reserve of the GPUs the capacities name (the
        largest, when a pool names several), else 0."""
        if self.constraints.reserve is not None:
            return parse_size(self.constraints.reserve, "constraints.reserve")
        named = [self.capacity_gpu, *(d.gpu for d in self.devices or ())]
        return max((gpu.reserve for gpu in named if gpu is not None), default=0)

    # -- the memory model's answers, kept on the instance (the rules: layerfit.model.memory) --

    def footprint(self, index: int) -> Footprint:
        """size(l) of layer ``index`` by component (:func:`layerfit.model.memory.layer_footprint`)."""
        return layer_footprint(self.layers[index], index, self.dtype, self.training)

    @property
    def sizes(self) -> tuple[int, ...]:
        """size(l) in bytes for every layer, in order (one micro-batch of activation)."""
        return self._sizes

    @property
    def tied_groups(self) -> tuple[tuple[tuple[int, ...], Footprint], ...]:
        """Per tied group: its members' layer indices (sorted) and the shared weight's footprint."""
        return self._tied

    @property
    def capacity_from_devices(self) -> bool:
        """Whether the capacity was left out, and so is the largest device's (limiting nothing)."""
        return not self._capacity_given

    @property
    def free_pool(self) -> bool:
        """Whether the planner chooses the pool's devices (``device_order: "free"``)."""
        return self.device_order == "free"

    @property
    def max_partitions(self) -> int:
        """The most partitions a plan may have: one per layer, and one per device of a pool."""
        return self.num_layers if self.devices is None else min(self.num_layers, len(self.devices))

    def stage_picoseconds(self, layers: Sequence[int], position: int, device: str | None = None) -> int:
        """A stage's time in whole picoseconds: its layers' ``time`` (each rounded to 1 ps)
        divided by the speed of its device (``device`` by name, on a free pool; else partition
        ``position`` of an ordered pool), rounded up. Integers keep the time objective exact."""
        total = sum(self.layer_picoseconds[i] for i in layers)
        if self.devices is None:
            return total
        chosen = next(d for d in self.devices if d.name == device) if device is not None else self.devices[position]
        return math.ceil(total / Fraction(chosen.speed))

    def stage_time(self, layers: Sequence[int], position: int, device: str | None = None) -> float:
        """A stage's time in seconds (see :meth:`stage_picoseconds`)."""
        return self.stage_picoseconds(layers, position, device) * 1e-12

    def layer_seconds(self, index: int) -> float | None:
        """A layer's time: its ``time``, else its ``flops`` / ``flops_per_s``, else None."""
        layer = self.layers[index]
        if layer.time is not None:
            return layer.time
        if layer.flops is not None and self.flops_per_s:
            return layer.flops / self.flops_per_s
        return None

    @cached_property
    def layer_picoseconds(self) -> tuple[int, ...]:
        """Each layer's time in whole picoseconds (0 without one), before any device speed."""
        return tuple(round((self.layer_seconds(i) or 0.0) * 1e12) for i in range(self.num_layers))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @cached_property
    def total_params(self) -> int:
        """The model's parameters, each tied weight counted once."""
        shared = sum((len(g.layers) - 1) * g.params for g in self.constraints.tied)
        return sum(layer.params for layer in self.layers) - shared

    @cached_property
    def total_bytes(self) -> int:
        return sum(self._sizes)

    @cached_property
    def has_times(self) -> bool:
        return all(self.layer_seconds(i) is not None for i in range(self.num_layers))

    # -- JSON ----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: object, *, name: str | None = None) -> Instance:
        """Build an instance from JSON v1 (a dict). ``name`` is used when the dict has none.

        Raises
        ------
        InstanceError
            On unknown keys, missing or malformed fields (the message names the field).
        """
        data = _check_keys(raw, _INSTANCE_KEYS, "instance")
        for key, why in _NOT_YET_SUPPORTED.items():
            if key in data:
                raise InstanceError(f"{key}: {why}")
        if "capacity" not in data and "devices" not in data:
            raise InstanceError(_MISSING_CAPACITY)
        model = None
        layers: list[Layer] = []
        if "model" in data:
            if "layers" in data:
                raise InstanceError("layers: give either 'layers' or the seed shorthand 'model', not both")
            spec = _check_keys(data["model"], _MODEL_KEYS, "model")
            missing = [k for k in _MODEL_KEYS[:6] if k not in spec]
            if missing:
                raise InstanceError(f"model.{missing[0]}: missing")
            model = SeedModel(**spec)
        elif "layers" not in data:
            raise InstanceError("layers: missing (give a list of layers, or the seed shorthand 'model')")
        else:
            raw_layers = data["layers"]
            if not isinstance(raw_layers, list):
                raise InstanceError(f"layers: expected a list, got {raw_layers!r}")
            for i, raw_layer in enumerate(raw_layers):
                where = f"layers[{i}]"
                layer_fields = _normalise_layer(_check_keys(raw_layer, _LAYER_KEYS, where), where)
                layers.append(Layer(**layer_fields))
        devices = None
        if "devices" in data:
            raw_devices = data["devices"]
            if not isinstance(raw_devices, list):
                raise InstanceError(f"devices: expected a list, got {raw_devices!r}")
            devices = []
            for i, raw_device in enumerate(raw_devices):
                where = f"devices[{i}]"
                spec = _check_keys(raw_device, _DEVICE_KEYS, where)
                _check_name(spec.get("name"), f"{where}.name")
                if "capacity" not in spec:
                    raise InstanceError(f"{where}.capacity: missing")
                parse_capacity(spec["capacity"], f"{where}.capacity")  # its errors name the field here
                devices.append(Device(spec["name"], spec["capacity"],
                                      _check_speed(spec.get("speed", 1.0), f"{where}.speed")))
        return cls(
            name=data.get("name", name or "instance"),
            capacity=data.get("capacity"),
            layers=tuple(layers),
            dtype=data.get("dtype"),
            devices=None if devices is None else tuple(devices),
            model=model,
            description=data.get("description"),
            training=_parse_training(data["training"]) if "training" in data else None,
            schedule=data.get("schedule", "none"),
            micro_batches=data.get("micro_batches", 1),
            buffer_reuse=data.get("buffer_reuse", False),
            activation_recompute=data.get("activation_recompute", False),
            device_order=data.get("device_order", "ordered"),
            flops_per_s=data.get("flops_per_s"),
            kv_tokens=data.get("kv_tokens"),
            edges=None if "edges" not in data else _check_edges(data["edges"], [
                layer.name for layer in (model.expand() if model else layers)]),
            constraints=_parse_constraints(
                data["constraints"], model.expand() if model else layers,
                parse_capacity(data["capacity"], "capacity")[0] if "capacity" in data else None, devices,
            ) if "constraints" in data else Constraints(),
        )

    def to_dict(self) -> dict[str, Any]:
        """The instance as JSON v1; ``Instance.from_dict(inst.to_dict()) == inst``.

        Resolved, as sizes are: a GPU name is written as its bytes and the reserve it brought as
        ``constraints.reserve`` (so a saved instance keeps its meaning if the GPU table
        changes); a capacity taken from the devices is not written."""
        out: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            out["description"] = self.description
        if self._capacity_given:
            out["capacity"] = self.capacity
        if self.model is not None:
            out["model"] = self.model.to_dict()
        else:
            if self.dtype is not None:
                out["dtype"] = self.dtype
            out["layers"] = [layer.to_dict() for layer in self.layers]
        if self.devices is not None:
            out["devices"] = [device.to_dict() for device in self.devices]
        if self.training is not None:
            out["training"] = self.training.to_dict()
        if self.schedule != "none":
            out["schedule"] = self.schedule
            out["micro_batches"] = self.micro_batches
        constraints = self.constraints.to_dict()
        if constraints:
            out["constraints"] = constraints
        if self.buffer_reuse:
            out["buffer_reuse"] = True
        if self.activation_recompute:
            out["activation_recompute"] = True
        if self.device_order != "ordered":
            out["device_order"] = self.device_order
        if self.edges is not None:
            out["edges"] = [list(edge) for edge in self.edges]
        if self.flops_per_s is not None:
            out["flops_per_s"] = self.flops_per_s
        if self.kv_tokens is not None:
            out["kv_tokens"] = self.kv_tokens
        return out


def _check_edges(raw: object, names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(producer, consumer) pairs of known, distinct layers with no cycle; duplicates dropped."""
    if not isinstance(raw, (list, tuple)):
        raise InstanceError(f"edges: expected a list of [producer, consumer] layer names, got {raw!r}")
    known = set(names)
    edges: dict[tuple[str, str], None] = {}
    for i, edge in enumerate(raw):
        if not isinstance(edge, (list, tuple)) or len(edge) != 2 or not all(isinstance(e, str) for e in edge):
            raise InstanceError(f"edges[{i}]: expected [producer, consumer] layer names, got {edge!r}")
        for name in edge:
            if name not in known:
                raise InstanceError(f"edges[{i}]: unknown layer {name!r}")
        if edge[0] == edge[1]:
            raise InstanceError(f"edges[{i}]: layer {edge[0]!r} feeds itself")
        edges[(edge[0], edge[1])] = None
    consumers: dict[str, list[str]] = {name: [] for name in names}
    for a, b in edges:
        consumers[a].append(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(start: str) -> None:  # iterative DFS: a cycle names its layers
        stack = [(start, iter(consumers[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                cycle = path[path.index(child):] + [child]
                raise InstanceError(f"edges: the edges form a cycle ({' → '.join(cycle)})")
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(consumers[child])))

    for name in names:
        if name not in state:
            visit(name)
    return tuple(edges)


def _parse_training(raw: object) -> Training:
    spec = _check_keys(raw, _TRAINING_KEYS, "training")
    if "bytes_per_param" in spec:
        return Training(optimizer=spec.get("optimizer"), master_weights=spec.get("master_weights"),
                        bytes_per_param=spec["bytes_per_param"])
    return Training(optimizer=spec.get("optimizer", "adam"), master_weights=spec.get("master_weights"))


def load_instance(path: str | Path) -> Instance:
    """Read an instance from a JSON file (v1, or the seed shorthand).

    The instance's name defaults to the file's stem.

    Raises
    ------
    InstanceError
        If the file is missing, is not valid JSON, or holds a malformed instance.
    """
    path = Path(path)
    return Instance.from_dict(read_json(path), name=path.stem)


def read_json(path: str | Path) -> Any:
    """A JSON file's contents; InstanceError naming the file when it is missing, unreadable, not
    UTF-8, not JSON, nested too deeply or holds an integer too long to read.

    The file is read as bytes and decoded strictly, so a bad byte is named by its offset."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InstanceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InstanceError(f"{path}: is a directory, not a JSON file") from None
    except OSError as exc:
        raise InstanceError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InstanceError(f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        what = exc.msg.removesuffix(" at")  # "Invalid control character at"
        raise InstanceError(f"{path}: not valid JSON ({what} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise InstanceError(f"{path}: JSON nested too deeply") from None
    except ValueError:  # Python's limit on an integer's digits (JSONDecodeError is caught above)
        raise InstanceError(f"{path}: holds an integer too long to read (more than "
                            f"{sys.get_int_max_str_digits():,} digits)") from None
