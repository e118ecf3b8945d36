"""Same seed on the same machine -> identical metrics (docs/conventions.md, Code style), through the inline
executor."""

import pytest

from dibs.platform.core.config import load_config
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress

pytestmark = pytest.mark.integration


def comparable(rec: MemoryRecorder) -> dict:
    """Every row but wall-clock readings, which differ between runs."""
    return {
        k: v for k, v in rec.rows.items() if not k[1].startswith("time/") and k[1] != "warm_start/seconds"
    }


def test_same_seed_same_metrics(tmp_path):
    cfg = load_config(
        "experiments/smoke.yaml",
        [f"model.cache_dir={tmp_path}/models", "train.steps=3", "warm_start.steps=10", "eval.every=3"],
    )
    a, b = MemoryRecorder(), MemoryRecorder()
    train(cfg, a, NullProgress(), checkpoint_dir=str(tmp_path / "a"))
    train(cfg, b, NullProgress(), checkpoint_dir=str(tmp_path / "b"))
    assert len(comparable(a)) > 20
    assert comparable(a) == comparable(b)
    # and a different seed gives a different run
    c = MemoryRecorder()
    train(cfg.model_copy(update={"seed": 1}), c, NullProgress(), checkpoint_dir=str(tmp_path / "c"))
    assert any(comparable(c).get(k) != v for k, v in comparable(a).items())
