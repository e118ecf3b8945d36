"""knapsack and probe_trains through the inline loop (docs/method.md §8) on experiments/smoke.yaml, shrunk
to two steps of 8 prompts x 4 rollouts over 8 training prompts (so step 2 revisits step 1's prompts),
with GRPO and RAFT++ (~15 s a run): the budget rows each allocator promises. knapsack plans within the
step's rollouts or tokens and carries its estimates to the next epoch; probe_trains spends exactly N a
step, its probe included and charged once, as training rollouts."""

import pytest

from dibs.platform.core import metrics as M
from dibs.platform.core.config import load_config
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress

pytestmark = pytest.mark.integration

STEP_TOKENS = 300


def run(tmp_path, allocator, algorithm, *extra):
    cfg = load_config(
        "experiments/smoke.yaml",
        [
            f"model.cache_dir={tmp_path}/models",
            f"runtime.output_dir={tmp_path}/runs",
            f"algorithm={algorithm}",
            f"allocation.allocator={allocator}",
            "train.steps=2",
            "warm_start.steps=2",
            "task.train_size=8",
            "task.test_size=4",
            "task.sft_size=64",
            "rollout.max_new_tokens=24",
            "eval.every=2",
            "eval.k=1",
            "runtime.checkpoint_every=0",
            *extra,
        ],
    )
    rows = MemoryRecorder()
    train(cfg, rows, NullProgress(), checkpoint_dir=str(tmp_path / "ckpt"))
    return cfg, rows


def test_knapsack_spends_the_steps_rollouts_and_carries_its_estimates(tmp_path):
    cfg, rows = run(tmp_path, "knapsack", "grpo")
    n_step = cfg.train.prompts_per_step * cfg.allocation.n_per_prompt  # N = 32
    for step in (1, 2):
        assert rows.at(step, M.KNAPSACK_PLANNED_ROLLOUTS)[0] == n_step == rows.at(step, M.STEP_ROLLOUTS)[0]
        assert rows.at(step, M.BUDGET_PROBE_ROLLOUTS)[0] == 0
        assert all(r.n_alloc >= 2 for r in rows.prompts[step])  # knapsack_min
    assert rows.at(1, M.KNAPSACK_UNSEEN_PROMPTS)[0] == 8  # the first visit of every prompt: the prior
    assert rows.at(2, M.KNAPSACK_UNSEEN_PROMPTS)[0] == 0  # the second epoch: estimates carried over
    assert rows.at(2, M.BUDGET_ROLLOUTS)[0] == 2 * n_step


def test_knapsack_plans_within_the_token_budget(tmp_path):
    tokens = ["allocation.budget=tokens", f"allocation.step_tokens={STEP_TOKENS}"]
    _, rows = run(tmp_path, "knapsack", "raftpp", *tokens)
    for step in (1, 2):
        assert rows.at(step, M.ALLOC_BUDGET_TOKENS)[0] == STEP_TOKENS
        assert 0 < rows.at(step, M.KNAPSACK_PLANNED_TOKENS)[0] <= STEP_TOKENS
        assert rows.at(step, M.STEP_ROLLOUTS)[0] == rows.at(step, M.KNAPSACK_PLANNED_ROLLOUTS)[0]


@pytest.mark.parametrize("algorithm", ["grpo", "raftpp"])
def test_probe_trains_spends_exactly_n_a_step(tmp_path, algorithm):
    cfg, rows = run(tmp_path, "probe_trains", algorithm, "allocation.n_probe=2")
    m, n_step = cfg.train.prompts_per_step, cfg.train.prompts_per_step * cfg.allocation.n_per_prompt
    for step in (1, 2):
        assert rows.at(step, M.STEP_ROLLOUTS)[0] == n_step  # 32: probe (16) + split (16)
        assert rows.at(step, M.PROBE_TRAINS_PROBE_ROLLOUTS)[0] == m * 2
        assert rows.at(step, M.PROBE_TRAINS_SPLIT_ROLLOUTS)[0] == n_step - m * 2
        assert rows.at(step, M.STEP_PROBE_ROLLOUTS)[0] == 0 == rows.at(step, M.BUDGET_PROBE_ROLLOUTS)[0]
        telemetry = rows.prompts[step]
        assert sum(r.n_alloc for r in telemetry) == n_step and all(r.n_alloc >= 2 for r in telemetry)
        assert (step, M.TIME_ALLOCATE) in rows.rows  # the probe's time is recorded
    assert rows.at(2, M.BUDGET_ROLLOUTS)[0] == 2 * n_step == rows.at(2, M.BUDGET_TRAIN_ROLLOUTS)[0]
