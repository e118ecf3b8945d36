"""DAPO dynamic sampling as an allocator (arXiv 2503.14476, "dynamic sampling").

Each prompt gets n_per_prompt rollouts; a group whose rewards are all equal (all right or all wrong)
carries zero GRPO advantage, so it is dropped and replaced by a fresh prompt from the run's epoch
stream, until the step has `prompts_per_step` groups with mixed rewards. verl's implementation raises
once `max_num_gen_batches` is exceeded; here the cap degrades gracefully: after `max_gen_batches`
rounds the step trains on the groups it has, and `alloc/short_prompts` records how many it lacked.

A refill round draws the deficit scaled up by the keep rate seen so far in the step (at most one full
batch), so an easy or hard stretch of data costs rounds, not a crash. Every generated rollout is
charged to the budget; those of dropped groups (and of groups beyond the batch) count as wasted.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dibs.algorithms.advantages import nonzero_groups_mask
from dibs.algorithms.allocation import uniform_allocation
from dibs.platform.allocation.allocators import Allocation, AllocContext, Stateless
from dibs.platform.allocation.estimators import accepted_counts
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig
from dibs.platform.rollout.base import Rollouts, merge_rollouts
from dibs.platform.tasks.base import Problem


def group_outcomes(rewards: torch.Tensor, ro: Rollouts, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prompt: accepted count, response tokens, and whether its rewards are mixed (not all equal)."""
    accepted, _ = accepted_counts(rewards, ro.group_ids, m)
    gids = ro.group_ids.numpy()
    tokens = np.bincount(gids, weights=ro.response_mask.sum(-1).double().numpy(), minlength=m).astype(np.int64)
    mixed = np.bincount(gids, weights=nonzero_groups_mask(rewards, ro.group_ids).double().numpy(), minlength=m) > 0
    return accepted, tokens, mixed


class DAPOAllocator(Stateless):
    def __init__(self, cfg: AllocationConfig):
        self.cfg = cfg

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        n, m = self.cfg.n_per_prompt, len(prompts)
        kept_parts, kept, out = [], [], Allocation(np.zeros(0, dtype=np.int64))
        batch, drawn, rounds = prompts, 0, 0
        while True:
            ro = ctx.engine.generate([p.prompt for p in batch], [n] * len(batch), ctx.spec, seed=ctx.seed + rounds)
            rounds, drawn = rounds + 1, drawn + len(batch)
            rewards = ctx.score(ro, batch)
            accepted, tokens, mixed = group_outcomes(rewards, ro, len(batch))
            take = [i for i in np.flatnonzero(mixed)][: m - len(kept)]
            for i in sorted(set(range(len(batch))) - set(take)):
                out.discarded.append(M.PromptStat(batch[i].prompt, accepted[i] / n, math.nan, n,
                                                  int(accepted[i]), False))
                out.discarded_rollouts += n
                out.discarded_tokens += int(tokens[i])
                out.discarded_accepted += int(accepted[i])
            if take:
                # Kept groups' ids become their index in `kept` (the merged batch's prompt list).
                remap = torch.full((len(batch),), -1, dtype=torch.long)
                remap[torch.tensor(take)] = torch.arange(len(kept), len(kept) + len(take))
                part = ro.select(torch.nonzero(remap[ro.group_ids] >= 0).squeeze(-1))
                kept_parts.append((part, remap[part.group_ids]))
                kept.extend(batch[i] for i in take)
            deficit = m - len(kept)
            if deficit == 0 or rounds >= self.cfg.max_gen_batches or ctx.draw is None:
                break
            rate = max(len(kept) / drawn, 1.0 / m)
            batch = ctx.draw(min(m, math.ceil(deficit / rate)))
        if not kept_parts:  # nothing kept: an empty batch, so the step records that it trained on nothing
            kept_parts.append((ro.select(torch.zeros(0, dtype=torch.long)), torch.zeros(0, dtype=torch.long)))
        return self._finish(out, kept, kept_parts, rounds, m)

    def _finish(self, out: Allocation, kept: list[Problem], parts: list[tuple[Rollouts, torch.Tensor]],
                rounds: int, m: int) -> Allocation:
        # Pad id 0: padded positions have attention and response masks 0, so the token is never read.
        out.rollouts = merge_rollouts([r for r, _ in parts], torch.cat([g for _, g in parts]), pad_id=0)
        out.prompts, out.counts = kept, uniform_allocation(len(kept), self.cfg.n_per_prompt)
        out.stats = {M.ALLOC_GEN_BATCHES: float(rounds), M.ALLOC_SHORT_PROMPTS: float(m - len(kept)),
                     M.ALLOC_DISCARDED_ROLLOUTS: float(out.discarded_rollouts)}
        return out
