"""The `Learner` Protocol: what the RL loop and its checkpoints ask of whoever trains the policy.

The torch learner (learner.py) and the DeepSpeed learner (deepspeed_learner.py) implement it; the loop
(platform/runtime/loop.py) and `checkpoint.save`/`checkpoint.load` see nothing else of them. It sits in
its own module so that checkpoint.py can name it without importing the learners (they import it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from dibs.platform.rollout.base import Rollouts


class Learner(Protocol):
    def update(self, rollouts: Rollouts, advantages: torch.Tensor, *, seed: int) -> dict[str, float]:
        """One RL step's update on `rollouts` ([B] `advantages`); its stats, `optimizer_steps` and `lr`
        among them. Collective when the learner has several ranks."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The full policy weights (for the rollout engine and the checkpoint), gathered if partitioned."""
        ...

    def save_training_state(self, directory: Path) -> None:
        """Optimizer and schedule state into `directory` (the weights are saved with the model)."""
        ...

    def load_training_state(self, directory: Path) -> None:
        """Restore what `save_training_state` wrote."""
        ...
