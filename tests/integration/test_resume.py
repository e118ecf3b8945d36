"""Checkpoints hold everything the loop needs: a run that crashes after step 3 and resumes from its
step-2 checkpoint writes exactly the rows of a run that never stopped (gvm_reuse's estimates, the
optimizer, the prompt sampler, the KL reference and the budget all come back)."""

import pytest
from crashing import Crash, CrashAfter

from dibs.platform.core import metrics as M
from dibs.platform.core.config import load_config
from dibs.platform.learn import checkpoint
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress

pytestmark = pytest.mark.integration


def config(tmp):
    return load_config(
        "experiments/smoke.yaml",
        [
            f"model.cache_dir={tmp}/models",
            "train.steps=4",
            "runtime.checkpoint_every=2",
            "train.kl_coef=0.01",
            "allocation.allocator=gvm_reuse",
            "allocation.n_probe=2",
            "allocation.reuse_probe_every=2",
            "task.train_size=16",
            "warm_start.reuse=true",
        ],
    )


def comparable(rec):
    """Every row but timings (they differ between any two runs) and the warm start's loss (the second
    run takes the first one's cached warm start, warm_start.reuse, and records NaN)."""
    return {
        key: (round(v, 10), r, t)
        for key, (v, r, t) in rec.rows.items()
        if not key[1].startswith("time/") and key[1] not in (M.WARM_START_SECONDS, M.WARM_START_LOSS)
    }


def test_resume_continues_exactly(tmp_path):
    cfg = config(tmp_path)
    straight = MemoryRecorder()
    summary = train(cfg, straight, NullProgress(), checkpoint_dir=str(tmp_path / "a"))

    crashed = MemoryRecorder()
    with pytest.raises(Crash):
        train(cfg, crashed, CrashAfter(3), checkpoint_dir=str(tmp_path / "b"))
    latest = checkpoint.latest(tmp_path / "b")
    assert latest == str(tmp_path / "b" / "step-2")
    assert max(step for step, _ in crashed.rows) == 3  # step 3 was recorded, then lost with the process
    resumed = train(cfg, crashed, NullProgress(), checkpoint_dir=str(tmp_path / "b"), resume_from=latest)

    assert comparable(crashed) == comparable(straight)
    assert crashed.prompts == straight.prompts

    def evals(d: dict) -> dict:
        return {k: v for k, v in d.items() if k.startswith("eval/")}

    assert evals(resumed["final"]) == evals(summary["final"]) and evals(resumed["step0"]) == evals(
        summary["step0"]
    )
    assert resumed["rollouts_consumed"] == summary["rollouts_consumed"]
    assert [s for s, _ in crashed.checkpoints] == [2, 4]


def test_latest_skips_incomplete_checkpoints(tmp_path):
    (tmp_path / "step-6").mkdir()  # weights only, no trainer state: not resumable
    (tmp_path / "step-6" / "config.json").write_text("{}")
    (tmp_path / ".step-8.tmp").mkdir()  # a save that was killed midway
    assert checkpoint.latest(tmp_path) is None
    for name in ("step-4", "step-10"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / checkpoint.LOOP_STATE).write_bytes(b"")
    assert checkpoint.latest(tmp_path) == str(tmp_path / "step-10")
