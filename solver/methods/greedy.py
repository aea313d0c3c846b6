"""The seed methodology's GreedyLayerPartition, exactly as written, and its bounds.

Greedy walks the layers in order and closes a partition when the next layer would
overflow the capacity C. The seed's pseudo-code opens an over-capacity partition for a
layer larger than C on its own; :func:`greedy_partition` keeps that behaviour (it is the
seed's algorithm) and :func:`layerfit.solve` reports such an instance INFEASIBLE instead.

Theorem (greedy stays ahead). On an additive chain (S(P) = Σ size(l), one capacity C,
every size(l) ≤ C) greedy uses the fewest partitions. Proof: let g_j be the index of the
last layer of greedy's j-th partition and o_j that of any feasible plan. By induction
g_j ≥ o_j: it holds for j = 0 (the empty prefix), and if g_{j-1} ≥ o_{j-1} then the
layers o_{j-1}+1 … o_j fit in one partition, so the (shorter or equal) run
g_{j-1}+1 … o_j fits too and greedy, which closes a partition only when the next layer
would overflow, extends at least that far: g_j ≥ o_j. So when the other plan covers all
n layers with k partitions, greedy has covered them with at most k. ∎

The same argument gives the bounds the exact models use to restrict each layer's
partition index: in every plan whose partitions all fit a capacity U, layer i lies in a
partition no earlier than the one greedy gives it at capacity U (forward), and, with k
partitions in all, no later than k − 1 minus its index in greedy run backwards at U.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["greedy_partition", "greedy_indices", "partition_ranges"]


def greedy_partition(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """GreedyLayerPartition(L, C) of the seed methodology, line for line.

    Parameters
    ----------
    sizes:
        size(l) of each layer in order, in bytes.
    capacity:
        C, in bytes.

    Returns
    -------
    list[list[int]]
        The partitions as lists of layer indices. A layer larger than C ends up alone in
        a partition that exceeds C, as in the seed's pseudo-code.

    Examples
    --------
    >>> greedy_partition([3, 3, 3, 5], 6)
    [[0, 1], [2], [3]]
    """
    partitions: list[list[int]] = []
    current_partition: list[int] = []
    current_size = 0
    for index, layer_size in enumerate(sizes):
        if current_size + layer_size <= capacity:
            current_partition.append(index)
            current_size += layer_size
        else:
            if current_partition:
                partitions.append(current_partition)
            current_partition = [index]
            current_size = layer_size
    if current_partition:
        partitions.append(current_partition)
    return partitions


def greedy_indices(sizes: Sequence[int], capacity: int) -> list[int]:
    """The partition index :func:`greedy_partition` gives each layer (the same walk)."""
    indices = []
    part = current = 0
    for index, layer_size in enumerate(sizes):
        if index and current + layer_size > capacity:
            part += 1
            current = 0
        current += layer_size
        indices.append(part)
    return indices


def partition_ranges(sizes: Sequence[int], capacity: int, k: int) -> list[tuple[int, int]]:
    """For each layer, the partition indices (first, last) it may take in a k-partition plan.

    Valid for every plan with exactly ``k`` non-empty contiguous partitions that all fit
    ``capacity`` (the theorem in this module's docstring), and also intersected with the
    trivial range: layer i is in a partition between k − n + i and i. A layer whose first
    exceeds its last proves that no such plan exists.
    """
    n = len(sizes)
    forward = greedy_indices(sizes, capacity)
    backward = greedy_indices(sizes[::-1], capacity)[::-1]
    return [(max(forward[i], k - n + i), min(k - 1 - backward[i], i)) for i in range(n)]
