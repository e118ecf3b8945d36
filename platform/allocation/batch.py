"""What the generation stage hands the rest of a step: the training batch, and what was generated but
not kept.

Plain generation (loop.py's `generate`) keeps everything; DAPO's dynamic sampling (dapo.py) drops groups
whose rewards are all equal; reinforce_ada (reinforce_ada.py) keeps at most n_per_prompt of each prompt's
pool. Dropped rollouts are still charged to the budget as training rollouts, and as wasted
(docs/conventions.md, Budget accounting): each dropped group still gets its per-prompt row, and a prompt
whose pool was cut counts its whole pool in its row (`PromptDrops`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from dibs.platform.core import metrics as M
from dibs.platform.rollout.base import Rollouts
from dibs.platform.tasks.base import Problem

if TYPE_CHECKING:  # allocators.py imports nothing from here; the annotation only
    from dibs.platform.allocation.allocators import AllocContext


@dataclass(frozen=True)
class PromptDrops:
    """Per prompt of the batch (aligned with `Batch.prompts`): rollouts generated for it at this step and
    not trained on, of them with reward 1, their response tokens ([m] int64 each). Part of `Dropped`'s
    totals already; the prompt's per-prompt row adds them to its kept ones (reinforce_ada's pools)."""

    rollouts: np.ndarray
    accepted: np.ndarray
    tokens: np.ndarray


@dataclass
class Dropped:
    """Rollouts generated at this step and not trained on."""

    rollouts: int = 0
    tokens: int = 0  # their response tokens
    accepted: int = 0  # of them with reward 1
    rows: list[M.PromptStat] = field(default_factory=list)  # one per dropped group
    per_prompt: PromptDrops | None = None  # those of prompts the batch keeps (in the totals above)


@dataclass
class Batch:
    """The step's training batch: `rollouts` answer `prompts` (group ids index them, so scoring and GRPO
    groups need no remapping); `stats` are metric rows of the stage that produced it."""

    prompts: list[Problem]
    rollouts: Rollouts
    dropped: Dropped = field(default_factory=Dropped)
    stats: dict[str, float] = field(default_factory=dict)
    # GRPO's baseline and scale per training sample when they come from more rollouts than the batch
    # keeps (reinforce_ada: the mean and std over the whole pool the prompt drew); None: its own group's.
    baseline: torch.Tensor | None = None
    scale: torch.Tensor | None = None


class GenerationStage(Protocol):
    """A generation stage that is more than generating the allocated counts (dapo's refill,
    reinforce_ada's rounds): it samples, scores and decides what the step trains on. `draw(k)` gives the
    next k prompts of the run's epoch stream."""

    def sample(
        self, prompts: list[Problem], ctx: AllocContext, draw: Callable[[int], list[Problem]] | None
    ) -> Batch: ...
