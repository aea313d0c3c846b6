"""Test helpers: random instances, an exhaustive oracle, the list of exact methods."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import strategies as st

from solver import Instance, Layer

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = ROOT / "instances"

# The exact methods, as (method, options): one conformance suite for every backend.
EXACT = [
    ("dp", {}),
    ("cpsat", {}),
    ("mip", {"backend": "cbc"}),
    ("mip", {"backend": "highs"}),
]
EXACT_IDS = ["dp", "cpsat", "mip-cbc", "mip-highs"]
MODEL_METHODS = [m for m in EXACT if m[0] != "dp"]
MODEL_IDS = [i for i in EXACT_IDS if i != "dp"]


def make_instance(sizes: list[int], capacity: int, *, activations: list[int] | None = None) -> Instance:
    """An instance whose layer i has size sizes[i] (split into weights and an activation)."""
    activations = activations or [0] * len(sizes)
    layers = [
        Layer(f"l{i}", weight_bytes=s - min(a, s), activation_bytes=min(a, s)) for i, (s, a) in enumerate(zip(sizes, activations))
    ]
    return Instance(name="t", capacity=capacity, layers=layers)


@st.composite
def small_instances(draw, max_layers: int = 8, feasible: bool | None = None) -> Instance:
    """Small random chains, sizes with ties and zeros, capacities around the interesting range."""
    n = draw(st.integers(1, max_layers))
    sizes = draw(st.lists(st.one_of(st.integers(0, 20), st.integers(0, 1000)), min_size=n, max_size=n))
    if max(sizes) == 0:
        sizes[0] = 1
    largest, total = max(sizes), sum(sizes)
    if feasible is False:
        capacity = draw(st.integers(1, largest - 1)) if largest > 1 else None
        if capacity is None:
            sizes[0] = 2
            capacity = 1
    elif feasible is True:
        capacity = draw(st.integers(largest, max(largest, total)))
    else:
        capacity = draw(st.integers(max(1, largest // 2), max(largest, total)))
    activations = draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
    return make_instance(sizes, capacity, activations=activations)


def all_plans(n: int):
    """Every way to cut a chain of n layers into contiguous non-empty partitions."""
    for k in range(1, n + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = [0, *cuts, n]
            yield [list(range(bounds[j], bounds[j + 1])) for j in range(k)]


def oracle(instance: Instance) -> dict:
    """Exhaustive optimum: fewest partitions and its best bottleneck; best bottleneck per k."""
    sizes, capacity = instance.sizes, instance.capacity
    best_count = None
    per_k: dict[int, int] = {}
    for plan in all_plans(len(sizes)):
        loads = [sum(sizes[i] for i in part) for part in plan]
        if max(loads) > capacity:
            continue
        k = len(plan)
        per_k[k] = min(per_k.get(k, max(loads)), max(loads))
        if best_count is None or k < best_count:
            best_count = k
    lex = None if best_count is None else (best_count, per_k[best_count])
    return {"lexicographic": lex, "bottleneck": per_k}
