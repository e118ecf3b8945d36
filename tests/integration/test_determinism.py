"""Same seed on the same machine -> identical metrics (style.md habit 10), through the inline executor."""

import pytest

from dibs.platform.config import load_config
from dibs.platform.loop import NullProgress, train

pytestmark = pytest.mark.integration


class Rows:
    def __init__(self):
        self.rows = {}

    def record(self, step, values, *, rollouts_consumed, tokens_generated, wall_seconds):
        for k, v in values.items():
            if not k.startswith("time/") and k != "warm_start/seconds":  # wall-clock readings differ
                self.rows[(step, k)] = (v, rollouts_consumed, tokens_generated)

    def checkpoint(self, step, path):
        pass


def test_same_seed_same_metrics(tmp_path):
    cfg = load_config("experiments/smoke.yaml", [f"model.cache_dir={tmp_path}/models", "train.steps=3",
                                                  "warm_start.steps=10", "eval.every=3"])
    a, b = Rows(), Rows()
    train(cfg, a, NullProgress(), checkpoint_dir=str(tmp_path / "a"))
    train(cfg, b, NullProgress(), checkpoint_dir=str(tmp_path / "b"))
    assert a.rows.keys() == b.rows.keys() and len(a.rows) > 20
    assert a.rows == b.rows
    # and a different seed gives a different run
    c = Rows()
    train(cfg.model_copy(update={"seed": 1}), c, NullProgress(), checkpoint_dir=str(tmp_path / "c"))
    assert any(c.rows.get(k) != v for k, v in a.rows.items())
