"""The differential fuzz of issue #15, shared by tests/test_fuzz.py (a few hundred examples in CI)
and benchmarks/fuzz.py (thousands): random small instances across every option the docs list —
schedules, buffer reuse, recomputation, tied weights (replicated and kept together), structural
constraints, a reserve, ordered and free device pools, DAGs — solved by every method that accepts
them, each plan checked by ``validate_plan`` and against :func:`oracle`, an exhaustive search
whose byte rules are written here from docs/concepts.md, sharing no code with layerfit's memory
model (it reads only the raw fields of the instance).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from hypothesis import strategies as st

from layerfit import Constraints, Device, Instance, Layer, OptionError, Status, TiedGroup, solve, validate_plan

# Every method and backend, with the warm starts the models take.
RUNS = [("greedy", {}), ("dp", {}), ("cpsat", {"num_workers": 1}), ("cpsat", {}), ("mip", {"backend": "cbc"}),
        ("mip", {"backend": "highs"})]
WARM_STARTS = ["dp", "greedy", "none"]
_BYTES_PER_PARAM = {"fp32": 4, "bf16": 2}


# -- the oracle: byte rules from docs/concepts.md, nothing imported from layerfit's memory model --


def _weight(inst: Instance, layer: Layer) -> int:
    if layer.weight_bytes is not None:
        return layer.weight_bytes
    return layer.params * _BYTES_PER_PARAM[layer.dtype or inst.dtype]


def _sent(layer: Layer) -> int:
    """What crosses a cut after a layer: its output_bytes, else its activation."""
    return layer.activation_bytes if layer.output_bytes is None else layer.output_bytes


def _flight(inst: Instance, position: int, count: int) -> int:
    if inst.schedule == "gpipe":
        return inst.micro_batches
    if inst.schedule == "1f1b":
        return min(count - position, inst.micro_batches)
    return 1


def stage_bytes(inst: Instance, part: list[int], position: int, where: list[int]) -> int:
    """S(P) of ``part``, stage ``position`` of ``max(where) + 1``, from the docs' rules."""
    count = max(where) + 1
    f = _flight(inst, position, count)
    layers = [inst.layers[i] for i in part]
    total = sum(_weight(inst, layer) + layer.kv_cache_bytes for layer in layers)
    buffers = [layer.buffer_bytes for layer in layers]
    total += max(buffers) if inst.buffer_reuse else sum(buffers)
    if inst.activation_recompute:  # its input per micro-batch in flight, its largest activation once
        first = min(part)
        received = _sent(inst.layers[first - 1]) if first > 0 else 0
        total += f * received + max(layer.activation_bytes for layer in layers)
    else:
        total += f * sum(layer.activation_bytes for layer in layers)
    names = {layer.name for layer in layers}
    for group in inst.constraints.tied:  # a shared weight once per partition
        held = sum(1 for name in group.layers if name in names)
        if held > 1:
            total -= (held - 1) * group.params * _BYTES_PER_PARAM[inst.dtype]
    if inst.edges:  # tensors relayed through this stage to a later one, per micro-batch in flight
        index = {layer.name: i for i, layer in enumerate(inst.layers)}
        consumers: dict[int, list[int]] = {}
        for a, b in inst.edges:
            consumers.setdefault(index[a], []).append(index[b])
        for u, users in consumers.items():
            if where[u] < position < max(where[v] for v in users):
                total += f * _sent(inst.layers[u])
    return total


def _keeps_rules(inst: Instance, parts: list[list[int]], where: list[int]) -> bool:
    c, count = inst.constraints, len(parts)
    index = {layer.name: i for i, layer in enumerate(inst.layers)}
    ends = {part[-1] for part in parts[:-1]}
    return (all(where[index[name]] == (p if p >= 0 else count + p) for name, p in c.pinned)
            and all(not c.max_layers_per_partition or len(p) <= c.max_layers_per_partition for p in parts)
            and all(not c.min_layers_per_partition or len(p) >= c.min_layers_per_partition for p in parts)
            and all(index[name] not in ends for name in c.no_cut_after)
            and all(index[name] in ends for name in c.must_cut_after)
            and all(len({where[index[name]] for name in g.layers}) == 1 for g in c.tied if g.mode == "together"))


def _fits(inst: Instance, loads: list[int]) -> bool:
    reserve = inst.constraints.reserve
    if inst.devices is None:
        return all(load <= inst.capacity - reserve for load in loads)
    caps = [d.capacity - reserve for d in inst.devices]
    if len(loads) > len(caps):
        return False
    if inst.device_order == "free":  # some distinct device for each: largest load on the largest device
        return all(load <= cap for load, cap in zip(sorted(loads, reverse=True), sorted(caps, reverse=True)))
    return all(load <= cap for load, cap in zip(loads, caps))


