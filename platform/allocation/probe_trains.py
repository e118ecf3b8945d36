"""The `probe_trains` allocator (docs/method.md, The allocator zoo). Not built yet."""

from __future__ import annotations

from dibs.platform.core.config import AllocationConfig


class ProbeTrainsAllocator:
    def __init__(self, cfg: AllocationConfig):
        raise NotImplementedError("allocation.allocator: probe_trains is not built yet")
