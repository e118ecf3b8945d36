"""Allocators: how many rollouts each prompt of a step gets, behind one Protocol
(docs/conventions.md, Code style).

- `uniform`: n_per_prompt each (best-of-n), no probe.
- `gvm`: probe n_probe samples per prompt with the current policy, estimate p̂_i and Ĝ_i, then split the
  same budget N = m x n_per_prompt by `gvm_allocate` (docs/method.md §2-4). The probe is charged to the run's
  rollout budget by the loop and is not trained on (as the paper).
- `gvm_reuse` (beyond the paper, docs/method.md §3): running estimates carried across epochs; a prompt is
  probed on its first visit and every `reuse_probe_every`-th visit after, so a step probes about 1/k of
  its prompts once the data has been seen. Between probes p̂ is updated from the prompt's own training
  rollouts (counts pooled with weight `reuse_decay` on the past); Ĝ is the last probe's.
- `dapo`: uniform counts; its dynamic sampling (drop all-equal groups, refill) is a generation stage of
  its own (platform/allocation/dapo.py).
- `gvm_oracle` (beyond the paper): gvm with a large probe of `n_oracle` samples per prompt and at least one
  rollout per prompt, the probe NOT charged to the budget. Not budget-honest: an upper bound on what
  near-exact estimates could buy, for studies only; `alloc/oracle_rollouts` records what the probe cost.

Every allocator can save and restore its state (`state_dict`), which checkpoints carry. `build_allocator`
(factory.py) picks the one a config names, from the built-in ones and those added with `register_allocator`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from dibs.algorithms.allocation import gvm_allocate, uniform_allocation
from dibs.platform.allocation.estimators import accept_rates, grad_norm_estimates, grad_param_names, is_tied
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig
from dibs.platform.rollout.base import RolloutEngine, Rollouts, SamplingSpec
from dibs.platform.tasks.base import Problem


@dataclass
class Allocation:
    """One step's allocation and what deciding it cost; every allocator reports the same fields."""

    counts: np.ndarray  # [m] int64 rollouts per prompt; 0 = prompt skipped
    p_hat: np.ndarray | None = None  # [m] the estimates the split used; None: the allocator has none
    g_hat: np.ndarray | None = None
    probed: np.ndarray | None = None  # [m] bool: estimate from a probe at this step
    probe_rollouts: int = 0  # rollouts generated to decide `counts` (charged to the budget, not trained)
    probe_tokens: int = 0  # response tokens of those rollouts
    stats: dict[str, float] = field(default_factory=dict)  # metric name -> value, recorded with the step
    # Rollouts generated while deciding `counts` that the step also trains on (probe_trains), group ids
    # indexing the step's prompts; the loop merges them into the batch and charges them as training
    # rollouts, so they are not in probe_rollouts. `counts` are the rollouts still to generate.
    trained: Rollouts | None = None


@dataclass(frozen=True)
class StepBudget:
    """What a step's training rollouts may spend (allocation.budget): `rollouts` always (prompts x
    n_per_prompt in rollouts mode; step_tokens / tokens_per_rollout in tokens mode); `tokens` only in tokens
    mode. `tokens_per_rollout`: the run's mean response length so far, the estimate that converted."""

    rollouts: int
    tokens: int | None = None
    tokens_per_rollout: float = 0.0


def _unscored(rollouts: Rollouts, prompts: list[Problem]) -> torch.Tensor:
    raise ValueError(
        "AllocContext.score is not set: an allocator that generates rollouts scores them with "
        "the run's task (functools.partial(tasks.evaluate.score_groups, task))"
    )


@dataclass(frozen=True)
class AllocContext:
    """What an allocator may use at a step: the engine to probe with, the policy whose gradients define
    G_i, the rollout sampling spec (the probe samples exactly as the step's rollouts), a seed, the step,
    and `score`, the run's task's rewards of a grouped batch (tasks/evaluate.py, `score_groups` bound to the
    task)."""

    engine: RolloutEngine
    policy: torch.nn.Module
    spec: SamplingSpec
    seed: int
    step: int = 1
    score: Callable[[Rollouts, list[Problem]], torch.Tensor] = _unscored
    budget: StepBudget | None = None  # None: prompts x n_per_prompt rollouts (rollouts mode)


