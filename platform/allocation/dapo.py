"""DAPO dynamic sampling (arXiv 2503.14476, "dynamic sampling") as a generation stage of the loop.

The `dapo` allocator gives each prompt n_per_prompt rollouts; `Refill` then generates them, and a group
whose rewards are all equal (all right or all wrong) carries zero GRPO advantage, so it is dropped and
replaced by a fresh prompt from the run's epoch stream, until the step has `prompts_per_step` groups with
mixed rewards. verl's implementation raises once `max_num_gen_batches` is exceeded; here the cap degrades
gracefully: after `max_gen_batches` rounds the step trains on the groups it has, and `alloc/short_prompts`
records how many it lacked.

A refill round draws the deficit scaled up by the keep rate seen so far in the step (at most one full
batch), so an easy or hard stretch of data costs rounds, not a crash. Every generated rollout is
charged to the budget; those of dropped groups (and of groups beyond the batch) count as wasted.
Round r samples with the step's allocation seed + r (the stream the allocator's context carries).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from dibs.algorithms.advantages import nonzero_groups_mask
from dibs.platform.allocation.allocators import AllocContext
from dibs.platform.allocation.batch import Batch, Dropped
from dibs.platform.allocation.estimators import accepted_counts
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig
from dibs.platform.rollout.base import Rollouts, merge_rollouts
from dibs.platform.tasks.base import Problem


def group_outcomes(rewards: torch.Tensor, ro: Rollouts, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prompt: accepted count, response tokens, and whether its rewards are mixed (not all equal)."""
    accepted, _ = accepted_counts(rewards, ro.group_ids, m)
    gids = ro.group_ids.numpy()
    tokens = np.bincount(gids, weights=ro.response_mask.sum(-1).double().numpy(), minlength=m).astype(
        np.int64
    )
    mixed = (
        np.bincount(gids, weights=nonzero_groups_mask(rewards, ro.group_ids).double().numpy(), minlength=m)
        > 0
    )
    return accepted, tokens, mixed


class Refill:
    """Generate, drop all-equal groups, refill from `draw` (k more prompts of the run's epoch stream), at
    most `max_gen_batches` rounds: the loop's generation stage when the allocator is `dapo`."""

    def __init__(self, cfg: AllocationConfig):
        self.cfg = cfg

    def sample(
        self, prompts: list[Problem], ctx: AllocContext, draw: Callable[[int], list[Problem]] | None
    ) -> Batch:
        n, m = self.cfg.n_per_prompt, len(prompts)
        kept_parts, kept, dropped = [], [], Dropped()
        batch, drawn, rounds = prompts, 0, 0
        while True:
            ro = ctx.engine.generate(
                [p.prompt for p in batch], [n] * len(batch), ctx.spec, seed=ctx.seed + rounds
            )
            rounds, drawn = rounds + 1, drawn + len(batch)
            rewards = ctx.score(ro, batch)
            accepted, tokens, mixed = group_outcomes(rewards, ro, len(batch))
            take = [i for i in np.flatnonzero(mixed)][: m - len(kept)]
            for i in sorted(set(range(len(batch))) - set(take)):
                dropped.rows.append(
                    M.PromptStat(batch[i].prompt, accepted[i] / n, math.nan, n, int(accepted[i]), False)
                )
                dropped.rollouts += n
                dropped.tokens += int(tokens[i])
                dropped.accepted += int(accepted[i])
            if take:
                # Kept groups' ids become their index in `kept` (the merged batch's prompt list).
                remap = torch.full((len(batch),), -1, dtype=torch.long)
                remap[torch.tensor(take)] = torch.arange(len(kept), len(kept) + len(take))
                part = ro.select(torch.nonzero(remap[ro.group_ids] >= 0).squeeze(-1))
                kept_parts.append((part, remap[part.group_ids]))
                kept.extend(batch[i] for i in take)
            deficit = m - len(kept)
            if deficit == 0 or rounds >= self.cfg.max_gen_batches or draw is None:
                break
            rate = max(len(kept) / drawn, 1.0 / m)
            batch = draw(min(m, math.ceil(deficit / rate)))
        if not kept_parts:  # nothing kept: an empty batch, so the step records that it trained on nothing
            kept_parts.append((ro.select(torch.zeros(0, dtype=torch.long)), torch.zeros(0, dtype=torch.long)))
        # Pad id 0: padded positions have attention and response masks 0, so the token is never read.
        merged = merge_rollouts([r for r, _ in kept_parts], torch.cat([g for _, g in kept_parts]), pad_id=0)
        stats = {
            M.ALLOC_GEN_BATCHES: float(rounds),
            M.ALLOC_SHORT_PROMPTS: float(m - len(kept)),
            M.ALLOC_DISCARDED_ROLLOUTS: float(dropped.rollouts),
        }
        return Batch(kept, merged, dropped, stats)
