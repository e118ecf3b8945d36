"""Reinforce-Ada (arXiv 2510.04996), its sequential realisation, as a generation stage of the loop
(docs/method.md §8, reinforce_ada).

Every prompt of the step starts active; each round, every active prompt draws `ada_round_size` samples
(round r with the allocation seed + r, as dapo's rounds) and leaves once its pool meets the exit rule
(`ada_exit`): `positive`, one accepted sample; `balanced`, n // 2 accepted and n - n // 2 rejected (n =
`ada_group`, default n_per_prompt, as the public code). Rounds stop at `ada_max_rounds`, when no prompt is
active, or when the step's budget N (`step_rollouts`) is spent: a round the rest of N cannot fill shares it
evenly over the active prompts, the first ones taking the rest, so a step never draws more than N; what it
leaves is unspent, not carried over.

The step trains on at most n samples of each prompt's pool: up to n // 2 accepted and the rest rejected,
the shortfall of one class filled from the other, earliest drawn first (the public code's down-sampling).
GRPO's baseline and scale are the mean and std of the prompt's whole pool (`Batch.baseline`/`scale`).
The rest of the pool is charged as training rollouts and counted as wasted (`Dropped.per_prompt`); each
prompt's per-prompt row counts its whole pool.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dibs.algorithms.advantages import group_stats
from dibs.platform.allocation.allocators import Allocation, AllocContext, Stateless, even_split, step_rollouts
from dibs.platform.allocation.batch import Batch, Dropped, PromptDrops
from dibs.platform.allocation.estimators import accepted_counts
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig
from dibs.platform.rollout.base import Rollouts, merge_rollouts
from dibs.platform.tasks.base import Problem


class ReinforceAdaAllocator(Stateless):
    """The counts the loop records: the step's budget N split evenly, what plain generation would draw
    (so the allocator alone stays within the budget). With reinforce_ada the loop does not generate
    them: its `AdaRounds` stage draws in rounds instead (factory.build_stage). No probe, no state."""

    def __init__(self, cfg: AllocationConfig):
        self.cfg = cfg

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        m = len(prompts)
        return Allocation(even_split(m, step_rollouts(ctx, m, self.cfg.n_per_prompt)))


def exit_targets(rule: str, n: int) -> tuple[int, int]:
    """(accepted, rejected) samples a prompt's pool needs to stop drawing."""
    if rule == "positive":
        return 1, 0
    if rule == "balanced":
        return n // 2, n - n // 2
    raise ValueError(f"allocation.ada_exit: unknown rule {rule!r}; known: positive, balanced")


