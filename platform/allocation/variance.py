"""The `variance` allocator (docs/method.md, The allocator zoo). Not built yet."""

from __future__ import annotations

from dibs.platform.core.config import AllocationConfig


class VarianceAllocator:
    def __init__(self, cfg: AllocationConfig):
        raise NotImplementedError("allocation.allocator: variance is not built yet")
