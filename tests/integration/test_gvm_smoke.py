"""experiments/gvm-smoke.yaml through the inline loop: the probe is charged to the budget, the allocator's
stats are recorded every step, and evaluation keeps its schedule (docs/method.md §3-4,
docs/conventions.md)."""

import pytest

from dibs.platform.core import metrics as M
from dibs.platform.core.config import load_config
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gvm")
    cfg = load_config("experiments/gvm-smoke.yaml", [f"model.cache_dir={tmp}/models"])
    rows = MemoryRecorder()
    summary = train(cfg, rows, NullProgress(), checkpoint_dir=str(tmp / "ckpt"))
    return cfg, rows, summary


def test_config_is_the_smoke_run_with_gvm(run):
    cfg, _, _ = run
    smoke = load_config("experiments/smoke.yaml", [f"model.cache_dir={cfg.model.cache_dir}"])
    assert cfg.allocation.allocator == "gvm" and cfg.allocation.n_probe == 4
    assert cfg.model_dump(exclude={"name", "allocation"}) == smoke.model_dump(exclude={"name", "allocation"})


def test_budget_counts_probe_and_generated_rollouts(run):
    cfg, rows, summary = run
    probe_per_step = cfg.train.prompts_per_step * cfg.allocation.n_probe  # 8 prompts x 4 = 32
    step_budget = cfg.train.prompts_per_step * cfg.allocation.n_per_prompt  # GVM redistributes, never adds
    consumed = 0
    for step in range(1, cfg.train.steps + 1):
        consumed += probe_per_step + step_budget
        _, rollouts, tokens = rows.at(step, M.ROLLOUT_REWARD)
        assert rollouts == consumed
        assert rows.at(step, M.BUDGET_ROLLOUTS)[0] == consumed
        assert rows.at(step, M.BUDGET_PROBE_ROLLOUTS)[0] == step * probe_per_step
        assert rows.at(step, M.BUDGET_TOKENS)[0] == tokens > 0
    assert summary["rollouts_consumed"] == consumed


def test_allocator_stats_recorded_every_step(run):
    cfg, rows, _ = run
    m, n = cfg.train.prompts_per_step, cfg.allocation.n_per_prompt
    for step in range(1, cfg.train.steps + 1):
        n_min, n_max = rows.at(step, M.ALLOC_N_MIN)[0], rows.at(step, M.ALLOC_N_MAX)[0]
        assert 0 <= n_min <= n <= n_max <= m * n  # counts sum to m x n, so their mean n lies between
        assert 0 <= rows.at(step, M.ALLOC_ZERO_PROMPTS)[0] < m
        assert 0 <= rows.at(step, M.ALLOC_P_MEAN)[0] <= 1
        assert rows.at(step, M.ALLOC_G_MEAN)[0] >= 0
        assert rows.at(step, M.ALLOC_GRAD_TIED)[0] == 1.0  # the smoke model ties its embeddings
        assert rows.at(step, M.TIME_ALLOCATE)[0] > 0
        if rows.at(step, M.ALLOC_P_MEAN)[0] == 0:  # every probe failed: no signal, the uniform split
            assert n_min == n_max == n


def test_eval_rows_at_zero_and_every_k(run):
    cfg, rows, _ = run
    eval_steps = sorted(step for step, name in rows.rows if name == M.EVAL_ACCURACY)
    assert eval_steps == [0, *range(cfg.eval.every, cfg.train.steps + 1, cfg.eval.every)]  # [0, 2, 4]
    assert rows.at(0, M.EVAL_ACCURACY)[1] == 0  # step 0: nothing spent yet
    assert rows.at(2, M.EVAL_ACCURACY)[1] == rows.at(2, M.ROLLOUT_REWARD)[1]
