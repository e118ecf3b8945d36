"""The `allocation` section of the experiment spec (docs/method.md §2-4 and §8): which allocator decides
how many rollouts each prompt of a step gets, the step's budget, and each allocator's knobs. A section like
those in config_sections.py, kept apart for its size; config.py re-exports it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dibs.platform.core.config_sections import _Section
from dibs.platform.core.registry import ALLOCATORS


class AllocationConfig(_Section):
    """How many rollouts each prompt of a step gets (docs/method.md §2-4), chosen by name:

    - `uniform`: n_per_prompt each (best-of-n; the baseline);
    - `gvm`: probe every prompt every step, then n_i ∝ G_i / sqrt(p_i + alpha/p_i^(beta-1));
    - `gvm_reuse`: as gvm, but a prompt is probed only on its first visit and every `reuse_probe_every`-th
      visit after; in between its p̂ (updated from its own training rollouts) and Ĝ are carried over;
    - `dapo`: n_per_prompt each, groups whose rewards are all equal are dropped and refilled with fresh
      prompts, at most `max_gen_batches` generation rounds per step (then it trains on what it has);
    - `gvm_oracle`: as gvm, but the probe takes `n_oracle` samples per prompt, is NOT charged to the rollout
      budget (recorded as alloc/oracle_rollouts instead) and every prompt gets at least one rollout.
      Not budget-honest: an upper bound, for studies only;
    - `reinforce_ada`, `greso`, `knapsack`, `variance`, `probe_trains`: the allocator zoo (docs/method.md,
      The allocator zoo), each with its `ada_*`, `greso_*`, `knapsack_*` or `variance_*` knobs below;
    - a name registered with `register_allocator` (README, Adding an allocator): its own rule.
    """

    allocator: str = Field(
        "uniform",
        description="uniform | gvm | gvm_reuse | dapo | gvm_oracle | reinforce_ada | greso | knapsack | "
        "variance | probe_trains (see the class docstring), or a name registered with register_allocator "
        "(platform/allocation/factory.py)",
    )
    n_per_prompt: int = Field(
        8, ge=1, description="budget per prompt; a step spends prompts x n (+ the probe)"
    )
    n_probe: int = Field(
        8,
        ge=1,
        description="probe samples per prompt to estimate p_i and G_i, charged to "
        "the rollout budget and not trained on (as the paper)",
    )
    n_oracle: int = Field(
        32,
        ge=1,
        description="gvm_oracle: probe samples per prompt, NOT charged to the budget and not trained on",
    )
    alpha: float = Field(
        1e-3, gt=0, allow_inf_nan=False, description="regulariser that sends the weight to 0 as p -> 0"
    )
    beta: float = Field(
        2.0,
        allow_inf_nan=False,
        description="regulariser exponent; with beta = 2 the weight peaks at p = sqrt(alpha)",
    )
    filter_threshold: float = Field(
        1.0,
        ge=0,
        le=1,
        description="prompts with p_i above this get 0 "
        "(too easy; under GRPO all-correct groups teach nothing); 1.0 = off",
    )
    filter_insufficient: float = Field(
        0.0,
        ge=0,
        description="prompts expecting fewer accepted samples than this (p_i x share) get 0; 0 = off",
    )
    min_per_prompt: int = Field(0, ge=0, description="floor on each prompt's count; at most n_per_prompt")
    max_per_prompt: int | None = Field(
        None, ge=1, description="cap on each prompt's count, at least n_per_prompt; None = no cap"
    )
    reuse_probe_every: int = Field(
        4,
        ge=1,
        description="gvm_reuse: probe a prompt on visits 1, 1+k, 1+2k, ...; 1 = probe every visit (gvm)",
    )
    reuse_decay: float = Field(
        0.5,
        ge=0,
        le=1,
        description="gvm_reuse: weight of the earlier counts when "
        "a prompt's training rollouts update its p̂ (0: latest visit only)",
    )
    max_gen_batches: int = Field(
        3,
        ge=1,
        description="dapo: generation rounds per step at most; a step "
        "still short of prompts then trains on what it has (recorded)",
    )
    grad_params: Literal["embedding", "lm_head", "last_layer", "all"] = Field(
        "embedding",
        description="parameters whose per-sample gradient norm estimates G_i (reference: "
        "embedding; with tied embeddings, embedding and lm_head are the same tensor)",
    )
    budget: Literal["rollouts", "tokens"] = Field(
        "rollouts",
        description="what a step's training budget counts: rollouts (prompts x n_per_prompt) or "
        "generated tokens (step_tokens, turned into rollouts by the run's mean response length so far)",
    )
    step_tokens: int | None = Field(
        None,
        ge=1,
        description="budget: tokens: generated tokens a step's training rollouts may spend (probes are "
        "charged on top, as in rollouts mode); required in tokens mode",
    )
    # reinforce_ada (docs/method.md, The allocator zoo)
    ada_round_size: int = Field(
        4,
        ge=1,
        description="reinforce_ada: samples per active prompt and round; at N / m or more, round 1 "
        "spends the whole step budget",
    )
    ada_max_rounds: int = Field(
        4, ge=1, description="reinforce_ada: rounds at most per step (a prompt draws <= size x rounds)"
    )
    ada_group: int | None = Field(
        None,
        ge=1,
        description="reinforce_ada: samples a prompt trains on (its group n, which the balanced exit rule "
        "counts against); None = n_per_prompt. Below n_per_prompt, hard prompts can draw more than they keep",
    )
    ada_exit: Literal["positive", "balanced"] = Field(
        "balanced",
        description="reinforce_ada: a prompt stops at its first positive (positive) or once it has "
        "both enough positives and enough negatives for a balanced group (balanced)",
    )
    # greso (docs/method.md, The allocator zoo)
    greso_explore: float = Field(
        0.5,
        gt=0,
        le=1,
        description="greso: exploration probability p_e: a prompt whose last z visits all had zero reward "
        "variance (all accepted, or none) is kept with probability p_e^z; the start of both p_e (all "
        "accepted, all rejected) when greso_target adapts them",
    )
    greso_floor: float = Field(
        0.01, ge=0, le=1, description="greso: the keep probability never drops below this (exploration)"
    )
    greso_target: float | None = Field(
        0.25,
        gt=0,
        lt=1,
        description="greso: target share of zero-variance groups a step trains on; after each step "
        "each p_e moves by greso_adapt_step toward it (a third of it for all-accepted groups, two "
        "thirds for all-rejected ones), within [0.05, 0.95]; None: p_e stays greso_explore",
    )
    greso_adapt_step: float = Field(
        0.01, gt=0, le=1, description="greso: how far p_e moves after a step (greso_target)"
    )
    # knapsack (docs/method.md, The allocator zoo)
    knapsack_prior_p: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="knapsack: pass rate assumed for a prompt not seen yet",
    )
    knapsack_min: int = Field(
        2,
        ge=0,
        description="knapsack: every prompt gets at least this many rollouts (or min_per_prompt if larger; "
        "the paper's 2), so the pass rate of a prompt the knapsack would skip is still measured; dropped "
        "to 0 at a step whose budget cannot give every prompt its floor",
    )
    knapsack_cap: int = Field(
        16,
        ge=1,
        description="knapsack: without max_per_prompt, a prompt gets at most knapsack_cap x n_per_prompt "
        "rollouts (the paper's cap of 128 is 16 x 8)",
    )
    knapsack_confidence: float = Field(
        0.9,
        gt=0,
        le=1,
        description="knapsack: a solvable prompt gets at most the rollouts that see both outcomes with this "
        "probability; what that leaves goes to prompts never solved, then to all (the authors' fallback); "
        "1 = off",
    )
    knapsack_decay: float = Field(
        0.5,
        ge=0,
        le=1,
        description="knapsack: weight kept by a prompt's earlier visits when its latest rollouts update its "
        "pass rate and response length (0: latest visit only)",
    )
    # variance (docs/method.md, The allocator zoo)
    variance_prior: float = Field(
        1.0, gt=0, description="variance: a prompt's pass rate starts as Beta(prior, prior)"
    )
    variance_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="variance: weight kept by a prompt's earlier evidence at each new visit (1: none "
        "forgotten; below 1 the posterior follows the moving policy)",
    )
    variance_objective: Literal["mixed", "positive"] = Field(
        "mixed",
        description="variance: what makes a group informative: mixed rewards (GRPO: an all-equal group "
        "has zero advantage) or at least one accepted sample (RAFT, RAFT++: it trains on those)",
    )

    @field_validator("allocator")
    @classmethod
    def _known_allocator(cls, name: str) -> str:
        if name not in ALLOCATORS:  # the built-in ones and those registered in this process
            raise PydanticCustomError(
                "unknown_allocator",
                "unknown allocator; known: {known}",
                {"known": ", ".join(ALLOCATORS.names())},
            )
        return name

    @model_validator(mode="after")
    def _bounds(self) -> AllocationConfig:
        # The step budget is prompts x n_per_prompt, so the bounds are feasible iff min <= n <= max.
        if self.min_per_prompt > self.n_per_prompt:
            raise ValueError(f"min_per_prompt ({self.min_per_prompt}) > n_per_prompt ({self.n_per_prompt})")
        if self.max_per_prompt is not None and self.max_per_prompt < self.n_per_prompt:
            raise ValueError(f"max_per_prompt ({self.max_per_prompt}) < n_per_prompt ({self.n_per_prompt})")
        if self.budget == "tokens" and self.step_tokens is None:
            raise ValueError("budget: tokens needs step_tokens (the generated tokens a step may spend)")
        # probe_trains' probe is part of the step's budget: in rollouts mode it must fit (in tokens mode a
        # step's rollouts are known only at run time, and the probe is clamped there).
        if (
            self.allocator == "probe_trains"
            and self.budget == "rollouts"
            and self.n_probe > self.n_per_prompt
        ):
            raise ValueError(
                f"probe_trains: n_probe ({self.n_probe}) > n_per_prompt ({self.n_per_prompt}): the probe, "
                "which the step trains on, would spend more than the step's prompts x n_per_prompt rollouts"
            )
        return self
