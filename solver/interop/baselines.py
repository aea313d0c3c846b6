"""The split rules people run today, re-implemented from their published descriptions.

Each takes the layers' sizes (bytes; DeepSpeed's rule takes parameter counts) and a number
of stages k, and returns the partitions as lists of layer indices. They are baselines for
:mod:`benchmarks`, not planners: none of them knows the capacity except accelerate's,
which fills devices under ``max_memory`` like its ``infer_auto_device_map``.

even_split           Megatron-LM and vLLM: equal layer counts. vLLM's remainder rule: the
                     r leftover layers go one each to the stages before the last, from the
                     second-to-last backwards (``get_pp_indices``).
vllm_fewer_first_last  vLLM's partition strategy ``less_layer_in_first_last_partition`` (its pull
                     request #6920): with k > 2, the first and last stage take (k − 2) // 2 layers
                     fewer than n // k and the middle ones one more; what is left goes one each
                     from the last stage backwards. k ≤ 2: even counts, the remainder to the
                     stages after the first.
deepspeed_parameters DeepSpeed ``PipelineModule(partition_method="parameters")``: its current
                     ``partition_balanced`` is the linear-partition DP over trainable
                     parameter counts minimising (largest − smallest) part, ties to the
                     latest split point.
accelerate_sequential  accelerate ``device_map="sequential"``: fill device 0, then 1, … each
                     up to its ``max_memory``; the main device (0) keeps room for the largest
                     layer still to place (for offloading). Layers left over do not fit.
accelerate_balanced  accelerate ``device_map="balanced"`` (``get_balanced_memory``): caps each
                     device but the last at total / k + 1.25 × the largest no-split block (a
                     layer here), then fills as ``sequential``.
torchgpipe_balance   torchgpipe ``balance_by_size``: Bárány–Grinberg block partition — start
                     from n // k layers a block, move one boundary element at a time toward the
                     lightest block until the heaviest is at most the lightest plus one element
                     (sizes normalised to [0, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BASELINES",
    "even_split",
    "vllm_fewer_first_last",
    "vllm_partitions",
    "deepspeed_parameters",
    "accelerate_sequential",
    "accelerate_balanced",
    "torchgpipe_balance",
]


def _from_counts(counts: Sequence[int]) -> list[list[int]]:
    parts, start = [], 0
    for count in counts:
        parts.append(list(range(start, start + count)))
        start += count
    return parts


def even_split(n: int, k: int) -> list[list[int]]:
    """Equal layer counts; the remainder to the stages before the last (vLLM)."""
    counts = [n // k] * k
    for i in range(2, n % k + 2):
        counts[-i] += 1
    return _from_counts(counts)


def vllm_fewer_first_last(n: int, k: int) -> list[list[int]]:
    """vLLM's ``less_layer_in_first_last_partition``: fewer layers on the first and last stage."""
    base = n // k
    if k <= 2:  # vLLM's even_with_remainder_even: the remainder to the stages after the first
        counts = [base + (1 if 0 < j <= n % k else 0) for j in range(k)]
        return _from_counts(counts)
    counts = [base - (k - 2) // 2 if j in (0, k - 1) else base + 1 for j in range(k)]
    left = n - sum(counts)
    for j in range(k - 1, -1, -1):
        if left <= 0:
            break
        counts[j] += 1
        left -= 1
    return _from_counts(counts)


VLLM_RULES = {"even": even_split, "fewer-first-last": vllm_fewer_first_last}


def vllm_partitions(names: Sequence[str], rule: str, k: int) -> list[list[int]]:
    """A vLLM rule's plan of a model's layers (named as the importer names them): the rule splits
    the decoder blocks over k ranks; the embedding (the layers before the blocks) runs on the first,
    the final norm and the head (the layers after them) on the last, as vLLM places them."""
    from .export import BLOCK_NAME

    blocks = [i for i, name in enumerate(names) if BLOCK_NAME.match(name)]
    counts = [len(part) for part in VLLM_RULES[rule](len(blocks), k)]
    counts[0] += blocks[0]
    counts[-1] += len(names) - blocks[-1] - 1
    return _from_counts(counts)


def deepspeed_parameters(params: Sequence[int], k: int) -> list[list[int]]:
    """DeepSpeed's linear-partition DP: minimise (max − min) of the parts' parameter counts."""
    import numpy as np

    n = len(params)
    if n <= k:  # DeepSpeed's partition_uniform: one layer a part, the rest empty
        return [[i] for i in range(n)] + [[] for _ in range(k - n)]
    prefix = np.zeros(n + 1)
    prefix[1:] = np.cumsum(params, dtype=float)
    inf = np.inf
    dp_max = np.full((n + 1, k + 1), inf)
    dp_min = np.full((n + 1, k + 1), inf)
    dp_cost = np.full((n + 1, k + 1), inf)
    position = np.zeros((n + 1, k + 1), dtype=int)
    dp_max[0, 0] = 0.0
    dp_cost[0, 0] = 0.0
    for i in range(1, n + 1):
        segment = prefix[i] - prefix[:i]  # part (k_, i] for every split point k_ < i
        for j in range(1, min(i, k) + 1):
            largest = np.maximum(dp_max[:i, j - 1], segment)
            smallest = np.minimum(dp_min[:i, j - 1], segment)
            cost = largest - smallest  # inf where part j − 1 cannot end at that split
            best = cost.min()
            if not np.isfinite(best):
                continue
            at = int(np.flatnonzero(cost == best)[-1])  # DeepSpeed keeps the last tie (>=)
            dp_cost[i, j], dp_max[i, j], dp_min[i, j] = best, largest[at], smallest[at]
            position[i, j] = at
    bounds = [n]
    for j in range(k, 0, -1):
        bounds.append(int(position[bounds[-1], j]))
    bounds.reverse()
    return [list(range(bounds[j], bounds[j + 1])) for j in range(k)]


def accelerate_sequential(sizes: Sequence[int], max_memory: Sequence[int]) -> tuple[list[list[int]], int]:
    """Fill devices in order; returns (partitions, number of layers that fit on no device)."""
    parts: list[list[int]] = [[] for _ in max_memory]
    device, used, i, n = 0, 0, 0, len(sizes)
    while i < n and device < len(max_memory):
        limit = max_memory[device]
        if device == 0:
            limit -= max(sizes[i:])  # the main device keeps room for the largest layer left
        if used + sizes[i] <= limit:
            parts[device].append(i)
            used += sizes[i]
            i += 1
        else:
            device, used = device + 1, 0
    return parts, n - i


def accelerate_balanced(sizes: Sequence[int], capacity: int, k: int) -> tuple[list[list[int]], int]:
    """get_balanced_memory's caps, then the sequential fill."""
    cap = sum(sizes) // k + int(1.25 * max(sizes))
    max_memory = [min(cap, capacity)] * (k - 1) + [capacity]
    return accelerate_sequential(sizes, max_memory)


def torchgpipe_balance(sizes: Sequence[int], k: int) -> list[list[int]]:
    """Bárány–Grinberg block partition, as torchgpipe's blockpartition.solve runs it."""
    n = len(sizes)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of layers ({n}), got {k}")
    low, span = min(sizes), max(sizes) - min(sizes)
    normal = [0.0 if span == 0 else (s - low) / span for s in sizes]
    splits = [n // k * (x + 1) for x in range(k - 1)] + [n]  # splits[i]: end of block i

    def block(i: int) -> float:
        return sum(normal[(splits[i - 1] if i else 0) : splits[i]])

    while True:
        heaviest, p = max((block(i), i) for i in range(k))
        while True:
            lightest, q = min((block(i), i) for i in range(k))
            if heaviest <= lightest + 1:
                return [list(range(a, b)) for a, b in zip([0] + splits[:-1], splits)]
            if p < q:  # move the last element of block q−1 into q
                h = q - 1
                splits[h] -= 1
            else:  # move the first element of block q+1 into q
                h = q + 1
                splits[q] += 1
            if p == h:
                break


BASELINES = ("even", "deepspeed-parameters", "accelerate-sequential", "accelerate-balanced", "torchgpipe-size")