def step_rollouts(ctx: AllocContext, num_prompts: int, n_per_prompt: int) -> int:
    """The rollouts the step's training may spend: the context's budget, or prompts x n_per_prompt."""
    return ctx.budget.rollouts if ctx.budget is not None else num_prompts * n_per_prompt


class Allocator(Protocol):
    """How many rollouts each prompt of a step gets; the loop calls `allocate` before generating and
    `observe` after scoring, and checkpoints carry `state_dict`."""

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        """Rollout counts for `prompts` (counts[i] for prompts[i])."""
        ...

    def observe(
        self, prompts: list[Problem], counts: np.ndarray, accepted: np.ndarray, tokens: np.ndarray
    ) -> None:
        """The step's own outcome: counts[i] training rollouts of prompts[i], accepted[i] of them accepted,
        tokens[i] their response tokens (`prompts` are the batch's: with dapo's dynamic sampling, the
        groups it kept)."""
        ...

    def state_dict(self) -> dict:
        """JSON-serialisable state, saved with checkpoints."""
        ...

    def load_state_dict(self, state: dict) -> None: ...


class Stateless:
    """The Protocol's state methods for allocators that keep nothing between steps."""

    def observe(
        self, prompts: list[Problem], counts: np.ndarray, accepted: np.ndarray, tokens: np.ndarray
    ) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got keys {sorted(state)[:3]}")


class UniformAllocator(Stateless):
    """The baseline: n samples per prompt; touches neither the engine nor any RNG. Under a token budget
    the step's N rollouts are split as evenly as they go (the first N mod m prompts get one more)."""

    def __init__(self, n_per_prompt: int):
        self.n = n_per_prompt

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        m = len(prompts)
        total = step_rollouts(ctx, m, self.n)
        if total == m * self.n:
            return Allocation(uniform_allocation(m, self.n))
        return Allocation(even_split(m, total))


