"""An instance from a torch module: :func:`profile_module`.

What is measured, and how (each instance's ``description`` says which applied):

* parameters and weight bytes: the module's own parameters, per layer; a parameter that
  two layers share (GPT-2's lm_head and wte) makes a tied group, counted once.
* activation bytes: one forward pass under ``FakeTensorMode`` (or on the ``meta`` device
  when the module is there), so nothing is allocated and a 70B model can be described on a
  laptop. Inference: each layer's output. Training (``training=True``): what autograd
  saves for the backward pass inside the layer (parameters excluded), and the output as
  ``output_bytes``.
* workspace (the seed's ``buffer_size = operator_workspace``, profiled empirically): a
  real forward on ``sample_input``, layer by layer. On CUDA, the allocator's peak during
  the layer less what is still allocated after it; on CPU, the same peak counted from
  every tensor storage the layer's operators allocate (a ``TorchDispatchMode``), less the
  storages still alive after it (its outputs). A module on ``meta`` has no data to run:
  its workspace is not measured (0), and the description says so.
* time (``time_layers=True``): each layer run alone on its real input, the median of
  repeated runs after warm-up runs (inference: a forward under ``no_grad``; training: the
  forward and the backward of its output), with the intra-op threads this process has, so
  set ``torch.set_num_threads`` to a rank's share first (``layerfit.runtime.threads_per_rank``) to time
  the layers as a rank will run them. Plans then balance measured time
  (``objective="min_stage_time"``).
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from layerfit import Constraints, Instance, Layer, TiedGroup, Training

from .model import ModelError
from layerfit.model.memory import partition_bytes

__all__ = ["profile_module"]


def _tensor_bytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(value) if isinstance(t, torch.Tensor))


def _select(module: nn.Module, layers: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    if layers is None:
        children = list(module.named_children())
        if not children:
            raise ModelError(f"module: {type(module).__name__} has no child modules to use as layers")
        return children
    modules = dict(module.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ModelError(f"layers: the module has no submodule {missing[0]!r}")
    if len(set(layers)) != len(layers):
        raise ModelError("layers: a module is named twice")
    return [(name, modules[name]) for name in layers]


class _Allocations(TorchDispatchMode):
    """Live bytes of the tensor storages operators allocate, and their peak."""

    def __init__(self, known: set[int]):
        super().__init__()
        self.known = set(known)  # storages that exist before: inputs and weights
        self.live = self.peak = 0

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self.known.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes and key not in self.known:
                    self.known.add(key)
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, nbytes)
        return out


def _workspace(layer: nn.Module, args: tuple, kwargs: dict, device: torch.device) -> int:
    """Bytes a layer allocates beyond its inputs, weights and outputs, at its peak."""
    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            out = layer(*args, **kwargs)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - before
            after = torch.cuda.memory_allocated(device) - before
            del out
            return max(0, peak - after)
        known = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        known |= {p.untyped_storage().data_ptr() for p in layer.parameters()}
        known |= {b.untyped_storage().data_ptr() for b in layer.buffers()}
        tracker = _Allocations(known)
        with tracker:
            out = layer(*args, **kwargs)
        workspace = max(0, tracker.peak - tracker.live)
        del out
        return workspace


_TIMED_RUNS, _WARM_UP_RUNS = 21, 3


def _layer_seconds(layer: nn.Module, args: tuple, kwargs: dict, device: torch.device, training: bool) -> float:
    """The median time of the layer on these inputs: forward, or forward and backward."""

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        if training:
            grad_args = tuple(a.detach().requires_grad_(a.is_floating_point()) if isinstance(a, torch.Tensor) else a
                              for a in args)
            outs = [t for t in tree_leaves(layer(*grad_args, **kwargs)) if isinstance(t, torch.Tensor) and t.requires_grad]
            if outs:
                torch.autograd.backward(outs, [torch.ones_like(t) for t in outs])
        else:
            with torch.no_grad():
                layer(*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    # The timing's gradients are not the caller's: theirs are put back as they were.
    callers = [(p, p.grad) for p in layer.parameters()]
    for p, _ in callers:
        p.grad = None
    try:
        for _ in range(_WARM_UP_RUNS):
            once()
        return statistics.median(once() for _ in range(_TIMED_RUNS))
    finally:
        for p, grad in callers:
            p.grad = grad


def profile_module(
    module: nn.Module,
    sample_input: Any,
    *,
    layers: Sequence[str] | None = None,
    device: str = "cpu",
    training: bool = False,
    time_layers: bool = False,
    capacity: int | str | None = None,
    name: str | None = None,
) -> Instance:
    """Describe ``module`` as an :class:`~layerfit.Instance`, layer by layer.

    Parameters
    ----------
    module:
        The model. Its layers run in the listed order (a chain).
    sample_input:
        What ``module(sample_input)`` takes (a tensor, or a tuple of positional arguments).
        Its batch and sequence are those of the instance.
    layers:
        Submodule names, in execution order; default the module's children.
    device:
        Where the workspace (and time) is measured (``"cpu"`` or ``"cuda"``); the module's
        parameters must be there.
    training:
        Count what autograd saves for the backward pass, with mixed-precision Adam state.
    time_layers:
        Measure each layer's time on ``device`` (its ``time``, seconds): the forward, and in
        training the backward too. Needs real weights (not ``meta``).
    capacity:
        The partition capacity; default the whole model's footprint.

    Raises
    ------
    ModelError
        For an unknown layer name, or parameters that belong to no layer.
    """
    chosen = _select(module, layers)
    args = sample_input if isinstance(sample_input, tuple) else (sample_input,)
    # A slice of a bigger batch is a micro-batch of its own rows: copied, so that a layer
    # that saves its input is not charged for the whole batch behind the slice.
    args = tuple(a.clone() if isinstance(a, torch.Tensor) and not a.is_meta
                 and a.untyped_storage().nbytes() > a.numel() * a.element_size() else a for a in args)
    on_meta = any(p.is_meta for p in module.parameters())
    owners: dict[int, list[int]] = {}
    for index, (_, layer) in enumerate(chosen):
        for p in layer.parameters():
            owners.setdefault(id(p), []).append(index)
    orphans = [n for n, p in module.named_parameters() if id(p) not in owners]
    if orphans:
        raise ModelError(f"layers: parameter {orphans[0]!r} belongs to none of the layers")
    if time_layers and on_meta:
        raise ModelError("time_layers: the module is on the meta device; it has no weights to run and time")
    run_device = torch.device(device)
    elsewhere = sorted({p.device.type for p in module.parameters()} - {"meta", run_device.type})
    if elsewhere:
        # The workspace and times are measured where the layers run: the weights must be there.
        raise ModelError(f"device: the module's parameters are on {elsewhere[0]}, not {device!r}; move the module "
                         f"(module.to({device!r})) to measure it there")

    outputs, saved, inputs = _fake_forward(module, chosen, args, training, on_meta)
    workspaces = [0] * len(chosen)
    seconds: list[float | None] = [None] * len(chosen)
    if not on_meta:
        for index, (_, layer) in enumerate(chosen):
            layer_args, layer_kwargs = inputs[index]
            moved = tuple(a.to(run_device) if isinstance(a, torch.Tensor) else a for a in layer_args)
            workspaces[index] = _workspace(layer, moved, layer_kwargs, run_device)
            if time_layers:
                seconds[index] = _layer_seconds(layer, moved, layer_kwargs, run_device, training)

    result = []
    for index, (layer_name, layer) in enumerate(chosen):
        params = list(layer.parameters())
        count = sum(p.numel() for p in params)
        weight = sum(p.numel() * p.element_size() for p in params)
        held = saved[index] if training else outputs[index]
        result.append(Layer(layer_name, params=count, weight_bytes=weight, activation_bytes=held,
                            buffer_bytes=workspaces[index], output_bytes=outputs[index] if training else None,
                            time=seconds[index]))
    tied = []
    shared: dict[tuple[int, ...], int] = {}
    for p in {id(p): p for p in module.parameters()}.values():
        holders = tuple(sorted(set(owners[id(p)])))
        if len(holders) > 1:
            shared[holders] = shared.get(holders, 0) + p.numel()
    for holders, count in shared.items():
        tied.append(TiedGroup(tuple(chosen[i][0] for i in holders), count))
    how = ("activations: " + ("meta-device" if on_meta else "FakeTensorMode") + " forward, "
           + ("saved for backward" if training else "outputs") + "; workspace: "
           + ("not measured (module on meta)" if on_meta else
              "CUDA allocator peak" if run_device.type == "cuda" else "CPU storage allocations (TorchDispatchMode) peak")
           + " on the sample input"
           + (f"; time: median of {_TIMED_RUNS} runs of each layer on {run_device.type}"
              + (f" with {torch.get_num_threads()} threads" if run_device.type == "cpu" else "")
              + (", forward and backward" if training else ", forward") if time_layers else ""))
    kwargs = dict(name=name or type(module).__name__, layers=tuple(result), training=Training("adam") if training else None,
                  constraints=Constraints(tied=tuple(tied)), description=f"profile_module: {how}")
    whole = Instance(capacity=1, **kwargs)  # type: ignore[arg-type]
    return Instance(capacity=capacity if capacity is not None else partition_bytes(whole, range(len(result)), 0, 1),
                    **kwargs)  # type: ignore[arg-type]


def _fake_forward(module: nn.Module, chosen: list[tuple[str, nn.Module]], args: tuple, training: bool,
                  on_meta: bool) -> tuple[list[int], list[int], list[tuple[tuple, dict]]]:
    """Per layer: output bytes and saved-for-backward bytes from a forward that allocates
    nothing, and (for the workspace run) each layer's real inputs from a real forward."""
    outputs = [0] * len(chosen)
    saved = [0] * len(chosen)
    inputs: list[tuple[tuple, dict]] = [((), {})] * len(chosen)
    current: list[int] = []
    weights: list[torch.Tensor] = []  # the parameters as the forward sees them (kept alive: ids stay unique)
    weight_ids: set[int] = set()

    def pre(index: int):  # type: ignore[no-untyped-def]
        def hook(_module, _args):  # type: ignore[no-untyped-def]
            current.append(index)
        return hook

    def post(index: int):  # type: ignore[no-untyped-def]
        def hook(_module, _args, out):  # type: ignore[no-untyped-def]
            current.pop()
            outputs[index] = _tensor_bytes(out)
        return hook

    counted: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        # Weights (and views of them, as a Linear saves weight.t()) are not activations; a
        # storage saved twice (softmax's output, by softmax and by the next matmul) or through
        # several views (q, k, v of one projection) is held once. Saved tensors stay alive
        # through the forward, so their storages' handles are unique.
        base = t._base if t._base is not None else t
        if current and not isinstance(base, nn.Parameter) and id(base) not in weight_ids:
            storage = t.untyped_storage()
            if storage._cdata not in counted:
                counted.add(storage._cdata)
                saved[current[-1]] += storage.nbytes()
        return t

    handles = []
    for index, (_, layer) in enumerate(chosen):
        handles.append(layer.register_forward_pre_hook(pre(index)))
        handles.append(layer.register_forward_hook(post(index)))
    try:
        if on_meta:
            meta_args = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.set_grad_enabled(training):
                module(*meta_args)
        else:
            from torch._subclasses.fake_tensor import FakeTensorMode

            with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                fake_args = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
                # from_tensor is memoised: the forward sees these same fakes of the weights.
                weights.extend(mode.from_tensor(p) for p in module.parameters())
                weight_ids.update(id(w) for w in weights)
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.set_grad_enabled(training):
                    module(*fake_args)
    finally:
        for handle in handles:
            handle.remove()
    if not on_meta:
        def grab(index: int):  # type: ignore[no-untyped-def]
            def hook(_module, layer_args, layer_kwargs):  # type: ignore[no-untyped-def]
                inputs[index] = (tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in layer_args),
                                 dict(layer_kwargs))
            return hook

        handles = [layer.register_forward_pre_hook(grab(i), with_kwargs=True) for i, (_, layer) in enumerate(chosen)]
        try:
            with torch.no_grad():
                module(*args)
        finally:
            for handle in handles:
                handle.remove()
    return outputs, saved, inputs
