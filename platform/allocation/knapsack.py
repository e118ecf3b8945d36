"""The `knapsack` allocator (docs/method.md, The allocator zoo). Not built yet."""

from __future__ import annotations

from dibs.platform.core.config import AllocationConfig


class KnapsackAllocator:
    def __init__(self, cfg: AllocationConfig):
        raise NotImplementedError("allocation.allocator: knapsack is not built yet")
