"""The seams between the loop and whoever runs it.

- `Runtime`: where the loop's parts live. The loop asks it for the warm-started policy, the rollout engine
  and the learner, and for the data-parallel group its checkpoints are written by. `LocalRuntime`
  (loop.py: one process) and `DistributedRuntime` (distributed.py: one learner rank of Ray Train, its
  engine sharded over the ranks' rollout actors) implement it.
- `RunPayload`: what an executor (runner.py, distributed.py) hands the worker that runs the loop: the
  config, where to record and checkpoint, the checkpoint to resume from, and the driver's progress queue.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase

from dibs.platform.core.config import ExperimentConfig
from dibs.platform.core.parallel import DataParallel
from dibs.platform.learn.base import Learner
from dibs.platform.learn.warm_start import Progress
from dibs.platform.rollout.base import RolloutEngine
from dibs.platform.tasks.base import TaskData

# The task data, the warm-started (or resumed) policy, its tokenizer, SFT seconds and final SFT loss.
Prepared = tuple[TaskData, torch.nn.Module, PreTrainedTokenizerBase, float, float]


class ProgressQueue(Protocol):
    """Where a worker's progress events go: a Ray queue to the driver, or the inline executor's display."""

    def put_nowait(self, item: tuple) -> None: ...


class Runtime(Protocol):
    @property
    def dp(self) -> DataParallel:
        """This process's rank among the learners (one rank: inactive)."""
        ...

    def prepare(
        self, cfg: ExperimentConfig, progress: Progress, data: TaskData | None, resume_from: str | None
    ) -> Prepared:
        """The task data and the policy to start RL from: warm-started, or loaded from `resume_from`."""
        ...

    def engine(
        self, cfg: ExperimentConfig, policy: torch.nn.Module, tokenizer: PreTrainedTokenizerBase
    ) -> RolloutEngine:
        """The rollout engine, holding its own copy of `policy`."""
        ...

    def learner(self, cfg: ExperimentConfig, policy: torch.nn.Module, ref: torch.nn.Module | None) -> Learner:
        """The learner that trains `policy` (`ref`: the KL reference, None without KL)."""
        ...


@dataclass(frozen=True)
class RunPayload:
    """One run (or resume) for a worker: pickled into a Ray task or a Ray Train worker as it is."""

    config: ExperimentConfig
    cwd: str  # the driver's: relative paths in the config mean it
    db_url: str
    run_id: str
    checkpoint_dir: str
    resume_from: str | None = None
    queue: ProgressQueue | None = None  # where progress events go; None: nowhere

    def with_queue(self, queue: ProgressQueue) -> RunPayload:
        return replace(self, queue=queue)
