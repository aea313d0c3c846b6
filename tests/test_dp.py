"""Exact chain algorithms against exhaustive enumeration."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layerfit.methods.dp import bottleneck_lower_bound, min_bottleneck, min_partitions, probe, prefix_sums, split_to

from helpers import all_plans


def brute_bottleneck(sizes, k):
    return min(max(sum(sizes[i] for i in p) for p in plan) for plan in all_plans(len(sizes)) if len(plan) == k)


sizes_strategy = st.lists(st.one_of(st.integers(0, 9), st.integers(0, 10**12)), min_size=1, max_size=9).filter(any)


@given(sizes_strategy, st.data())
def test_min_bottleneck_is_exact(sizes, data):
    k = data.draw(st.integers(1, len(sizes)))
    value, parts = min_bottleneck(sizes, k)
    assert value == brute_bottleneck(sizes, k)
    assert len(parts) == k and all(parts)
    assert [i for p in parts for i in p] == list(range(len(sizes)))
    assert max(sum(sizes[i] for i in p) for p in parts) == value
    assert value >= bottleneck_lower_bound(sizes, k)


@given(sizes_strategy, st.integers(1, 10**12))
def test_min_partitions_is_lexicographically_exact(sizes, capacity):
    result = min_partitions(sizes, capacity)
    feasible = [plan for plan in all_plans(len(sizes)) if max(sum(sizes[i] for i in p) for p in plan) <= capacity]
    if not feasible:
        assert result is None
        return
    best = min((len(plan), max(sum(sizes[i] for i in p) for p in plan)) for plan in feasible)
    count, value, parts = result
    assert (count, value) == best
    assert len(parts) == count


def test_all_zero_sizes():
    value, parts = min_bottleneck([0, 0, 0], 2)
    assert value == 0 and len(parts) == 2 and all(parts)


def test_k_out_of_range():
    with pytest.raises(ValueError, match=r"k must be between 1 and the number of layers \(3\), got 4"):
        min_bottleneck([1, 2, 3], 4)


def test_probe_reports_the_next_bound():
    prefix = prefix_sums([3, 4, 5])
    # At 7: [3,4] [5]; [3,4] would take 5 more at 12.
    assert probe(prefix, 7, 5) == (2, 7, 12)
    assert probe(prefix, 12, 5) == (1, 12, None)


def test_split_to_never_raises_the_bottleneck():
    sizes = [5, 1, 1, 1, 5]
    parts = split_to([[0, 1, 2, 3, 4]], sizes, 3)
    assert len(parts) == 3 and max(sum(sizes[i] for i in p) for p in parts) <= 13
