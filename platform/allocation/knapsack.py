"""The `knapsack` allocator (Knapsack RL, arXiv 2509.25849; docs/method.md §8, knapsack).

No probe: a prompt's pass rate p̂_i and mean response length L̂_i come from its own training rollouts on
earlier visits (`observe`), pooled with weight `knapsack_decay` on the past and carried across epochs,
keyed by prompt text, in the checkpoint (`state_dict`). A prompt not seen yet gets p̂ =
`knapsack_prior_p` and L̂ = the run's mean response length (the step budget's tokens per rollout; else
the mean over the prompts seen; else the sampling spec's max_new_tokens, which no rollout exceeds).

The counts maximise Σ Value(n_i, p̂_i) under the step's budget (algorithms/knapsack.py): Σ n_i <= N
rollouts (`allocation.budget: rollouts`), or Σ n_i L̂_i <= step_tokens (`tokens`), each count in
[max(knapsack_min, min_per_prompt), max_per_prompt or knapsack_cap x n_per_prompt].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dibs.algorithms.knapsack import knapsack_allocate
from dibs.platform.allocation.allocators import Allocation, AllocContext, step_rollouts
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig
from dibs.platform.tasks.base import Problem


@dataclass
class History:
    """A prompt's pooled (decayed) training rollouts: accepted ones, all, and their response tokens."""

    accepted: float
    samples: float
    tokens: float


class KnapsackAllocator:
    """Knapsack RL's allocation from carried estimates; see the module docstring."""

    def __init__(self, cfg: AllocationConfig):
        self.cfg = cfg
        self.history: dict[str, History] = {}  # keyed by prompt text

    def bounds(self) -> tuple[int, int]:
        cfg = self.cfg
        lo = max(cfg.knapsack_min, cfg.min_per_prompt)
        hi = cfg.max_per_prompt if cfg.max_per_prompt is not None else cfg.knapsack_cap * cfg.n_per_prompt
        return lo, max(hi, lo, 1)

    def default_length(self, ctx: AllocContext) -> float:
        """L̂ of a prompt not seen yet: the run's mean response length, as well as it is known."""
        if ctx.budget is not None and ctx.budget.tokens_per_rollout > 0:
            return ctx.budget.tokens_per_rollout
        samples = sum(h.samples for h in self.history.values())
        if samples > 0:
            return sum(h.tokens for h in self.history.values()) / samples
        return float(ctx.spec.max_new_tokens)

    def estimates(
        self, prompts: list[Problem], ctx: AllocContext
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(p̂, L̂, seen) per prompt; L̂ >= 1, as an empty response still costs a forward pass."""
        default = self.default_length(ctx)
        rows = [self.history.get(p.prompt) for p in prompts]
        seen = np.array([h is not None and h.samples > 0 for h in rows], dtype=bool)
        prior = self.cfg.knapsack_prior_p
        p_hat = np.array(
            [h.accepted / h.samples if h and s else prior for h, s in zip(rows, seen, strict=True)]
        )
        length = np.array(
            [h.tokens / h.samples if h and s else default for h, s in zip(rows, seen, strict=True)]
        )
        return p_hat, np.maximum(length, 1.0), seen

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        m = len(prompts)
        p_hat, length, seen = self.estimates(prompts, ctx)
        lo, hi = self.bounds()
        tokens_mode = ctx.budget is not None and ctx.budget.tokens is not None
        if tokens_mode:
            cost, budget = length, float(ctx.budget.tokens)
        else:
            cost, budget = np.ones(m), float(step_rollouts(ctx, m, self.cfg.n_per_prompt))
        plan = knapsack_allocate(p_hat, cost, budget, lo=lo, hi=hi, confidence=self.cfg.knapsack_confidence)
        counts = plan.counts
        stats = {
            M.ALLOC_N_MIN: float(counts.min()) if m else 0.0,
            M.ALLOC_N_MAX: float(counts.max()) if m else 0.0,
            M.ALLOC_ZERO_PROMPTS: float((counts == 0).sum()),
            M.ALLOC_P_MEAN: float(p_hat.mean()) if m else 0.0,
            M.KNAPSACK_VALUE: plan.value,
            M.KNAPSACK_PLANNED_ROLLOUTS: float(counts.sum()),
            M.KNAPSACK_PLANNED_TOKENS: float(counts @ length),
            M.KNAPSACK_FALLBACK_ROLLOUTS: float(plan.fallback),
            M.KNAPSACK_EFFECTIVE_PROMPTS: float(((p_hat > 0) & (p_hat < 1)).sum()),
            M.KNAPSACK_UNSEEN_PROMPTS: float((~seen).sum()),
            M.KNAPSACK_FLOOR_DROPPED: float(plan.floor_dropped),
        }
        return Allocation(counts, p_hat=p_hat, stats=stats)

    def observe(
        self, prompts: list[Problem], counts: np.ndarray, accepted: np.ndarray, tokens: np.ndarray
    ) -> None:
        d = self.cfg.knapsack_decay
        for p, n, a, t in zip(prompts, counts.tolist(), accepted.tolist(), tokens.tolist(), strict=True):
            if n <= 0:  # nothing measured: keep what was known
                continue
            h = self.history.setdefault(p.prompt, History(0.0, 0.0, 0.0))
            h.accepted, h.samples, h.tokens = d * h.accepted + a, d * h.samples + n, d * h.tokens + t

    def state_dict(self) -> dict:
        return {"history": {k: [h.accepted, h.samples, h.tokens] for k, h in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        unknown = set(state) - {"history"}
        if unknown:
            raise ValueError(f"knapsack: unknown state keys {sorted(unknown)[:3]}")
        self.history = {
            k: History(float(a), float(s), float(t)) for k, (a, s, t) in state.get("history", {}).items()
        }