def balanced_pick(accepted: np.ndarray, n: int) -> np.ndarray:
    """Positions in a pool (accepted: [k] bool, in draw order) of its training group: the first up to
    n // 2 accepted, then the first rejected up to n, then more accepted if the rejected ran short;
    ascending. A pool of at most n is kept whole."""
    pos, neg = np.flatnonzero(accepted), np.flatnonzero(~accepted)
    k_neg = min(n - min(n // 2, len(pos)), len(neg))
    k_pos = min(len(pos), n - k_neg)
    return np.sort(np.concatenate([pos[:k_pos], neg[:k_neg]]))


def round_counts(active: int, size: int, remaining: int) -> np.ndarray:
    """Samples each of `active` prompts draws this round: `size` each, or, when the `remaining` budget
    is short of that, the remaining budget split evenly (the first ones taking the rest; some may get 0)."""
    if remaining >= active * size:
        return np.full(active, size, dtype=np.int64)
    return even_split(active, max(remaining, 0))


class AdaRounds:
    """Sample in rounds until each prompt's exit rule, within the step's budget; train on a balanced
    group of each pool with the pool's baseline: the loop's generation stage for `reinforce_ada`."""

    def __init__(self, cfg: AllocationConfig):
        self.cfg = cfg
        self.n = cfg.ada_group or cfg.n_per_prompt  # the group a prompt trains on
        self.need_pos, self.need_neg = exit_targets(cfg.ada_exit, self.n)

    def sample(
        self, prompts: list[Problem], ctx: AllocContext, draw: Callable[[int], list[Problem]] | None
    ) -> Batch:
        m, cfg = len(prompts), self.cfg
        budget = step_rollouts(ctx, m, cfg.n_per_prompt)
        if budget < 1 or m < 1:
            raise ValueError(
                f"reinforce_ada: a step needs prompts and a budget, got {m} prompts, N = {budget}"
            )
        pos, neg = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
        active = np.ones(m, dtype=bool)
        parts: list[tuple[Rollouts, torch.Tensor, torch.Tensor]] = []  # a round, its prompt ids, rewards
        spent = 0
        while active.any() and len(parts) < cfg.ada_max_rounds and spent < budget:
            idx = np.flatnonzero(active)
            counts = round_counts(len(idx), cfg.ada_round_size, budget - spent)
            idx, counts = idx[counts > 0], counts[counts > 0]  # prompts a short last round could not reach
            batch = [prompts[i] for i in idx]
            ro = ctx.engine.generate(
                [p.prompt for p in batch], counts.tolist(), ctx.spec, seed=ctx.seed + len(parts)
            )
            rewards = ctx.score(ro, batch)
            accepted, drawn = accepted_counts(rewards, ro.group_ids, len(batch))
            pos[idx] += accepted
            neg[idx] += drawn - accepted
            parts.append((ro, torch.as_tensor(idx, dtype=torch.long)[ro.group_ids], rewards))
            spent += int(counts.sum())
            active &= ~((pos >= self.need_pos) & (neg >= self.need_neg))
        # Pad id 0: padded positions have attention and response masks 0, so the token is never read.
        pool = merge_rollouts([p[0] for p in parts], torch.cat([p[1] for p in parts]), pad_id=0)
        rewards = torch.cat([p[2] for p in parts])
        batch = self._groups(prompts, pool, rewards)
        batch.stats = {
            M.ALLOC_ADA_ROUNDS: float(len(parts)),
            M.ALLOC_ADA_POOL_ROLLOUTS: float(spent),
            M.ALLOC_ADA_DROPPED_ROLLOUTS: float(batch.dropped.rollouts),
            M.ALLOC_ADA_UNSPENT: float(budget - spent),
            M.ALLOC_ADA_EXITED_PROMPTS: float((~active).sum()),
            M.ALLOC_ADA_EMPTY_PROMPTS: float(((pos + neg) == 0).sum()),
            M.ALLOC_ADA_FIRST_ROUND_REWARD: float(parts[0][2].double().mean()),
        }
        return batch

    def _groups(self, prompts: list[Problem], pool: Rollouts, rewards: torch.Tensor) -> Batch:
        """The training batch: each prompt's balanced group, grouped by prompt, with its pool's mean and
        std; the rest of the pools as `Dropped` (per prompt, so each row counts its whole pool)."""
        m, n = len(prompts), self.n
        gids, accepted = pool.group_ids.numpy(), (rewards == 1).numpy()
        keep = []
        for i in range(m):
            mine = np.flatnonzero(gids == i)
            keep.append(mine[balanced_pick(accepted[mine], n)])
        kept = torch.as_tensor(np.concatenate(keep), dtype=torch.long)
        mean, std = group_stats(rewards, pool.group_ids)
        out = np.ones(len(gids), dtype=bool)
        out[kept.numpy()] = False
        lengths = pool.response_mask.sum(-1).double().numpy()
        per_prompt = PromptDrops(
            np.bincount(gids[out], minlength=m).astype(np.int64),
            np.bincount(gids[out], weights=accepted[out], minlength=m).astype(np.int64),
            np.bincount(gids[out], weights=lengths[out], minlength=m).astype(np.int64),
        )
        dropped = Dropped(
            int(per_prompt.rollouts.sum()),
            int(per_prompt.tokens.sum()),
            int(per_prompt.accepted.sum()),
            per_prompt=per_prompt,
        )
        return Batch(prompts, pool.select(kept), dropped, baseline=mean[kept], scale=std[kept])
