"""The `greso` allocator: GRESO's selective rollout (arXiv 2506.02177, "Act Only When It Pays"), before
any rollout skip the prompts whose recent groups had zero reward variance (docs/method.md §8, greso).

Per prompt (keyed by its text) a streak: +z when its last z informative visits were all accepted, -z when
they were all rejected, 0 when the last one was mixed or it was never seen. A visit is informative when it
generated at least 2 rollouts (one rollout has no variance to speak of); other visits leave the streak as
it was, and so does a skipped prompt. At `allocate` a prompt on a streak of z is kept with probability
max(greso_floor, p_e^z), p_e per kind (all-accepted, all-rejected), decided with a numpy Generator seeded
from the step's allocation seed, so a resumed run draws the same. The step's budget N is then split evenly
over the kept prompts: GRESO fills its batch with other prompts instead; here the prompt list is fixed, so
the rollouts a skipped prompt would have had go to the prompts that may still carry signal.

With `greso_target` set, each p_e adapts after every step on which the filter could act (some prompt had
been seen before): down by `greso_adapt_step` when the step trained on at least its share of that kind of
zero-variance group (a third of the target for all-accepted, two thirds for all-rejected), up otherwise,
within [0.05, 0.95], as the reference implementation does.
"""

from __future__ import annotations

import numpy as np

from dibs.algorithms.greso import keep_probability, kept_split
from dibs.platform.allocation.allocators import Allocation, AllocContext, step_rollouts
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig
from dibs.platform.tasks.base import Problem

# The reference implementation's bounds on p_e and its split of the target between the two kinds: more
# room for all-rejected prompts, which are the likelier to turn informative as the policy improves.
EXPLORE_BOUNDS = (0.05, 0.95)
EASY_SHARE, HARD_SHARE = 1 / 3, 2 / 3


class GresoAllocator:
    def __init__(self, cfg: AllocationConfig):
        self.cfg = cfg
        self.streaks: dict[str, int] = {}  # prompt text -> +z (all accepted) / -z (all rejected) / 0
        self.p_easy = self.p_hard = cfg.greso_explore

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        cfg, m = self.cfg, len(prompts)
        z = np.array([self.streaks.get(p.prompt, 0) for p in prompts], dtype=np.int64)
        keep_p = keep_probability(np.abs(z), np.where(z > 0, self.p_easy, self.p_hard), cfg.greso_floor)
        drawn = np.random.default_rng(ctx.seed).random(m) < keep_p
        counts, kept = kept_split(
            drawn,
            keep_p,
            step_rollouts(ctx, m, cfg.n_per_prompt),
            min_per_prompt=cfg.min_per_prompt,
            max_per_prompt=cfg.max_per_prompt,
        )
        return Allocation(counts, stats=self.stats(counts, z, drawn, kept))

    def stats(
        self, counts: np.ndarray, z: np.ndarray, drawn: np.ndarray, kept: np.ndarray
    ) -> dict[str, float]:
        skipped = ~kept
        return {
            M.ALLOC_N_MIN: float(counts.min()) if counts.size else 0.0,
            M.ALLOC_N_MAX: float(counts.max()) if counts.size else 0.0,
            M.ALLOC_ZERO_PROMPTS: float((counts == 0).sum()),
            M.ALLOC_GRESO_SKIPPED: float(skipped.sum()),
            M.ALLOC_GRESO_SKIPPED_EASY: float((skipped & (z > 0)).sum()),
            M.ALLOC_GRESO_SKIPPED_HARD: float((skipped & (z < 0)).sum()),
            M.ALLOC_GRESO_KEPT_BACK: float((kept & ~drawn).sum()),
            M.ALLOC_GRESO_STREAK_PROMPTS: float((z != 0).sum()),
            M.ALLOC_GRESO_MEAN_STREAK: float(np.abs(z).mean()) if z.size else 0.0,
            M.ALLOC_GRESO_P_EASY: self.p_easy,
            M.ALLOC_GRESO_P_HARD: self.p_hard,
        }

    def observe(
        self, prompts: list[Problem], counts: np.ndarray, accepted: np.ndarray, tokens: np.ndarray
    ) -> None:
        seen = any(p.prompt in self.streaks for p in prompts)  # could the filter act at this step?
        easy = hard = groups = 0
        for p, n, a in zip(prompts, counts.tolist(), accepted.tolist(), strict=True):
            if n < 2:  # no variance to judge: the streak stays as it was
                continue
            z = self.streaks.get(p.prompt, 0)
            groups += 1
            if a == n:
                easy, self.streaks[p.prompt] = easy + 1, max(z, 0) + 1
            elif a == 0:
                hard, self.streaks[p.prompt] = hard + 1, min(z, 0) - 1
            else:
                self.streaks[p.prompt] = 0
        target = self.cfg.greso_target
        if target is not None and seen and groups:
            self.p_easy = self.adapted(self.p_easy, easy / groups >= EASY_SHARE * target)
            self.p_hard = self.adapted(self.p_hard, hard / groups >= HARD_SHARE * target)

    def adapted(self, p: float, met: bool) -> float:
        """p_e after a step: down (skip more) when the step met its share of this kind of zero-variance
        groups, up (skip less) otherwise."""
        step = self.cfg.greso_adapt_step
        return float(np.clip(p - step if met else p + step, *EXPLORE_BOUNDS))

    def state_dict(self) -> dict:
        return {"streaks": dict(self.streaks), "p_easy": self.p_easy, "p_hard": self.p_hard}

    def load_state_dict(self, state: dict) -> None:
        self.streaks = {str(k): int(v) for k, v in state.get("streaks", {}).items()}
        self.p_easy = float(state.get("p_easy", self.cfg.greso_explore))
        self.p_hard = float(state.get("p_hard", self.cfg.greso_explore))