def _plans(inst: Instance) -> Iterator[list[list[int]]]:
    """Every plan's partitions: contiguous runs on a chain, ordered convex sets on a DAG."""
    n = inst.num_layers
    if not inst.edges:
        for k in range(1, n + 1):
            for cuts in itertools.combinations(range(1, n), k - 1):
                bounds = [0, *cuts, n]
                yield [list(range(bounds[j], bounds[j + 1])) for j in range(k)]
        return
    index = {layer.name: i for i, layer in enumerate(inst.layers)}
    edges = [(index[a], index[b]) for a, b in inst.edges]
    for k in range(1, n + 1):
        for where in itertools.product(range(k), repeat=n):
            if len(set(where)) == k and all(where[a] <= where[b] for a, b in edges):
                yield [[i for i in range(n) if where[i] == j] for j in range(k)]


def oracle(inst: Instance) -> dict[int, int]:
    """The smallest largest stage (bytes) of every partition count that has a plan."""
    best: dict[int, int] = {}
    for parts in _plans(inst):
        where = [0] * inst.num_layers
        for j, part in enumerate(parts):
            for i in part:
                where[i] = j
        loads = [stage_bytes(inst, part, j, where) for j, part in enumerate(parts)]
        if _fits(inst, loads) and _keeps_rules(inst, parts, where):
            k = len(parts)
            best[k] = min(best.get(k, max(loads)), max(loads))
    return best


# -- random instances -----------------------------------------------------------------


