"""The allocator a config names, and the registry that adds allocators to the built-in ones.

`build_allocator` looks `allocation.allocator` up among the built-in allocators and those added with
`register_allocator(name, factory)` (the names live in core/registry.py, so the config validates against
them). `build_stage` is the generation stage an allocator asks for: DAPO's dynamic sampling for `dapo`,
reinforce_ada's rounds for `reinforce_ada`, None (plain generation of the counts) for the rest. Above
allocators.py and dapo.py, since the choice spans both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from dibs.platform.allocation.allocators import (
    Allocator,
    GVMAllocator,
    GVMOracleAllocator,
    GVMReuseAllocator,
    UniformAllocator,
)
from dibs.platform.allocation.batch import GenerationStage
from dibs.platform.allocation.dapo import Refill
from dibs.platform.allocation.greso import GresoAllocator
from dibs.platform.allocation.knapsack import KnapsackAllocator
from dibs.platform.allocation.probe_trains import ProbeTrainsAllocator
from dibs.platform.allocation.reinforce_ada import AdaRounds, ReinforceAdaAllocator
from dibs.platform.allocation.variance import VarianceAllocator
from dibs.platform.core.config import AllocationConfig
from dibs.platform.core.registry import ALLOCATORS

AllocatorFactory = Callable[[AllocationConfig], Allocator]


def _uniform(cfg: AllocationConfig) -> Allocator:
    return UniformAllocator(cfg.n_per_prompt)


# dapo's counts are uniform; what makes it dapo is its generation stage (`build_refill`).
BUILTIN: Mapping[str, AllocatorFactory] = MappingProxyType(
    {
        "uniform": _uniform,
        "gvm": GVMAllocator,
        "gvm_reuse": GVMReuseAllocator,
        "dapo": _uniform,
        "gvm_oracle": GVMOracleAllocator,
        "reinforce_ada": ReinforceAdaAllocator,
        "greso": GresoAllocator,
        "knapsack": KnapsackAllocator,
        "variance": VarianceAllocator,
        "probe_trains": ProbeTrainsAllocator,
    }
)


def register_allocator(name: str, factory: AllocatorFactory) -> None:
    """Make `allocation.allocator: <name>` build `factory(cfg.allocation)` in this process. `name` must be
    an identifier and not a built-in name; registering it again replaces the factory."""
    ALLOCATORS.register(name, factory)


def unregister_allocator(name: str) -> None:
    ALLOCATORS.unregister(name)


def build_allocator(cfg: AllocationConfig) -> Allocator:
    """The allocator named by `allocation.allocator`."""
    factory = BUILTIN.get(cfg.allocator) or ALLOCATORS.factory(cfg.allocator)
    if factory is None:  # a config validated in another process, where the name was registered
        raise ValueError(
            f"allocation.allocator: {ALLOCATORS.unknown(cfg.allocator)} (a registered allocator "
            "exists only in the process that registered it: run it with runtime.executor: inline)"
        )
    return factory(cfg)


def build_stage(cfg: AllocationConfig) -> GenerationStage | None:
    """DAPO's dynamic sampling when the allocator is `dapo`, reinforce_ada's rounds for `reinforce_ada`;
    None: the loop generates the counts as they are."""
    if cfg.allocator == "dapo":
        return Refill(cfg)
    if cfg.allocator == "reinforce_ada":
        return AdaRounds(cfg)
    return None
