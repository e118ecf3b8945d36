"""Micro-batches that waste the least padding.

Each micro-batch is cut to its longest row, so a micro-batch of `n` samples whose longest has `w` tokens
costs about `n * w` token-slots of forward and backward, plus a fixed cost per call (kernel launches,
guards, the loss). `padding_partition` picks micro-batches of at most `max_size` samples minimising
the sum of `n * w + overhead` over micro-batches, by dynamic programming over the samples sorted by
length. Sorted runs lose nothing: for any partition, handing its micro-batches (in decreasing order of
their longest row) consecutive runs of the sorted samples of the same sizes never makes a longest row
longer. Pure function over a tensor of lengths.
"""

import numpy as np
import torch
from torch import Tensor


def padding_partition(lengths: Tensor, max_size: int, overhead: float, min_size: int = 1) -> list[Tensor]:
    """Index tensors of the micro-batches, longest first, each of `min_size` to `max_size` samples, that
    minimise sum(samples * longest length + overhead). `overhead` is the fixed cost of one micro-batch
    in token-slots: 0 splits every distinct length apart, a large value gives ceil(B / max_size)
    micro-batches. Where no partition keeps every micro-batch at `min_size` or more (B = 1, say), the
    bound is dropped. Ties keep the original order of equal lengths (a stable sort)."""
    if lengths.dim() != 1:
        raise ValueError(f"lengths must have shape [B], got {tuple(lengths.shape)}")
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got min_size {min_size}, max_size {max_size}")
    if overhead < 0:
        raise ValueError(f"overhead must be non-negative, got {overhead}")
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_len = lengths[order].double().numpy()
    start = _best_starts(sorted_len, min_size, max_size, overhead)
    if start is None:
        start = _best_starts(sorted_len, 1, max_size, overhead)
    assert start is not None  # runs of 1..max_size always cut n samples
    runs, i = [], len(order)
    while i > 0:
        runs.append(order[int(start[i]) : i])
        i = int(start[i])
    return runs[::-1]


def _best_starts(sorted_len: np.ndarray, min_size: int, max_size: int, overhead: float) -> np.ndarray | None:
    """start[i]: where the last run of the cheapest partition of the first i sorted samples begins;
    None when the n samples cannot be cut into runs of min_size..max_size."""
    n = len(sorted_len)
    best = np.full(n + 1, np.inf)  # best[i]: cost of the first i sorted samples
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    for j in range(n):  # best[j] is final here: push the runs that start at j (cut to row j, the longest)
        lo, hi = j + min_size, min(n, j + max_size)
        if lo > hi or not np.isfinite(best[j]):
            continue
        cost = best[j] + np.arange(min_size, hi - j + 1) * sorted_len[j] + overhead
        better = cost < best[lo : hi + 1]  # strict: among equal costs the earliest start, larger last run
        best[lo : hi + 1][better] = cost[better]
        start[lo : hi + 1][better] = j
    return start if n == 0 or np.isfinite(best[n]) else None
