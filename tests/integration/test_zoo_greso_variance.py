"""greso and variance in the real loop (docs/method.md §8): tiny smoke runs, GRPO and RAFT++, whose steps
spend exactly the planned budget N, and whose allocator state (greso's streaks, variance's posteriors)
comes back from a checkpoint so that a resumed run writes the rows of the run that never stopped."""

import json
from dataclasses import astuple

import pytest

from dibs.platform.core import metrics as M
from dibs.platform.core.config import load_config
from dibs.platform.learn import checkpoint
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo-models")  # one warm start for the module (warm_start.reuse)


def config(cache, *overrides):
    # 16 training prompts, 8 a step: steps 3 and 4 revisit the prompts of steps 1 and 2, so the state the
    # step-2 checkpoint carries decides them.
    return load_config(
        "experiments/smoke.yaml",
        [
            f"model.cache_dir={cache}",
            "train.steps=4",
            "runtime.checkpoint_every=2",
            "task.train_size=16",
            "task.test_size=16",
            "eval.every=4",
            "eval.k=1",
            "warm_start.steps=20",
            "warm_start.reuse=true",
            *overrides,
        ],
    )


def rows(rec: MemoryRecorder, steps) -> dict:
    """Every row of these steps but timings (they differ between any two runs)."""
    return {
        key: (round(v, 10), r, t)
        for key, (v, r, t) in rec.rows.items()
        if key[0] in steps and not key[1].startswith("time/")
    }


def prompt_rows(rec: MemoryRecorder, steps) -> dict:
    """Per-prompt rows as tuples, NaN (no estimate) written as None so that equal rows compare equal."""
    return {
        step: [tuple(None if v != v else v for v in astuple(row)) for row in rec.prompts[step]]
        for step in steps
    }


def run_and_resume(cfg, tmp_path):
    """The straight run, and a second run resumed from its step-2 checkpoint."""
    straight, resumed = MemoryRecorder(), MemoryRecorder()
    train(cfg, straight, NullProgress(), checkpoint_dir=str(tmp_path / "a"))
    start = checkpoint.latest(tmp_path / "a")
    assert start == str(tmp_path / "a" / "step-4")
    step2 = tmp_path / "a" / "step-2"
    train(cfg, resumed, NullProgress(), checkpoint_dir=str(tmp_path / "b"), resume_from=str(step2))
    assert rows(resumed, (3, 4)) == rows(straight, (3, 4))
    assert prompt_rows(resumed, (3, 4)) == prompt_rows(straight, (3, 4))
    return straight, json.loads((step2 / checkpoint.ALLOCATOR_STATE).read_text())


def value(rec: MemoryRecorder, step: int, name: str) -> float:
    return rec.rows[(step, name)][0]


def test_greso_grpo_spends_n_and_resumes(cache, tmp_path):
    cfg = config(cache, "algorithm=grpo", "allocation.allocator=greso")
    straight, state = run_and_resume(cfg, tmp_path)
    for step in range(1, 5):
        assert value(straight, step, M.STEP_ROLLOUTS) == 32 == value(straight, step, M.ALLOC_BUDGET_ROLLOUTS)
        assert value(straight, step, M.ALLOC_GRESO_SKIPPED) == value(straight, step, M.ALLOC_ZERO_PROMPTS)
    # Steps 1-2 meet 16 new prompts (nothing to skip); each gave 4 rollouts, so each has a streak entry.
    assert value(straight, 1, M.ALLOC_GRESO_SKIPPED) == 0 == value(straight, 2, M.ALLOC_GRESO_SKIPPED)
    assert len(state["streaks"]) == 16 and state["p_easy"] == state["p_hard"] == 0.5


def test_variance_raftpp_tokens_spends_n_and_resumes(cache, tmp_path):
    cfg = config(
        cache,
        "algorithm=raftpp",
        "allocation.allocator=variance",
        "allocation.variance_objective=positive",
        "allocation.budget=tokens",
        "allocation.step_tokens=900",
    )
    straight, state = run_and_resume(cfg, tmp_path)
    planned = [value(straight, step, M.ALLOC_BUDGET_ROLLOUTS) for step in range(1, 5)]
    # Step 1 plans against max_new_tokens (64): 900 // 64 = 14 rollouts; later steps by the mean length.
    assert planned[0] == 14
    for step in range(1, 5):
        assert value(straight, step, M.STEP_ROLLOUTS) == planned[step - 1]
    # Every visited prompt's posterior holds its rollouts: a + b = 2 (the prior) + rollouts.
    visited = {row.prompt_id: row.n_alloc for step in (1, 2) for row in straight.prompts[step] if row.n_alloc}
    assert {k: round(a + b - 2, 9) for k, (a, b) in state["posterior"].items()} == visited
