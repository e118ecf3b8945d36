"""experiments/gvm-smoke.yaml with gvm_oracle through the inline loop, shrunk to two steps (~15 s): the
oracle's probe is recorded as alloc/oracle_rollouts and charged to no budget/ metric."""

import pytest

from dibs.platform.core import metrics as M
from dibs.platform.core.config import load_config
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress

pytestmark = pytest.mark.integration

STEPS, N_ORACLE = 2, 4


def test_oracle_probe_is_recorded_but_not_charged(tmp_path):
    cfg = load_config(
        "experiments/gvm-smoke.yaml",
        [
            f"model.cache_dir={tmp_path}/models",
            f"runtime.output_dir={tmp_path}/runs",
            "allocation.allocator=gvm_oracle",
            f"allocation.n_oracle={N_ORACLE}",
            f"train.steps={STEPS}",
            "warm_start.steps=2",
            "task.train_size=16",
            "task.test_size=8",
            "task.sft_size=64",
            "eval.every=2",
            "eval.k=1",
            "runtime.checkpoint_every=0",
        ],
    )
    rows = MemoryRecorder()
    summary = train(cfg, rows, NullProgress(), checkpoint_dir=str(tmp_path / "ckpt"))
    m, n = cfg.train.prompts_per_step, cfg.allocation.n_per_prompt  # 8 prompts x 4 = 32 a step
    for step in range(1, STEPS + 1):
        assert rows.at(step, M.ALLOC_ORACLE_ROLLOUTS)[0] == m * N_ORACLE  # 8 x 4 = 32 probe rollouts
        assert rows.at(step, M.BUDGET_PROBE_ROLLOUTS)[0] == 0 == rows.at(step, M.STEP_PROBE_ROLLOUTS)[0]
        assert rows.at(step, M.BUDGET_ROLLOUTS)[0] == step * m * n
        assert rows.at(step, M.BUDGET_TRAIN_ROLLOUTS)[0] == step * m * n
        assert rows.at(step, M.ALLOC_N_MIN)[0] >= 1
        telemetry = rows.prompts[step]
        assert sum(r.n_alloc for r in telemetry) == m * n and len(telemetry) == m
        assert all(r.probed for r in telemetry)
    assert summary["rollouts_consumed"] == STEPS * m * n  # 64: the training rollouts alone
