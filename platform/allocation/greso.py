"""The `greso` allocator (docs/method.md, The allocator zoo). Not built yet."""

from __future__ import annotations

from dibs.platform.core.config import AllocationConfig


class GresoAllocator:
    def __init__(self, cfg: AllocationConfig):
        raise NotImplementedError("allocation.allocator: greso is not built yet")
