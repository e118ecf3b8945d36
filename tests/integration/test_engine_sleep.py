"""The loop frees the rollout engine's device memory for the update: it puts the engine to sleep
before each update and wakes it before the new weights arrive (vLLM on a shared GPU; a no-op for the
transformers engine). Checked on the order of calls the engine sees."""

import pytest

from dibs.platform.core.config import load_config
from dibs.platform.runtime.loop import LocalRuntime, train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress

pytestmark = pytest.mark.integration


class Recording:
    """An engine that logs which of its methods the loop calls, in order."""

    def __init__(self, engine, log):
        self.engine, self.log = engine, log

    def generate(self, *args, **kwargs):
        self.log.append("generate")
        return self.engine.generate(*args, **kwargs)

    def sleep(self):
        self.log.append("sleep")

    def wake_up(self):
        self.log.append("wake_up")

    def load_weights(self, state_dict):
        self.log.append("load_weights")
        self.engine.load_weights(state_dict)


class RecordingRuntime(LocalRuntime):
    def __init__(self):
        self.log = []

    def engine(self, cfg, policy, tokenizer):
        return Recording(super().engine(cfg, policy, tokenizer), self.log)


def test_engine_sleeps_through_each_update_and_wakes_before_the_weights(tmp_path):
    cfg = load_config(
        "experiments/smoke.yaml",
        [
            f"model.cache_dir={tmp_path}/models",
            "train.steps=2",
            "eval.every=100",
            "eval.k=1",
            "task.test_size=4",
        ],
    )
    runtime = RecordingRuntime()
    train(cfg, MemoryRecorder(), NullProgress(), checkpoint_dir=str(tmp_path / "ckpt"), runtime=runtime)
    calls = [c for c in runtime.log if c != "generate"]
    assert calls == ["sleep", "wake_up", "load_weights"] * 2
    # Between one step's wake-up and the next sleep the engine generates (eval at the end included).
    assert runtime.log[-1] == "generate" and runtime.log.count("generate") >= 2 + 2 * 2
