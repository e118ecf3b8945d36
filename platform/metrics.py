"""Metric names, defined once: the loop writes them, the store keys on them, dashboards read them.

Namespaces follow CleanRL: `train/` (the update), `rollout/` (generation and reward), `alloc/` (how a
probing allocator split the budget), `budget/` (what was spent), `time/` (wall seconds per stage),
`eval/` (held-out evaluation, step 0 and every K).
"""

# eval/ — step 0 (after the warm start, before any RL update) and every `eval.every` steps
EVAL_ACCURACY = "eval/accuracy"  # greedy, held-out
EVAL_MEAN_AT_K = "eval/mean_at_k"  # mean accuracy of k samples per problem at temperature T
EVAL_FORMAT_RATE = "eval/format_rate"  # greedy responses that end in a boxed answer and EOS
EVAL_RESPONSE_LEN = "eval/response_len"


def eval_accuracy_at(level: int) -> str:
    """Greedy held-out accuracy on problems with `level` terms."""
    return f"eval/accuracy_terms_{level}"


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

# alloc/ — steps 1..T, only for allocators that probe (gvm); uniform rows are unchanged
ALLOC_N_MIN = "alloc/n_min"  # fewest rollouts any prompt of the step got
ALLOC_N_MAX = "alloc/n_max"
ALLOC_ZERO_PROMPTS = "alloc/zero_prompts"  # prompts given no rollouts
ALLOC_P_MEAN = "alloc/p_mean"  # mean probe acceptance rate p̂ over the step's prompts
ALLOC_G_MEAN = "alloc/g_mean"  # mean Ĝ over prompts with an accepted probe sample (0 if none)
ALLOC_GRAD_TIED = "alloc/grad_tied"  # 1: Ĝ's parameters include a tied embedding/output matrix (§3)

# budget/ — cumulative, also carried on every row as rollouts_consumed / tokens_generated
BUDGET_ROLLOUTS = "budget/rollouts"  # probe rollouts included (conventions.md)
BUDGET_TOKENS = "budget/tokens"  # probe tokens included
BUDGET_PROBE_ROLLOUTS = "budget/probe_rollouts"  # the probe's share of budget/rollouts (gvm only)

# time/ — seconds spent in each stage of one step
TIME_GENERATE = "time/generate_s"
TIME_ALLOCATE = "time/allocate_s"  # the probe: generation, scoring, gradient norms (gvm only)
TIME_UPDATE = "time/update_s"
TIME_SYNC = "time/sync_s"
TIME_EVAL = "time/eval_s"
TIME_STEP = "time/step_s"

# warm_start/ — recorded once, at step 0
WARM_START_LOSS = "warm_start/final_loss"
WARM_START_SECONDS = "warm_start/seconds"

# Summary keys printed by `dibs run` before/after RL.
HEADLINE = (EVAL_ACCURACY, EVAL_MEAN_AT_K, EVAL_FORMAT_RATE)
