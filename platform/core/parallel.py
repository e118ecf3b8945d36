"""Data parallelism over ragged groups: which rank trains which prompt groups, and the collectives the
learner and the sharded rollout engine need (torch.distributed; gloo on CPU, NCCL on GPU).

`world == 1` is the single-process case: every method is a no-op or an identity, and torch.distributed
is never touched, so the same learner code runs with and without Ray Train.
"""

from __future__ import annotations

from typing import Any

import torch


class DataParallel:
    def __init__(self, rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.rank, self.world = rank, world

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, group_ids: torch.Tensor) -> torch.Tensor:
        """Indices of the samples this rank trains on: whole prompt groups (so group statistics never
        straddle ranks), the k-th group in sorted order going to rank k mod world."""
        groups = torch.unique(group_ids)  # sorted
        mine = groups[torch.arange(len(groups)) % self.world == self.rank]
        return torch.nonzero(torch.isin(group_ids, mine)).squeeze(-1)

    def all_reduce_sum_(self, tensors: list[torch.Tensor]) -> None:
        """In-place sum over ranks, one flattened buffer (one collective instead of one per tensor)."""
        if not self.active or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        torch.distributed.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def sum_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Sum of each rank's (token-weighted) statistics: every rank must pass the same keys."""
        if not self.active:
            return stats
        keys = sorted(stats)
        values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(values)
        return dict(zip(keys, values.tolist(), strict=True))

    def max_int(self, value: int) -> int:
        """The largest `value` over ranks."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.long)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def all_gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()
