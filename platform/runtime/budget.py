"""Budget accounting of the loop (docs/conventions.md, Budget accounting): `Budget`, what the run has
spent so far; `account`, the charge of one step's training rollouts; `prompt_stats`, where the step's
budget went, one row per prompt."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from dibs.platform.allocation.allocators import Allocation, StepBudget
from dibs.platform.allocation.batch import Dropped
from dibs.platform.allocation.estimators import accepted_counts
from dibs.platform.core import metrics as M
from dibs.platform.core.config import ExperimentConfig
from dibs.platform.rollout.base import Rollouts
from dibs.platform.tasks.base import Problem


@dataclass
class Budget:
    """What the run has spent so far; every metric row carries it (docs/conventions.md)."""

    rollouts: int = 0  # probe rollouts included
    tokens: int = 0
    probe_rollouts: int = 0  # the probe's share of `rollouts`
    train_rollouts: int = 0  # the rest: generated for training, kept or dropped (dapo)
    accepted: int = 0  # training rollouts with reward 1
    wasted: int = 0  # training rollouts that moved no gradient: zero advantage, filtered or dropped
    updates: int = 0  # optimizer steps of the learner
    started: float = field(default_factory=time.perf_counter)

    @property
    def wall(self) -> float:
        return time.perf_counter() - self.started

    def snapshot(self) -> dict[str, float]:
        """The counters and the wall seconds so far, for a checkpoint."""
        counters = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "started"}
        return counters | {"wall": self.wall}

    def restore(self, snap: dict[str, float]) -> None:
        """Continue from a snapshot: counters as they were, the wall clock running on from its seconds."""
        for f in fields(self):
            if f.name != "started":  # `updates` came later: an older checkpoint resumes its count from 0
                setattr(self, f.name, int(snap.get(f.name, 0) if f.name == "updates" else snap[f.name]))
        self.started = time.perf_counter() - float(snap["wall"])


def step_budget(cfg: ExperimentConfig, budget: Budget) -> StepBudget:
    """What this step's training rollouts may spend (allocation.budget). In tokens mode, step_tokens over
    the run's mean response length so far (probe rollouts included: same policy, same sampling); before
    the run has generated anything, over max_new_tokens, so the first step cannot overspend. At least one
    rollout."""
    a = cfg.allocation
    if a.budget == "rollouts" or a.step_tokens is None:
        return StepBudget(cfg.train.prompts_per_step * a.n_per_prompt)
    per = budget.tokens / budget.rollouts if budget.rollouts else float(cfg.rollout.max_new_tokens)
    per = max(per, 1.0)  # empty responses (a stop token first) still cost a forward pass
    return StepBudget(max(1, int(a.step_tokens // per)), a.step_tokens, per)


def prompt_tokens(rollouts: Rollouts, num_prompts: int, dropped: Dropped | None = None) -> np.ndarray:
    """[num_prompts] int64: response tokens of each prompt's rollouts, and of those `dropped` from the
    prompts the batch keeps (reinforce_ada's pools)."""
    lengths = rollouts.response_mask.sum(-1).double().numpy()
    out = np.bincount(rollouts.group_ids.numpy(), weights=lengths, minlength=num_prompts).astype(np.int64)
    if dropped is not None and dropped.per_prompt is not None:
        out += dropped.per_prompt.tokens
    return out


def account(
    budget: Budget,
    alloc: Allocation,
    rollouts: Rollouts,
    rewards: torch.Tensor,
    adv: torch.Tensor,
    keep: torch.Tensor,
    dropped: Dropped | None = None,
) -> dict[str, float]:
    """Charge the step's training rollouts, those trained on and those `dropped` (the probe was charged in
    `allocate`); this step's and the cumulative budget metrics (docs/conventions.md, Budget accounting)."""
    dropped = dropped or Dropped()
    generated = len(rollouts.texts) + dropped.rollouts
    accepted = int((rewards == 1).sum()) + dropped.accepted
    wasted = int(((adv == 0) | ~keep).sum()) + dropped.rollouts
    budget.rollouts += generated
    budget.train_rollouts += generated
    budget.tokens += rollouts.num_tokens + dropped.tokens
    budget.accepted += accepted
    budget.wasted += wasted
    return {
        M.BUDGET_ROLLOUTS: budget.rollouts,
        M.BUDGET_TOKENS: budget.tokens,
        M.BUDGET_UPDATES: budget.updates,
        M.BUDGET_PROBE_ROLLOUTS: budget.probe_rollouts,
        M.BUDGET_TRAIN_ROLLOUTS: budget.train_rollouts,
        M.BUDGET_ACCEPTED: budget.accepted,
        M.BUDGET_WASTED: budget.wasted,
        M.STEP_ROLLOUTS: generated + alloc.probe_rollouts,
        M.STEP_PROBE_ROLLOUTS: alloc.probe_rollouts,
        M.STEP_ACCEPTED: accepted,
        M.STEP_WASTED: wasted,
    }


def prompt_stats(
    prompts: list[Problem],
    alloc: Allocation,
    rollouts: Rollouts,
    rewards: torch.Tensor,
    dropped: Dropped | None = None,
) -> list[M.PromptStat]:
    """Where the step's budget went, one row per prompt, then one per dropped group (dapo). An allocator
    without estimates gets p̂ measured on the prompt's own rollouts (NaN with none) and Ĝ = NaN. A prompt
    with rollouts dropped from its pool (reinforce_ada) counts them too: its row is the whole pool."""
    m = len(prompts)
    accepted, counts = accepted_counts(rewards, rollouts.group_ids, m)
    if dropped is not None and dropped.per_prompt is not None:
        accepted, counts = accepted + dropped.per_prompt.accepted, counts + dropped.per_prompt.rollouts
    with np.errstate(invalid="ignore", divide="ignore"):
        p_own = np.where(counts > 0, accepted / counts, np.nan)
    p_hat = alloc.p_hat if alloc.p_hat is not None else p_own
    g_hat = alloc.g_hat if alloc.g_hat is not None else np.full(m, np.nan)
    probed = alloc.probed if alloc.probed is not None else np.zeros(m, dtype=bool)
    rows = [
        M.PromptStat(
            p.prompt, float(p_hat[i]), float(g_hat[i]), int(counts[i]), int(accepted[i]), bool(probed[i])
        )
        for i, p in enumerate(prompts)
    ]
    return rows + (dropped.rows if dropped is not None else [])