@st.composite
def instances(draw) -> Instance:  # type: ignore[no-untyped-def]
    """A small instance (1–6 layers; DAGs 1–5) with a random mix of the options."""
    kind = draw(st.sampled_from(["chain", "chain", "ordered", "free", "dag"]))
    n = draw(st.integers(1, 5 if kind == "dag" else 6))
    small = st.integers(0, 12)
    dtype = draw(st.sampled_from(["bf16", "fp32"]))
    unit = draw(st.sampled_from([1, 1, 10**6, 10**9 + 7]))  # large coefficients, as real models have
    layers = []
    for i in range(n):
        params = draw(st.integers(1, 8))
        layers.append(Layer(
            f"l{i}", params=params * unit, activation_bytes=draw(small) * unit, buffer_bytes=draw(small) * unit,
            kv_cache_bytes=draw(st.sampled_from([0, 0, 3])) * unit,
            output_bytes=draw(st.none() | small.map(lambda b: b * unit))))
    schedule = draw(st.sampled_from(["none", "none", "gpipe", "1f1b"]))
    options = {"schedule": schedule, "micro_batches": 1 if schedule == "none" else draw(st.integers(1, 3))}
    tied: tuple[TiedGroup, ...] = ()
    pinned: tuple[tuple[str, int], ...] = ()
    rules: dict[str, object] = {}
    if kind != "dag":
        options["buffer_reuse"] = draw(st.booleans())
        options["activation_recompute"] = draw(st.booleans())
        if n >= 2 and draw(st.booleans()):
            a, b = sorted(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)))
            mode = draw(st.sampled_from(["replicate", "together"])) if kind == "chain" else "replicate"
            tied = (TiedGroup((f"l{a}", f"l{b}"), params=min(layers[a].params, layers[b].params), mode=mode),)
    if kind in ("chain", "dag") and draw(st.integers(0, 3)) == 0:
        pinned = tuple((f"l{i}", draw(st.sampled_from([0, 1, -1]))) for i in draw(st.sets(st.integers(0, n - 1),
                                                                                            max_size=2)))
        rules = {"max_layers_per_partition": draw(st.none() | st.integers(2, 4)),
                 "min_layers_per_partition": draw(st.none() | st.integers(1, 2))}
        if kind == "chain" and n >= 3:
            cuts = draw(st.lists(st.integers(0, n - 2), max_size=2, unique=True))
            rules["no_cut_after"] = tuple(f"l{i}" for i in cuts[:1])
            rules["must_cut_after"] = tuple(f"l{i}" for i in cuts[1:])
    reserve = draw(st.sampled_from([0, 0, 1])) * unit
    constraints = Constraints(tied=tied, pinned=pinned, reserve=reserve, **rules)  # type: ignore[arg-type]
    probe = Instance(name="probe", capacity=10**30, layers=layers, dtype=dtype, constraints=Constraints(tied=tied),
                     **options)  # type: ignore[arg-type]
    largest = max(probe.sizes)
    total = sum(probe.sizes) * max(1, options["micro_batches"])  # type: ignore[call-overload]
    # Capacities around what matters: below the largest layer (infeasible), a layer or two, the whole model.
    sized = st.sampled_from([largest // 2, largest, largest + total // 4, largest + total // 2, total])
    capacity = reserve + max(1, draw(sized) + draw(st.integers(0, 3)) * unit // 2)
    edges = None
    if kind == "dag":
        order = draw(st.permutations(range(n)))  # listed order need not be topological
        edges = tuple((f"l{order[a]}", f"l{order[b]}") for a in range(n) for b in range(a + 1, n)
                      if b == a + 1 or draw(st.booleans()))
    devices = None
    device_order = "ordered"
    if kind in ("ordered", "free"):
        count = draw(st.integers(1, 4))
        devices = tuple(Device(f"g{j}", reserve + max(1, draw(sized) + draw(st.integers(0, 3)) * unit // 2))
                        for j in range(count))
        device_order = kind
        capacity = None  # type: ignore[assignment]
    return Instance(name="fuzz", capacity=capacity, layers=layers, dtype=dtype, constraints=constraints, edges=edges,
                    devices=devices, device_order=device_order, **options)  # type: ignore[arg-type]


@st.composite
def problems(draw):  # type: ignore[no-untyped-def]
    """An instance, an objective (with k for min_bottleneck) and the models' warm start."""
    inst = draw(instances())
    objective = draw(st.sampled_from(["min_partitions", "min_partitions", "min_bottleneck"]))
    k = draw(st.integers(1, inst.num_layers)) if objective == "min_bottleneck" else None
    return inst, objective, k, draw(st.sampled_from(WARM_STARTS))


# -- the check -----------------------------------------------------------------------


@dataclass
class Outcome:
    """What one problem gave: the runs made (method name → status), and the disagreements."""

    runs: dict[str, str]
    failures: list[str]


def check(inst: Instance, objective: str, k: int | None, warm_start: str) -> Outcome:
    """Solve with every method that accepts the problem; validate each plan and hold it against
    the oracle. Returns the runs and any disagreement (an empty list: all agree)."""
    best = oracle(inst)
    if objective == "min_partitions":
        expected = (min(best), best[min(best)]) if best else None
    else:
        expected = (best[k],) if k in best else None
    runs: dict[str, str] = {}
    failures: list[str] = []
    for method, options in RUNS:
        name = method + ("-" + options["backend"] if "backend" in options else "") + \
            ("-1worker" if options.get("num_workers") == 1 else "")
        extra = dict(options)
        if method in ("cpsat", "mip"):
            extra["warm_start"] = warm_start
        try:
            plan = solve(inst, method, objective=objective, num_partitions=k, **extra)  # type: ignore[arg-type]
        except OptionError:
            continue  # the method does not take this problem (layerfit.methods.capabilities says why)
        runs[name] = plan.status.value
        if "contradicted by the DP" in (plan.backend_status or ""):
            # solve() returned the DP's plan; the backend itself was wrong, which the fuzz is here to find
            failures.append(f"{name}: the backend's answer was {plan.backend_status}: {plan.explanation}")
            continue
        try:
            validate_plan(inst, plan)
        except Exception as exc:  # noqa: BLE001 - every failure is reported with its problem
            failures.append(f"{name}: validate_plan: {exc}")
            continue
        got = (plan.objective, plan.secondary_objective) if objective == "min_partitions" else (plan.objective,)
        if method == "greedy":
            if plan.status.has_plan and (expected is None or got[0] < expected[0]):
                failures.append(f"{name}: a plan {got} better than the oracle's {expected}")
            continue
        if expected is None:
            if plan.status is not Status.INFEASIBLE:
                failures.append(f"{name}: {plan.status} {got}, the oracle finds no plan")
        elif plan.status is not Status.OPTIMAL or got != expected:
            failures.append(f"{name}: {plan.status} {got} ({plan.backend_status}), the oracle's optimum {expected}")
    return Outcome(runs, failures)


def describe(inst: Instance, objective: str, k: int | None, warm_start: str) -> str:
    """The problem as one line of JSON, to reproduce a failure."""
    import json

    return json.dumps({"instance": inst.to_dict(), "objective": objective, "num_partitions": k,
                       "warm_start": warm_start})
