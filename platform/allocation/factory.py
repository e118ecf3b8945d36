"""`build_allocator`: the allocator a config names. Above allocators.py and dapo.py, since dapo.py builds on
allocators.py's types and the choice spans both."""

from __future__ import annotations

from dibs.platform.allocation.allocators import (
    Allocator,
    GVMAllocator,
    GVMOracleAllocator,
    GVMReuseAllocator,
    UniformAllocator,
)
from dibs.platform.allocation.dapo import DAPOAllocator
from dibs.platform.core.config import AllocationConfig


def build_allocator(cfg: AllocationConfig) -> Allocator:
    """The allocator named by `allocation.allocator` (five implementations: a match, not a registry)."""
    match cfg.allocator:
        case "uniform":
            return UniformAllocator(cfg.n_per_prompt)
        case "gvm":
            return GVMAllocator(cfg)
        case "gvm_reuse":
            return GVMReuseAllocator(cfg)
        case "gvm_oracle":
            return GVMOracleAllocator(cfg)
        case "dapo":
            return DAPOAllocator(cfg)
    raise ValueError(f"allocation.allocator: unknown allocator {cfg.allocator!r}")
