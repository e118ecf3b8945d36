"""experiments/smoke.yaml with `allocation.allocator=reinforce_ada` through the inline loop, shrunk to a few
steps, under RAFT++ and GRPO: every step draws at most N = 8 x 4 rollouts, budget/rollouts is the sum of
the steps' rollouts and of the prompts' rows, and a run that crashes after step 3 and resumes from its
step-2 checkpoint writes the rows of the run that never stopped. The tiny model solves nothing, so no
prompt exits and the pools never outgrow n: the exits and the dropped rollouts are tested on a scripted
engine (tests/unit/test_reinforce_ada.py)."""

import dataclasses

import pytest
from crashing import Crash, CrashAfter

from dibs.platform.core import metrics as M
from dibs.platform.core.config import load_config
from dibs.platform.learn import checkpoint
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress

pytestmark = pytest.mark.integration

STEPS = 3


def config(tmp, algorithm, steps=STEPS, checkpoint_every=0):
    return load_config(
        "experiments/smoke.yaml",
        [
            f"model.cache_dir={tmp}/models",
            f"runtime.output_dir={tmp}/runs",
            f"algorithm={algorithm}",
            "allocation.allocator=reinforce_ada",
            "allocation.ada_round_size=2",  # n = 4: rounds of 2 leave room for a second round
            "allocation.ada_max_rounds=3",
            "rollout.max_new_tokens=16",
            "eval.max_new_tokens=16",
            f"train.steps={steps}",
            "warm_start.steps=2",
            "warm_start.reuse=true",
            "task.train_size=16",
            "task.test_size=8",
            "task.sft_size=64",
            "eval.every=2",
            "eval.k=1",
            f"runtime.checkpoint_every={checkpoint_every}",
        ],
    )


def check_budget_rows(rows, cfg, steps):
    m, n = cfg.train.prompts_per_step, cfg.allocation.n_per_prompt
    total = 0
    for step in range(1, steps + 1):
        drawn = rows.at(step, M.STEP_ROLLOUTS)[0]
        assert drawn == rows.at(step, M.ALLOC_ADA_POOL_ROLLOUTS)[0] <= m * n
        assert rows.at(step, M.ALLOC_ADA_UNSPENT)[0] == m * n - drawn
        assert rows.at(step, M.ALLOC_BUDGET_ROLLOUTS)[0] == m * n
        assert 1 <= rows.at(step, M.ALLOC_ADA_ROUNDS)[0] <= 3
        assert rows.at(step, M.STEP_PROBE_ROLLOUTS)[0] == 0
        total += drawn
        assert rows.at(step, M.BUDGET_ROLLOUTS)[0] == total == rows.at(step, M.BUDGET_TRAIN_ROLLOUTS)[0]
        assert rows.at(step, M.BUDGET_ROLLOUTS)[1] == total  # rollouts_consumed on the row
        telemetry = rows.prompts[step]
        assert len(telemetry) == m and sum(r.n_alloc for r in telemetry) == drawn  # each row: its pool
        trained = rows.at(step, M.TRAIN_SAMPLES)[0]
        assert trained == drawn - rows.at(step, M.ALLOC_ADA_DROPPED_ROLLOUTS)[0] <= m * n
    return total


def test_raftpp_budget_rows(tmp_path):
    cfg = config(tmp_path, "raftpp")
    rows = MemoryRecorder()
    summary = train(cfg, rows, NullProgress(), checkpoint_dir=str(tmp_path / "ckpt"))
    assert summary["rollouts_consumed"] == check_budget_rows(rows, cfg, STEPS)


def comparable(rec):
    """Every row but timings and the warm start's (the second run reuses the first one's warm start)."""
    return {
        key: (round(v, 10), r, t)
        for key, (v, r, t) in rec.rows.items()
        if not key[1].startswith("time/") and key[1] not in (M.WARM_START_SECONDS, M.WARM_START_LOSS)
    }


def prompt_rows(rec):
    """The per-prompt rows as tuples, NaN as None (NaN never equals itself)."""
    return {
        step: [tuple(None if v != v else v for v in dataclasses.astuple(r)) for r in rows]
        for step, rows in rec.prompts.items()
    }


def test_grpo_budget_rows_and_resume(tmp_path):
    cfg = config(tmp_path, "grpo", steps=3, checkpoint_every=2)
    straight = MemoryRecorder()
    summary = train(cfg, straight, NullProgress(), checkpoint_dir=str(tmp_path / "a"))
    assert summary["rollouts_consumed"] == check_budget_rows(straight, cfg, 3)

    crashed = MemoryRecorder()
    with pytest.raises(Crash):
        train(cfg, crashed, CrashAfter(3), checkpoint_dir=str(tmp_path / "b"))
    latest = checkpoint.latest(tmp_path / "b")
    assert latest == str(tmp_path / "b" / "step-2")
    resumed = train(cfg, crashed, NullProgress(), checkpoint_dir=str(tmp_path / "b"), resume_from=latest)
    assert comparable(crashed) == comparable(straight)
    assert prompt_rows(crashed) == prompt_rows(straight)
    assert resumed["rollouts_consumed"] == summary["rollouts_consumed"]
