"""Exact partitioning of an additive chain: fewest partitions, and the smallest bottleneck.

Notation: n layers with sizes s_1 … s_n, prefix sums P_0 = 0, P_i = s_1 + … + s_i, and
capacity C. A plan with k contiguous partitions has bottleneck max_j S(P_j).

* ``min_bottleneck(sizes, k)`` solves  B*(k) = min over k-partitions of max_j S(P_j).
  B*(k) is the least B whose greedy probe (close a partition when the next layer would
  exceed B) needs at most k partitions. It lies in [L, L + max s] with
  L = max(max s, ⌈P_n / k⌉) (a probe at L + max s closes each partition above P_n / k,
  so it cannot need k + 1). The search is a bisection that snaps to sums of contiguous
  runs: a probe that succeeds lowers the upper end to the largest partition it built,
  one that fails raises the lower end to the smallest sum a partition of it would have
  had with its next layer (no B below that changes the probe). Each probe is
  O(k log n) by binary search on the prefix sums; O(log max s) probes.
* ``min_partitions(sizes, C)`` is lexicographic: k* = the greedy count (optimal, see
  :mod:`layerfit.methods.greedy`), then B*(k*), which is ≤ C.

References
----------
.. [1] A. Pinar and C. Aykanat, "Fast optimal load balancing algorithms for 1D
   partitioning", J. Parallel Distrib. Comput. 64(8), 2004 (probe-based bisection).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

__all__ = ["prefix_sums", "probe", "bottleneck_lower_bound", "min_bottleneck", "min_partitions", "split_to"]


def prefix_sums(sizes: Sequence[int]) -> list[int]:
    """P_0 = 0, P_i = s_1 + … + s_i."""
    return [0, *accumulate(sizes)]


def probe(prefix: Sequence[int], bound: int, limit: int) -> tuple[int, int, int | None]:
    """Greedy probe at ``bound`` (every size ≤ bound), stopping after ``limit + 1`` partitions.

    Returns
    -------
    (count, largest, next_bound)
        ``count``: partitions used (``limit + 1`` means "more than limit");
        ``largest``: the largest partition sum among those built;
        ``next_bound``: the least B > bound at which some built partition would take one
        more layer (None when the probe covered every layer with no partition closed early).
    """
    n = len(prefix) - 1
    start = count = largest = 0
    next_bound: int | None = None
    while start < n and count <= limit:
        # end: the last layer index whose run from start fits the bound.
        end = bisect_right(prefix, prefix[start] + bound, start + 1) - 1
        run = prefix[end] - prefix[start]
        if run > largest:
            largest = run
        if end < n:
            extended = prefix[end + 1] - prefix[start]
            if next_bound is None or extended < next_bound:
                next_bound = extended
        count += 1
        start = end
    return count, largest, next_bound


def bottleneck_lower_bound(sizes: Sequence[int], k: int) -> int:
    """L = max(max s, ⌈Σ s / k⌉): no k-partition has a smaller bottleneck."""
    return max(max(sizes), -(-sum(sizes) // k))


def _cuts_at(prefix: Sequence[int], bound: int) -> list[list[int]]:
    """The greedy probe's partitions at ``bound`` as lists of layer indices."""
    n = len(prefix) - 1
    parts = []
    start = 0
    while start < n:
        end = bisect_right(prefix, prefix[start] + bound, start + 1) - 1
        parts.append(list(range(start, end)))
        start = end
    return parts


def split_to(partitions: list[list[int]], sizes: Sequence[int], k: int) -> list[list[int]]:
    """Split partitions until there are ``k`` (k ≤ n); the bottleneck never grows.

    Splits the partition with the largest sum among those with two or more layers, at
    the point that best balances its two halves.
    """
    parts = [list(p) for p in partitions]
    while len(parts) < k:
        candidates = [j for j, p in enumerate(parts) if len(p) > 1]
        j = max(candidates, key=lambda c: sum(sizes[i] for i in parts[c]))
        part = parts[j]
        total = sum(sizes[i] for i in part)
        best_cut, best_value, left = 1, None, 0
        for cut in range(1, len(part)):
            left += sizes[part[cut - 1]]
            value = max(left, total - left)
            if best_value is None or value < best_value:
                best_cut, best_value = cut, value
        parts[j : j + 1] = [part[:best_cut], part[best_cut:]]
    return parts


def min_bottleneck(sizes: Sequence[int], k: int) -> tuple[int, list[list[int]]]:
    """B*(k) and a plan with exactly ``k`` partitions that attains it (1 ≤ k ≤ n)."""
    n = len(sizes)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of layers ({n}), got {k}")
    prefix = prefix_sums(sizes)
    lo = bottleneck_lower_bound(sizes, k)
    _, hi, _ = probe(prefix, lo + max(sizes), k)
    while lo < hi:
        mid = (lo + hi) // 2
        count, largest, next_bound = probe(prefix, mid, k)
        if count <= k:
            hi = largest
        else:
            # next_bound is set: a probe that needs more than k partitions closed some early.
            lo = max(mid + 1, next_bound or mid + 1)
    return hi, split_to(_cuts_at(prefix, hi), sizes, k)


def min_partitions(sizes: Sequence[int], capacity: int) -> tuple[int, int, list[list[int]]] | None:
    """Lexicographic optimum: (k*, B*(k*), plan), or None when a layer exceeds ``capacity``."""
    if max(sizes) > capacity:
        return None
    count, _, _ = probe(prefix_sums(sizes), capacity, len(sizes))
    value, partitions = min_bottleneck(sizes, count)
    return count, value, partitions
