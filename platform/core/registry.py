"""Choices of a config field that code may add at run time: the allocators.

`allocation.allocator` takes a built-in allocator or a name registered with
`dibs.platform.allocation.factory.register_allocator`. The registry sits here, at the bottom layer, because
the config validates against its names; the factories it keeps are typed where allocators are known
(allocation/factory.py). A registration holds in the process that made it (a Ray worker is another process:
an allocator registered in a script runs with `runtime.executor: inline`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BUILTIN_ALLOCATORS = (
    "uniform",
    "gvm",
    "gvm_reuse",
    "dapo",
    "gvm_oracle",
    "reinforce_ada",
    "greso",
    "knapsack",
    "variance",
    "probe_trains",
)


class Registry:
    """Built-in names, plus registered ones each with its factory. Registering a name again replaces its
    factory (re-running a notebook cell works); a built-in name cannot be taken."""

    def __init__(self, what: str, builtin: tuple[str, ...]):
        self.what, self.builtin = what, builtin
        self._extra: dict[str, Callable[..., Any]] = {}

    def names(self) -> tuple[str, ...]:
        return self.builtin + tuple(sorted(self._extra))

    def __contains__(self, name: object) -> bool:
        return name in self.builtin or name in self._extra

    def register(self, name: str, factory: Callable[..., Any]) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"register {self.what}: the name must be an identifier, got {name!r}")
        if name in self.builtin:
            raise ValueError(f"register {self.what}: {name!r} is built in; pick another name")
        if not callable(factory):
            raise TypeError(
                f"register {self.what} {name!r}: the factory must be callable, got {type(factory).__name__}"
            )
        self._extra[name] = factory

    def unregister(self, name: str) -> None:
        if name not in self._extra:
            raise KeyError(
                f"unregister {self.what}: {name!r} is not registered (registered: "
                f"{', '.join(sorted(self._extra)) or 'none'})"
            )
        del self._extra[name]

    def factory(self, name: str) -> Callable[..., Any] | None:
        """The registered factory of `name`; None for a built-in or unknown name."""
        return self._extra.get(name)

    def unknown(self, name: str) -> str:
        """The error message for a name that is not a choice."""
        return f"unknown {self.what} {name!r}; known: {', '.join(self.names())}"


ALLOCATORS = Registry("allocator", BUILTIN_ALLOCATORS)
