"""`dibs resume`: a run whose driver is SIGKILLed after its step-2 checkpoint is refused while the dead
driver's lease is live, taken over with `--force` once that has expired, and continued under the same run
id; every metric ends up with each of its steps exactly once (docs/conventions.md)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy

from dibs.platform.cli.main import main
from dibs.platform.core import metrics as M
from dibs.platform.store import open_store

pytestmark = pytest.mark.integration

STEPS = 6


def test_resume_after_the_driver_is_killed(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/dibs.db"
    args = [
        "run",
        "experiments/smoke.yaml",
        "--executor",
        "inline",
        "--db",
        url,
        "--name",
        "killed",
        "--set",
        f"model.cache_dir={tmp_path}/models",
        "--set",
        f"runtime.output_dir={tmp_path}/runs",
        "--set",
        f"train.steps={STEPS}",
        "--set",
        "runtime.checkpoint_every=2",
        "--set",
        "eval.every=3",
    ]
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dibs.platform.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        run_id = proc.stdout.readline().split()[1].rstrip(":")
        store = open_store(url)
        deadline = time.time() + 600
        while not any(step == 2 for step, _ in store.checkpoints(run_id)):
            assert proc.poll() is None and time.time() < deadline, (
                "the run ended before its step-2 checkpoint"
            )
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert store.get_run(run_id)["status"] == "running"  # a killed driver cannot close its run
    before = {(m["name"], m["step"]) for m in store.get_run(run_id)["metrics"]}
    assert max(step for _, step in before) < STEPS

    # A killed driver cannot release its lease either: until it expires the run counts as running.
    assert main(["resume", "killed", "--db", url]) == 2
    assert capsys.readouterr().err.startswith(f"dibs: error: run {run_id} is running (owner ")
    _expire_lease(url, run_id)
    assert main(["resume", "killed", "--db", url, "--force"]) == 0  # the owner is dead: take it over
    out = capsys.readouterr().out
    assert f"run {run_id}: resuming killed from step 2 (" in out

    run = store.get_run(run_id)
    assert run["status"] == "finished"
    steps = {}
    for m in run["metrics"]:
        steps.setdefault(m["name"], []).append(m["step"])
    assert steps[M.ROLLOUT_REWARD] == list(range(1, STEPS + 1))
    assert steps[M.EVAL_ACCURACY] == [0, 3, 6]
    assert steps[M.BUDGET_ROLLOUTS] == list(range(1, STEPS + 1))
    rollouts = {m["step"]: m["rollouts_consumed"] for m in run["metrics"] if m["name"] == M.BUDGET_ROLLOUTS}
    assert [rollouts[s] for s in range(1, STEPS + 1)] == [32 * s for s in range(1, STEPS + 1)]  # 8 x 4 a step
    assert main(["resume", "killed", "--db", url]) == 2  # finished: nothing to resume


def _expire_lease(url: str, run_id: str) -> None:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("UPDATE runs SET lease_expires = '2000-01-01 00:00:00.000000' WHERE id = :id"),
            {"id": run_id},
        )
    engine.dispose()


def test_resume_unknown_run_is_one_line(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/x.db"
    open_store(url).close()  # a store without runs (resume never makes one: tests/unit/test_read_only.py)
    assert main(["resume", "nope", "--db", url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dibs: error: ") and "nope" in err and "\n" not in err
