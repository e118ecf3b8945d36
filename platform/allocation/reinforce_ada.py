"""The `reinforce_ada` allocator (docs/method.md, The allocator zoo). Not built yet."""

from __future__ import annotations

from dibs.platform.core.config import AllocationConfig


class ReinforceAdaAllocator:
    def __init__(self, cfg: AllocationConfig):
        raise NotImplementedError("allocation.allocator: reinforce_ada is not built yet")
