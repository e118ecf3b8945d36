"""Micro-batch partition (algorithms/batching.py): hand-computed optima and invariants."""

import pytest
import torch

from dibs.algorithms.batching import padding_partition

pytestmark = pytest.mark.unit


def _cost(lengths, runs, overhead):
    return sum(len(r) * int(lengths[r].max()) + overhead for r in runs)


def test_hand_computed_split():
    # Lengths 10, 10, 2, 2 with at most 4 a micro-batch: one call costs 4 * 10 + o; two calls cost
    # 2 * 10 + 2 * 2 + 2o = 24 + 2o. Splitting wins while 24 + 2o < 40 + o, i.e. o < 16.
    lengths = torch.tensor([2, 10, 2, 10])
    runs = padding_partition(lengths, 4, overhead=15)
    assert [r.tolist() for r in runs] == [[1, 3], [0, 2]]
    runs = padding_partition(lengths, 4, overhead=17)
    assert [r.tolist() for r in runs] == [[1, 3, 0, 2]]


def test_size_cap_and_large_overhead_give_fixed_chunks():
    lengths = torch.tensor([6, 10, 1, 7, 3, 9, 2])
    runs = padding_partition(lengths, 3, overhead=1e9)
    # Fewest calls, ceil(7 / 3) = 3, then the cheapest cut of the sorted 10 9 7 6 3 2 1 into runs of at
    # most 3, by hand over all six size patterns: 3+3+1 -> 30+18+1 = 49, 3+1+3 -> 30+6+9 = 45,
    # 1+3+3 -> 10+27+9 = 46, 3+2+2 -> 30+12+4 = 46, 2+3+2 -> 20+21+4 = 45, 2+2+3 -> 20+14+9 = 43.
    assert [r.tolist() for r in runs] == [[1, 5], [3, 0], [4, 6, 2]]
    assert max(len(r) for r in runs) <= 3


def test_zero_overhead_groups_equal_lengths():
    lengths = torch.tensor([4, 4, 6, 4, 6])
    runs = padding_partition(lengths, 8, overhead=0)
    assert [r.tolist() for r in runs] == [[2, 4], [0, 1, 3]]
    assert _cost(lengths, runs, 0) == int(lengths.sum())  # no padding at all


def test_optimal_against_brute_force():
    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        n = int(torch.randint(1, 7, (1,), generator=gen))
        lengths = torch.randint(1, 20, (n,), generator=gen)
        size, overhead = int(torch.randint(1, 4, (1,), generator=gen)), float(trial % 4) * 5
        runs = padding_partition(lengths, size, overhead)
        assert sorted(torch.cat(runs).tolist()) == list(range(n))  # every sample exactly once
        assert all(1 <= len(r) <= size for r in runs)
        best = min(
            _cost(lengths, [torch.tensor(b) for b in blocks], overhead)
            for blocks in _set_partitions(list(range(n)))
            if all(len(b) <= size for b in blocks)
        )
        assert _cost(lengths, runs, overhead) == best


def _set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1 :]
        yield [[first]] + part


def test_min_size_avoids_singletons_where_it_can():
    # Sorted 60 | 10 10 10, overhead 100: splitting off the 60 costs (60 + 100) + (3*10 + 100) = 290,
    # one run costs 4*60 + 100 = 340. With min_size 2 the split must be 2 + 2, (2*60 + 100) + (2*10 +
    # 100) = 340, tied with the single run; the DP keeps the earliest start, so one run of 4.
    lengths = torch.tensor([10, 60, 10, 10])
    assert [r.tolist() for r in padding_partition(lengths, 4, overhead=100)] == [[1], [0, 2, 3]]
    assert [r.tolist() for r in padding_partition(lengths, 4, overhead=100, min_size=2)] == [[1, 0, 2, 3]]
    # One sample cannot make a run of 2: the bound is dropped, not the sample.
    assert [r.tolist() for r in padding_partition(torch.tensor([7]), 4, 1.0, min_size=2)] == [[0]]
    # Brute force under the bound.
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        n = int(torch.randint(2, 7, (1,), generator=gen))
        lengths = torch.randint(1, 30, (n,), generator=gen)
        runs = padding_partition(lengths, 3, 10.0, min_size=2)
        best = min(
            _cost(lengths, [torch.tensor(b) for b in blocks], 10.0)
            for blocks in _set_partitions(list(range(n)))
            if all(2 <= len(b) <= 3 for b in blocks)
        )
        assert all(2 <= len(r) <= 3 for r in runs) and _cost(lengths, runs, 10.0) == best


def test_empty_and_bad_inputs():
    assert padding_partition(torch.tensor([], dtype=torch.long), 4, 1.0) == []
    with pytest.raises(ValueError, match="max_size"):
        padding_partition(torch.tensor([1]), 0, 1.0)
    with pytest.raises(ValueError, match="min_size"):
        padding_partition(torch.tensor([1]), 2, 1.0, min_size=3)
    with pytest.raises(ValueError, match="overhead"):
        padding_partition(torch.tensor([1]), 1, -1.0)
    with pytest.raises(ValueError, match="shape"):
        padding_partition(torch.ones(2, 2), 1, 1.0)
