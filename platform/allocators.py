"""Allocators: how many rollouts each prompt of a step gets, behind one Protocol (style.md habit 6).

- `uniform`: n_per_prompt each (best-of-n), no probe.
- `gvm`: probe n_probe samples per prompt with the current policy, estimate p̂_i and Ĝ_i, then split the
  same budget N = m x n_per_prompt by `gvm_allocate` (method.md §2-4). The probe is charged to the run's
  rollout budget by the loop and is not trained on (as the paper).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from dibs.algorithms.allocation import gvm_allocate, uniform_allocation
from dibs.platform import metrics as M
from dibs.platform.config import AllocationConfig
from dibs.platform.estimators import accept_rates, grad_norm_estimates, grad_param_names, is_tied
from dibs.platform.evaluate import score_groups
from dibs.platform.rollout import RolloutEngine, SamplingSpec
from dibs.platform.task import Problem


@dataclass
class Allocation:
    """One step's allocation and what deciding it cost."""

    counts: np.ndarray  # [m] int64 rollouts per prompt, summing to m x n_per_prompt; 0 = prompt skipped
    probe_rollouts: int = 0  # rollouts generated to decide `counts` (charged to the budget)
    probe_tokens: int = 0  # response tokens of those rollouts
    stats: dict[str, float] = field(default_factory=dict)  # metric name -> value, recorded with the step


@dataclass(frozen=True)
class AllocContext:
    """What an allocator may use at a step: the engine to probe with, the policy whose gradients define
    G_i, the rollout sampling spec (the probe samples exactly as the step's rollouts), and a seed."""

    engine: RolloutEngine
    policy: torch.nn.Module
    spec: SamplingSpec
    seed: int


class Allocator(Protocol):
    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        """Rollout counts for `prompts` (counts[i] for prompts[i])."""
        ...


class UniformAllocator:
    """The baseline: n samples per prompt; touches neither the engine nor any RNG."""

    def __init__(self, n_per_prompt: int):
        self.n = n_per_prompt

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        return Allocation(uniform_allocation(len(prompts), self.n))


class GVMAllocator:
    """Probe, estimate, allocate (method.md §3-4), re-probing every step with the current policy.

    When every probe sample fails (all p̂_i = 0) there is no signal: `gvm_allocate` falls back to the
    uniform split, and `alloc/p_mean` = 0 shows it in the metrics.
    """

    def __init__(self, cfg: AllocationConfig):
        self.cfg = cfg

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        c, m = self.cfg, len(prompts)
        probe = ctx.engine.generate([p.prompt for p in prompts], [c.n_probe] * m, ctx.spec, seed=ctx.seed)
        rewards = score_groups(probe, [p.answer for p in prompts])
        p_hat = accept_rates(rewards, probe.group_ids, m)  # [m]
        g_hat = grad_norm_estimates(ctx.policy, probe, rewards, m, params=c.grad_params,
                                    temperature=ctx.spec.temperature)  # [m]
        counts = gvm_allocate(g_hat, p_hat, m * c.n_per_prompt, alpha=c.alpha, beta=c.beta,
                              filter_threshold=c.filter_threshold, filter_insufficient=c.filter_insufficient,
                              min_per_prompt=c.min_per_prompt, max_per_prompt=c.max_per_prompt)
        return Allocation(counts, probe_rollouts=len(probe.texts), probe_tokens=probe.num_tokens,
                          stats=self._stats(counts, p_hat, g_hat, ctx.policy))

    def _stats(self, counts: np.ndarray, p_hat: np.ndarray, g_hat: np.ndarray,
               policy: torch.nn.Module) -> dict[str, float]:
        seen = p_hat > 0
        # A tied embedding's gradient mixes its input and output roles (method.md §3): record it.
        names = grad_param_names(policy, self.cfg.grad_params)
        tied = is_tied(policy) and grad_param_names(policy, "embedding")[0] in names
        return {
            M.ALLOC_N_MIN: float(counts.min()),
            M.ALLOC_N_MAX: float(counts.max()),
            M.ALLOC_ZERO_PROMPTS: float((counts == 0).sum()),
            M.ALLOC_P_MEAN: float(p_hat.mean()),
            M.ALLOC_G_MEAN: float(g_hat[seen].mean()) if seen.any() else 0.0,
            M.ALLOC_GRAD_TIED: float(tied),
        }


def build_allocator(cfg: AllocationConfig) -> Allocator:
    """The allocator named by `allocation.allocator` (two implementations: a match, not a registry)."""
    match cfg.allocator:
        case "uniform":
            return UniformAllocator(cfg.n_per_prompt)
        case "gvm":
            return GVMAllocator(cfg)
    raise ValueError(f"allocation.allocator: unknown allocator {cfg.allocator!r}")
