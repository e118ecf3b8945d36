"""Which task a run trains on: the config's `task.kind` names a factory here, which makes the task
(tasks/base.py) from the run's `TaskConfig`.

A new task is one new file and one line in `_TASKS`, or a `register_task(kind, factory)` call from user
code (a test, a plugin) before the run starts. Register it in the process that runs the loop: with
`runtime.executor: inline` that is the caller's; a Ray worker or a Ray job knows dibs' own tasks only.

The config (platform/core, below this layer) checks only the shape of `task.kind`; whether it names a
registered task is checked here, by `check_task_kind`, which `dibs validate`, `dibs run`, sweeps and
Ray Jobs call before anything is recorded, and by `make_task` wherever a task is made.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dibs.platform.core.config import ConfigError, TaskConfig
from dibs.platform.core.config_sections import TASK_KIND_PATTERN
from dibs.platform.tasks.base import Task, TaskData
from dibs.platform.tasks.chain_sum import ChainSumTask
from dibs.platform.tasks.math_task import MathTask

TaskFactory = Callable[[TaskConfig], Task]

# kind -> factory; `register_task` adds to it.
_TASKS: dict[str, TaskFactory] = {
    "reasoning_gym": ChainSumTask,
    "math": MathTask,
}


def register_task(kind: str, factory: TaskFactory, *, replace: bool = False) -> None:
    """Make `task.kind: <kind>` build its task with `factory(task_config)`. Registering the same factory
    again is a no-op; another factory under a taken kind needs `replace=True`."""
    if not isinstance(kind, str) or not re.fullmatch(TASK_KIND_PATTERN, kind):
        raise ValueError(
            f"register_task: kind {kind!r} must match {TASK_KIND_PATTERN} (lower case, digits, _)"
        )
    if not callable(factory):
        raise TypeError(
            f"register_task: the factory of {kind!r} must be callable (TaskConfig -> task), "
            f"got {type(factory).__name__}"
        )
    old = _TASKS.get(kind)
    if old is not None and old is not factory and not replace:
        raise ValueError(
            f"register_task: task kind {kind!r} is already registered "
            f"({getattr(old, '__name__', old)!s}); pass replace=True to replace it"
        )
    _TASKS[kind] = factory


def known_kinds() -> list[str]:
    return sorted(_TASKS)


def check_task_kind(cfg: TaskConfig, source: str = "<config>") -> None:
    """A ConfigError naming `task.kind` and the known kinds unless `cfg.kind` is registered."""
    if cfg.kind not in _TASKS:
        raise ConfigError(
            f"{source}: task.kind: unknown task kind {cfg.kind!r}; known kinds: "
            f"{', '.join(known_kinds())} (register_task adds one, platform/tasks/registry.py)"
        )


def make_task(cfg: TaskConfig) -> Task:
    """The task `cfg.kind` names, made from `cfg`."""
    check_task_kind(cfg)
    return _TASKS[cfg.kind](cfg)


def build_task(cfg: TaskConfig, seed: int) -> TaskData:
    """The splits of the task `cfg` names (tasks/base.py, `Task.splits`)."""
    return make_task(cfg).splits(seed)
