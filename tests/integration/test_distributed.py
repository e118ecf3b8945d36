"""experiments/distributed.yaml (shrunk to smoke size) through Ray Train: 2 DeepSpeed ZeRO-2 learners,
each with a rollout actor. One learner worker is SIGKILLed after the step-2 checkpoint; Ray Train
restarts the group, every rank resumes from the newest checkpoint, and the run finishes with each
metric step stored exactly once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dibs.platform.core import metrics as M
from dibs.platform.store import open_store

pytestmark = pytest.mark.integration

STEPS = 6
SMOKE = [
    "model.hidden_size=64",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.intermediate_size=128",
    "task.train_size=256",
    "task.test_size=64",
    "task.sft_size=2000",
    "warm_start.steps=40",
    "warm_start.batch_size=32",
    f"train.steps={STEPS}",
    "train.prompts_per_step=8",
    "allocation.n_per_prompt=4",
    "eval.every=3",
    "eval.k=1",
    "runtime.checkpoint_every=2",
    "runtime.max_failures=1",
]


def test_a_killed_learner_is_replaced_and_the_run_finishes(tmp_path):
    url = f"sqlite:///{tmp_path}/dibs.db"
    out = tmp_path / "runs"
    args = [
        "run",
        "experiments/distributed.yaml",
        "--db",
        url,
        "--name",
        "dist",
        "--set",
        f"model.cache_dir={tmp_path}/models",
        "--set",
        f"runtime.output_dir={out}",
    ]
    for item in SMOKE:
        args += ["--set", item]
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dibs.platform.cli", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    run_id = proc.stdout.readline().split()[1].rstrip(":")
    store = open_store(url)
    deadline = time.time() + 900
    while not any(step == 2 for step, _ in store.checkpoints(run_id)):
        assert proc.poll() is None and time.time() < deadline, (
            "no step-2 checkpoint:\n" + proc.stdout.read()[-4000:]
        )
        time.sleep(0.5)
    victim = int((out / run_id / "workers" / "rank1.pid").read_text())
    os.kill(victim, signal.SIGKILL)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-4000:]

    run = store.get_run(run_id)
    assert run["status"] == "finished"
    steps = {}
    for m in run["metrics"]:
        steps.setdefault(m["name"], []).append(m["step"])
    assert steps[M.ROLLOUT_REWARD] == list(range(1, STEPS + 1))
    assert steps[M.TRAIN_SAMPLES] == list(range(1, STEPS + 1))
    assert steps[M.EVAL_ACCURACY] == [0, 3, 6]
    rollouts = {m["step"]: m["value"] for m in run["metrics"] if m["name"] == M.BUDGET_ROLLOUTS}
    assert [rollouts[s] for s in range(1, STEPS + 1)] == [32.0 * s for s in range(1, STEPS + 1)]
    assert int((out / run_id / "workers" / "rank1.pid").read_text()) != victim  # a new worker took over
    assert [s for s, _ in store.checkpoints(run_id)][-1] == STEPS
    assert Path(store.checkpoints(run_id)[-1][1], "deepspeed").is_dir()  # partitioned optimizer state