def even_split(num_prompts: int, total: int) -> np.ndarray:
    """`total` rollouts over `num_prompts` prompts as evenly as they go, the first ones taking the rest."""
    counts = np.full(num_prompts, total // max(num_prompts, 1), dtype=np.int64)
    counts[: total - int(counts.sum())] += 1
    return counts


def probe(
    prompts: list[Problem], ctx: AllocContext, cfg: AllocationConfig, n: int | None = None
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """n samples (default n_probe) per prompt with the current policy -> (p̂, Ĝ, rollouts, tokens)
    (docs/method.md §3)."""
    n = cfg.n_probe if n is None else n
    p_hat, g_hat, ro = probe_rollouts(prompts, ctx, cfg, [n] * len(prompts))
    return p_hat, g_hat, len(ro.texts), ro.num_tokens


def probe_rollouts(
    prompts: list[Problem], ctx: AllocContext, cfg: AllocationConfig, counts: list[int]
) -> tuple[np.ndarray, np.ndarray, Rollouts]:
    """counts[i] samples of prompts[i] with the current policy and the step's sampling spec, on the
    context's seed -> (p̂, Ĝ, the probe's rollouts); probe_trains trains on those rollouts."""
    m = len(prompts)
    ro = ctx.engine.generate([p.prompt for p in prompts], counts, ctx.spec, seed=ctx.seed)
    rewards = ctx.score(ro, prompts)
    p_hat = accept_rates(rewards, ro.group_ids, m)
    g_hat = grad_norm_estimates(
        ctx.policy, ro, rewards, m, params=cfg.grad_params, temperature=ctx.spec.temperature
    )
    return p_hat, g_hat, ro


def split_budget(
    p_hat: np.ndarray,
    g_hat: np.ndarray,
    cfg: AllocationConfig,
    min_per_prompt: int | None = None,
    total: int | None = None,
) -> np.ndarray:
    """N rollouts (`total`; default m x n_per_prompt) split by the GVM rule with the config's filters and
    bounds (docs/method.md §2); `min_per_prompt` overrides the config's floor."""
    floor = cfg.min_per_prompt if min_per_prompt is None else min_per_prompt
    return gvm_allocate(
        g_hat,
        p_hat,
        len(p_hat) * cfg.n_per_prompt if total is None else total,
        alpha=cfg.alpha,
        beta=cfg.beta,
        filter_threshold=cfg.filter_threshold,
        filter_insufficient=cfg.filter_insufficient,
        min_per_prompt=floor,
        max_per_prompt=cfg.max_per_prompt,
    )


def gvm_allocation(
    cfg: AllocationConfig,
    p_hat: np.ndarray,
    g_hat: np.ndarray,
    probed: np.ndarray,
    policy: torch.nn.Module,
    *,
    probe_rollouts: int,
    probe_tokens: int,
    min_per_prompt: int | None = None,
    total: int | None = None,
) -> Allocation:
    """The GVM split of the step's budget (`total` rollouts, default m x n_per_prompt) from these
    estimates, with its metric rows: what every GVM allocator returns once it has p̂ and Ĝ (from a probe,
    running counts or a free oracle probe)."""
    counts = split_budget(p_hat, g_hat, cfg, min_per_prompt, total)
    stats = gvm_stats(cfg, counts, p_hat, g_hat, probed, policy)
    return Allocation(counts, p_hat, g_hat, probed, probe_rollouts, probe_tokens, stats)


def gvm_stats(
    cfg: AllocationConfig,
    counts: np.ndarray,
    p_hat: np.ndarray,
    g_hat: np.ndarray,
    probed: np.ndarray,
    policy: torch.nn.Module,
) -> dict[str, float]:
    seen = p_hat > 0
    # A tied embedding's gradient mixes its input and output roles (docs/method.md §3): record it.
    names = grad_param_names(policy, cfg.grad_params)
    tied = is_tied(policy) and grad_param_names(policy, "embedding")[0] in names
    return {
        M.ALLOC_N_MIN: float(counts.min()),
        M.ALLOC_N_MAX: float(counts.max()),
        M.ALLOC_ZERO_PROMPTS: float((counts == 0).sum()),
        M.ALLOC_P_MEAN: float(p_hat.mean()),
        M.ALLOC_G_MEAN: float(g_hat[seen].mean()) if seen.any() else 0.0,
        M.ALLOC_GRAD_TIED: float(tied),
        M.ALLOC_PROBED_PROMPTS: float(probed.sum()),
    }


class GVMAllocator(Stateless):
    """Probe, estimate, allocate (docs/method.md §3-4), re-probing every prompt every step.

    When every probe sample fails (all p̂_i = 0) there is no signal: `gvm_allocate` falls back to the
    uniform split, and `alloc/p_mean` = 0 shows it in the metrics.
    """

    def __init__(self, cfg: AllocationConfig):
        self.cfg = cfg

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        p_hat, g_hat, rollouts, tokens = probe(prompts, ctx, self.cfg)
        probed = np.ones(len(prompts), dtype=bool)
        return gvm_allocation(
            self.cfg,
            p_hat,
            g_hat,
            probed,
            ctx.policy,
            probe_rollouts=rollouts,
            probe_tokens=tokens,
            total=step_rollouts(ctx, len(prompts), self.cfg.n_per_prompt),
        )


class GVMOracleAllocator(Stateless):
    """gvm with near-exact estimates: every prompt probed with `n_oracle` samples every step, the probe
    not charged to the budget and not trained on. Not budget-honest: an upper bound, for studies only.

    The loop charges `probe_rollouts`/`probe_tokens`, so they stay 0 here; what the probe did cost is
    in `alloc/oracle_rollouts` and `alloc/oracle_tokens` (this step's), never in budget/.
    """

    def __init__(self, cfg: AllocationConfig):
        self.cfg = cfg

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        p_hat, g_hat, rollouts, tokens = probe(prompts, ctx, self.cfg, n=self.cfg.n_oracle)
        # Floor of one: a probe that sees 0 of 32 says p is small (below 3/32 ~ 0.09 at 95%, the rule of
        # three), not 0, and a ceiling must not get there by dropping prompts a finite probe failed to solve.
        floor = max(1, self.cfg.min_per_prompt)
        probed = np.ones(len(prompts), dtype=bool)
        alloc = gvm_allocation(
            self.cfg,
            p_hat,
            g_hat,
            probed,
            ctx.policy,
            probe_rollouts=0,
            probe_tokens=0,
            min_per_prompt=floor,
            total=step_rollouts(ctx, len(prompts), self.cfg.n_per_prompt),
        )
        alloc.stats |= {M.ALLOC_ORACLE_ROLLOUTS: float(rollouts), M.ALLOC_ORACLE_TOKENS: float(tokens)}
        return alloc


@dataclass
class PromptEstimate:
    """gvm_reuse's running estimate of one prompt: pooled (decayed) counts for p̂, the last probe's Ĝ."""

    accepted: float
    samples: float
    g: float
    visits: int

    @property
    def p(self) -> float:
        return self.accepted / self.samples if self.samples > 0 else 0.0


class GVMReuseAllocator:
    """GVM with estimates carried across visits; only unseen or stale prompts are probed."""

    def __init__(self, cfg: AllocationConfig):
        self.cfg = cfg
        self.estimates: dict[str, PromptEstimate] = {}  # keyed by prompt text

    def stale(self, prompt: str) -> bool:
        est = self.estimates.get(prompt)
        return est is None or est.visits % self.cfg.reuse_probe_every == 0

    def allocate(self, prompts: list[Problem], ctx: AllocContext) -> Allocation:
        probed = np.array([self.stale(p.prompt) for p in prompts], dtype=bool)
        rollouts = tokens = 0
        if probed.any():
            fresh = [p for p, s in zip(prompts, probed, strict=True) if s]
            p_new, g_new, rollouts, tokens = probe(fresh, ctx, self.cfg)
            for p, pv, gv in zip(fresh, p_new, g_new, strict=True):
                # The policy has moved since the last probe: a fresh probe replaces the pooled counts.
                old = self.estimates.get(p.prompt)
                self.estimates[p.prompt] = PromptEstimate(
                    float(pv) * self.cfg.n_probe, float(self.cfg.n_probe), float(gv), old.visits if old else 0
                )
        for p in dict.fromkeys(q.prompt for q in prompts):  # a prompt twice in one batch is one visit
            self.estimates[p].visits += 1
        p_hat = np.array([self.estimates[p.prompt].p for p in prompts])
        g_hat = np.array([self.estimates[p.prompt].g for p in prompts])
        return gvm_allocation(
            self.cfg,
            p_hat,
            g_hat,
            probed,
            ctx.policy,
            probe_rollouts=rollouts,
            probe_tokens=tokens,
            total=step_rollouts(ctx, len(prompts), self.cfg.n_per_prompt),
        )

    def observe(
        self, prompts: list[Problem], counts: np.ndarray, accepted: np.ndarray, tokens: np.ndarray
    ) -> None:
        d = self.cfg.reuse_decay
        for p, n, a in zip(prompts, counts.tolist(), accepted.tolist(), strict=True):
            est = self.estimates.get(p.prompt)
            if est is not None and n > 0:
                est.accepted, est.samples = d * est.accepted + a, d * est.samples + n

    def state_dict(self) -> dict:
        return {"estimates": {k: [e.accepted, e.samples, e.g, e.visits] for k, e in self.estimates.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.estimates = {
            k: PromptEstimate(float(a), float(s), float(g), int(v))
            for k, (a, s, g, v) in state.get("estimates", {}).items()
        }
