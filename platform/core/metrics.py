"""Metric names, defined once: the loop writes them, the store keys on them, dashboards read them.

Namespaces follow CleanRL: `train/` (the update), `rollout/` (generation and reward), `alloc/` (how a
probing allocator split the budget), `budget/` (what was spent), `time/` (wall seconds per stage),
`eval/` (held-out evaluation, step 0 and every K).

`PromptStat` is the per-prompt telemetry row (where the budget went): one per prompt per step, stored in
the `prompt_stats` table next to the metric rows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PromptStat:
    """One prompt at one step: its estimates, the rollouts it got and how many were accepted.

    `p_hat`/`g_hat` are the estimates the allocator used (NaN when it has none, e.g. Ĝ under `uniform`,
    whose p̂ is then the step's own acceptance rate); `probed` says whether they came from a fresh probe
    at this step (False: carried over by `gvm_reuse`, or measured on the step's rollouts).
    """

    prompt_id: str  # the prompt text (unique within a task's training split)
    p_hat: float
    g_hat: float
    n_alloc: int  # training rollouts generated for the prompt at this step (0: skipped)
    accepted: int  # of those, how many scored 1
    probed: bool


# eval/ — step 0 (after the warm start, before any RL update) and every `eval.every` steps
EVAL_ACCURACY = "eval/accuracy"  # greedy, held-out
EVAL_MEAN_AT_K = "eval/mean_at_k"  # mean accuracy of k samples per problem at temperature T
EVAL_FORMAT_RATE = "eval/format_rate"  # greedy responses that end in a boxed answer and EOS
EVAL_RESPONSE_LEN = "eval/response_len"


def eval_accuracy_at(level: int) -> str:
    """Greedy held-out accuracy on problems with `level` terms."""
    return f"eval/accuracy_terms_{level}"


# eval/<suite>/ — a benchmark suite (`math5`: the paper's five sets, docs/method.md §6), from `dibs eval`
# on a checkpoint (at the checkpoint's step) or every `eval.every` steps with `eval.suite: math5`.
MEAN_AT_K = "mean_at_k"  # mean accuracy of k samples per problem at temperature T
PASS_AT_K = "pass_at_k"  # share of problems with at least one correct sample of k
PROBLEMS = "problems"  # problems evaluated in the set (fewer than the set with `--limit`)
SUITE_AVG = "avg"  # the unweighted mean over the suite's sets, as the paper's 5-set average


def eval_suite_metric(suite: str, name: str, stat: str) -> str:
    """`eval/math5/math500/mean_at_k`, ..., `eval/math5/avg/pass_at_k`."""
    return f"eval/{suite}/{name}/{stat}"


def eval_suite_setting(suite: str, key: str) -> str:
    """`eval/math5/k`, `eval/math5/temperature`: the settings an evaluation ran with, as rows."""
    return f"eval/{suite}/{key}"


# rollout/ and train/ — steps 1..T
ROLLOUT_REWARD = "rollout/reward_mean"
ROLLOUT_RESPONSE_LEN = "rollout/response_len"
ROLLOUT_STOP_RATE = "rollout/stop_rate"
ROLLOUT_EQUAL_GROUP_FRAC = "rollout/equal_group_frac"  # groups whose rewards are all equal
TRAIN_LOSS = "train/loss"
TRAIN_PG_LOSS = "train/pg_loss"
TRAIN_KL = "train/kl"
TRAIN_CLIP_FRAC = "train/clip_frac"
TRAIN_RATIO = "train/ratio_mean"
TRAIN_GRAD_NORM = "train/grad_norm"
TRAIN_LR = "train/lr"
TRAIN_SAMPLES = "train/samples_used"
TRAIN_UPDATES = "train/updates"  # optimizer steps of this RL step (epochs x mini-batches)

# alloc/ — steps 1..T, from the allocator that split the step (gvm, gvm_reuse, gvm_oracle: the first seven;
# dapo: the next three)
ALLOC_N_MIN = "alloc/n_min"  # fewest rollouts any prompt of the step got
ALLOC_N_MAX = "alloc/n_max"
ALLOC_ZERO_PROMPTS = "alloc/zero_prompts"  # prompts given no rollouts
ALLOC_P_MEAN = "alloc/p_mean"  # mean probe acceptance rate p̂ over the step's prompts
ALLOC_G_MEAN = "alloc/g_mean"  # mean Ĝ over prompts with an accepted probe sample (0 if none)
ALLOC_GRAD_TIED = "alloc/grad_tied"  # 1: Ĝ's parameters include a tied embedding/output matrix (§3)
ALLOC_PROBED_PROMPTS = "alloc/probed_prompts"  # prompts probed at this step (gvm: all; gvm_reuse: stale)
ALLOC_GEN_BATCHES = "alloc/gen_batches"  # dapo: generation rounds the step took
ALLOC_SHORT_PROMPTS = "alloc/short_prompts"  # dapo: groups the step lacked when the cap was hit
ALLOC_DISCARDED_ROLLOUTS = "alloc/discarded_rollouts"  # dapo: rollouts of dropped groups at this step
# gvm_oracle: its probe at this step, NOT in budget/ (not budget-honest: an upper bound, for studies only)
ALLOC_ORACLE_ROLLOUTS = "alloc/oracle_rollouts"
ALLOC_ORACLE_TOKENS = "alloc/oracle_tokens"
# The step's training budget as the loop planned it (allocation.budget): rollouts always; the token
# budget and the tokens-per-rollout estimate that turned it into rollouts in `tokens` mode only.
ALLOC_BUDGET_ROLLOUTS = "alloc/budget_rollouts"
ALLOC_BUDGET_TOKENS = "alloc/budget_tokens"
ALLOC_TOKENS_PER_ROLLOUT = "alloc/tokens_per_rollout"

# reinforce_ada: its rounds at this step (docs/method.md §8)
ALLOC_ADA_ROUNDS = "alloc/reinforce_ada/rounds"  # sampling rounds the step took
ALLOC_ADA_POOL_ROLLOUTS = "alloc/reinforce_ada/pool_rollouts"  # all it drew (<= alloc/budget_rollouts)
ALLOC_ADA_DROPPED_ROLLOUTS = "alloc/reinforce_ada/dropped_rollouts"  # drawn beyond the training groups
ALLOC_ADA_UNSPENT = "alloc/reinforce_ada/unspent"  # the step's budget left undrawn (not carried over)
ALLOC_ADA_EXITED_PROMPTS = "alloc/reinforce_ada/exited_prompts"  # prompts that met the exit rule
ALLOC_ADA_EMPTY_PROMPTS = "alloc/reinforce_ada/empty_prompts"  # prompts the budget left without a sample
ALLOC_ADA_FIRST_ROUND_REWARD = "alloc/reinforce_ada/first_round_reward"  # round 1's mean: before selection

# greso (also alloc/n_min, alloc/n_max, alloc/zero_prompts): alloc/greso/...
ALLOC_GRESO_SKIPPED = "alloc/greso/skipped"  # prompts skipped before rollout (given only min_per_prompt)
ALLOC_GRESO_SKIPPED_EASY = "alloc/greso/skipped_easy"  # ... of them on an all-accepted streak
ALLOC_GRESO_SKIPPED_HARD = "alloc/greso/skipped_hard"  # ... of them on an all-rejected streak
ALLOC_GRESO_KEPT_BACK = "alloc/greso/kept_back"  # drawn to be skipped, kept so the budget could be spent
ALLOC_GRESO_STREAK_PROMPTS = "alloc/greso/streak_prompts"  # prompts on a zero-variance streak (may skip)
ALLOC_GRESO_MEAN_STREAK = "alloc/greso/mean_streak"  # mean streak z over the step's prompts
ALLOC_GRESO_P_EASY = "alloc/greso/p_easy"  # exploration probability of all-accepted streaks at this step
ALLOC_GRESO_P_HARD = "alloc/greso/p_hard"  # ... and of all-rejected ones

# knapsack: its plan under the step's budget, from the carried estimates (docs/method.md §8, knapsack)
KNAPSACK_VALUE = "alloc/knapsack/value"  # Σ Value(n_i, p̂_i) of the counts
KNAPSACK_PLANNED_ROLLOUTS = "alloc/knapsack/planned_rollouts"  # Σ n_i
KNAPSACK_PLANNED_TOKENS = "alloc/knapsack/planned_tokens"  # Σ n_i L̂_i, expected response tokens
KNAPSACK_FALLBACK_ROLLOUTS = "alloc/knapsack/fallback_rollouts"  # placed by the fallback, not by value
KNAPSACK_EFFECTIVE_PROMPTS = "alloc/knapsack/effective_prompts"  # prompts with 0 < p̂ < 1 (a value)
KNAPSACK_UNSEEN_PROMPTS = "alloc/knapsack/unseen_prompts"  # prompts with no history: the prior p̂
KNAPSACK_FLOOR_DROPPED = "alloc/knapsack/floor_dropped"  # 1: the floor did not fit the budget, was 0

# variance (also alloc/n_min, alloc/n_max, alloc/zero_prompts): alloc/variance/...
ALLOC_VARIANCE_EXPECTED = "alloc/variance/expected_informative"  # sum_i P(group i informative) as split
ALLOC_VARIANCE_UNIFORM = "alloc/variance/uniform_informative"  # the same for the even split of the budget
ALLOC_VARIANCE_P_MEAN = "alloc/variance/p_mean"  # mean posterior pass rate a / (a + b) of the step's prompts
ALLOC_VARIANCE_SEEN = "alloc/variance/seen_prompts"  # prompts with evidence from earlier visits
ALLOC_VARIANCE_EVIDENCE = "alloc/variance/evidence_mean"  # mean a + b - 2 prior: (decayed) rollouts seen

# probe_trains: the probe the step trains on, and the rest of N split by GVM (docs/method.md §8)
PROBE_TRAINS_PROBE_ROLLOUTS = "alloc/probe_trains/probe_rollouts"  # in budget/ as training rollouts
PROBE_TRAINS_PROBE_TOKENS = "alloc/probe_trains/probe_tokens"
PROBE_TRAINS_SPLIT_ROLLOUTS = "alloc/probe_trains/split_rollouts"  # N - probe, split by the GVM rule
PROBE_TRAINS_CLAMPED = "alloc/probe_trains/clamped"  # 1: m x n_probe > N, the whole N went to the probe

# budget/ — cumulative, also carried on every row as rollouts_consumed / tokens_generated.
# rollouts = probe_rollouts + train_rollouts; train rollouts include those dapo generated and dropped.
BUDGET_ROLLOUTS = "budget/rollouts"  # probe rollouts included (docs/conventions.md)
BUDGET_TOKENS = "budget/tokens"  # probe tokens included
BUDGET_PROBE_ROLLOUTS = "budget/probe_rollouts"  # the probe's share of budget/rollouts
BUDGET_TRAIN_ROLLOUTS = "budget/train_rollouts"  # rollouts generated for training (kept or dropped)
BUDGET_ACCEPTED = "budget/accepted"  # training rollouts with reward 1
BUDGET_WASTED = "budget/wasted"  # training rollouts with zero advantage, filtered out, or dropped
BUDGET_UPDATES = "budget/updates"  # optimizer steps so far (an x-axis of the dashboard and export)
# ... and the same for this step alone
STEP_ROLLOUTS = "budget/step_rollouts"  # probe + training rollouts of this step
STEP_PROBE_ROLLOUTS = "budget/step_probe_rollouts"
STEP_ACCEPTED = "budget/step_accepted"
STEP_WASTED = "budget/step_wasted"

# time/ — seconds spent in each stage of one step
TIME_GENERATE = "time/generate_s"  # the step's rollouts (dapo: all its rounds)
TIME_ALLOCATE = "time/allocate_s"  # the allocator's probe (gvm); recorded only when it generated
TIME_UPDATE = "time/update_s"
TIME_SYNC = "time/sync_s"
TIME_EVAL = "time/eval_s"
TIME_STEP = "time/step_s"

# warm_start/ — recorded once, at step 0
WARM_START_LOSS = "warm_start/final_loss"
WARM_START_SECONDS = "warm_start/seconds"

# Summary keys printed by `dibs run` before/after RL.
HEADLINE = (EVAL_ACCURACY, EVAL_MEAN_AT_K, EVAL_FORMAT_RATE)
