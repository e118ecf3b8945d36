"""The `variance` allocator: a Beta posterior over each prompt's pass rate, and the split of the step's
budget that maximises the expected number of informative groups (docs/method.md §8, variance), in the
spirit of arXiv 2602.01601 and 2510.06672. No probe: the posterior learns from the training rollouts.

Per prompt (keyed by its text) Beta(a, b), from Beta(variance_prior, variance_prior). Each visit that
generated rollouts first shrinks the earlier evidence toward the prior by `variance_decay` d,
a <- prior + d (a - prior) (and b alike), then adds what it saw: a += accepted, b += rejected. The state
is carried across epochs and saved with checkpoints. `allocate` splits the step's N rollouts with
`informative_allocation` (algorithms/informative.py), exactly optimal for `variance_objective`: `mixed`
(GRPO) or `positive` (RAFT, RAFT++), within min_per_prompt and max_per_prompt; nothing beyond N is spent.
"""

from __future__ import annotations

import numpy as np

from dibs.algorithms.informative import expected_informative, informative_allocation
from dibs.platform.allocation.allocators import Allocation, AllocContext, even_split, step_rollouts
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig
from dibs.platform.tasks.base import Problem


class VarianceAllocator:
    def __init__(self, cfg: AllocationConfig):
        self.cfg = cfg
        self.posterior: dict[str, tuple[float, float]] = {}  # prompt text -> (a, b)

    def params(self, prompts: list[Problem]) -> tuple[np.ndarray, np.ndarray]:
        prior = (self.cfg.variance_prior, self.cfg.variance_prior)
        ab = np.array([self.posterior.get(p.prompt, prior) for p in prompts], dtype=np.float64)
        ab = ab.reshape(len(prompts), 2)
        return ab[:, 0], ab[:, 1]

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        cfg, m = self.cfg, len(prompts)
        a, b = self.params(prompts)
        total = step_rollouts(ctx, m, cfg.n_per_prompt)
        objective = cfg.variance_objective
        counts = informative_allocation(
            a,
            b,
            total,
            objective=objective,
            min_per_prompt=cfg.min_per_prompt,
            max_per_prompt=cfg.max_per_prompt,
        )
        p_mean = a / (a + b)
        evidence = a + b - 2 * cfg.variance_prior
        stats = {
            M.ALLOC_N_MIN: float(counts.min()) if m else 0.0,
            M.ALLOC_N_MAX: float(counts.max()) if m else 0.0,
            M.ALLOC_ZERO_PROMPTS: float((counts == 0).sum()),
            M.ALLOC_VARIANCE_EXPECTED: float(expected_informative(a, b, counts, objective).sum()),
            M.ALLOC_VARIANCE_UNIFORM: float(
                expected_informative(a, b, even_split(m, total), objective).sum()
            ),
            M.ALLOC_VARIANCE_P_MEAN: float(p_mean.mean()) if m else 0.0,
            M.ALLOC_VARIANCE_SEEN: float(sum(p.prompt in self.posterior for p in prompts)),
            M.ALLOC_VARIANCE_EVIDENCE: float(evidence.mean()) if m else 0.0,
        }
        return Allocation(counts, p_hat=p_mean, stats=stats)

    def observe(
        self, prompts: list[Problem], counts: np.ndarray, accepted: np.ndarray, tokens: np.ndarray
    ) -> None:
        prior, d = self.cfg.variance_prior, self.cfg.variance_decay
        for p, n, acc in zip(prompts, counts.tolist(), accepted.tolist(), strict=True):
            if n == 0:  # not visited: no evidence, and nothing forgotten
                continue
            a, b = self.posterior.get(p.prompt, (prior, prior))
            self.posterior[p.prompt] = (prior + d * (a - prior) + acc, prior + d * (b - prior) + n - acc)

    def state_dict(self) -> dict:
        return {"posterior": {k: [a, b] for k, (a, b) in self.posterior.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.posterior = {str(k): (float(a), float(b)) for k, (a, b) in state.get("posterior", {}).items()}
