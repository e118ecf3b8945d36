"""SIGTERM (`dibs jobs stop`, a scheduler's timeout, `kill`) stops a run cleanly: its row is 'stopped' with
its lease released and its checkpoints kept, the driver exits 143 with one line, and `dibs resume` continues
it to the end with each step recorded once (SIGINT takes the same path: tests/unit/test_lease.py)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from dibs.platform.cli.main import main
from dibs.platform.core import metrics as M
from dibs.platform.learn import checkpoint
from dibs.platform.store import open_store

pytestmark = pytest.mark.integration

STEPS = 3
SMALL = [
    "warm_start.steps=2",
    "task.sft_size=64",
    "task.train_size=32",
    "task.test_size=8",
    "eval.every=100",
    "eval.k=1",
]  # a run of seconds: the evaluation and the warm start are most of the smoke run


def test_sigterm_stops_the_run_and_resume_finishes_it(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/dibs.db"
    args = [
        "run",
        "experiments/smoke.yaml",
        "--executor",
        "inline",
        "--db",
        url,
        "--name",
        "signalled",
        "--set",
        f"model.cache_dir={tmp_path}/models",
        "--set",
        f"runtime.output_dir={tmp_path}/runs",
        "--set",
        f"train.steps={STEPS}",
        "--set",
        "runtime.checkpoint_every=1",
    ]
    args += [arg for item in SMALL for arg in ("--set", item)]
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dibs.platform.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = proc.stdout.readline().split()[1].rstrip(":")
        store = open_store(url)
        assert store.lease(run_id)["owner"].split(":")[1] == str(
            proc.pid
        )  # host:pid:token, from the first row
        deadline = time.time() + 600
        while not store.checkpoints(run_id):
            assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    errors = [line for line in err.splitlines() if line.startswith("dibs: error: ")]
    assert errors == [
        (
            f"dibs: error: run {run_id} stopped (SIGTERM); its rows and "
            f"checkpoints so far are in the store (dibs resume {run_id})"
        )
    ]
    assert "Traceback" not in err
    run = store.get_run(run_id)
    assert run["status"] == "stopped" and run["finished"] is not None
    lease = store.lease(run_id)
    assert (lease["owner"], lease["lease_expires"]) == (None, None)
    kept = [step for step, path in store.checkpoints(run_id) if checkpoint.is_complete(path)]
    assert kept and max(kept) < STEPS, "the run should stop after a checkpoint and before its last step"

    assert main(["resume", "signalled", "--db", url]) == 0
    assert f"run {run_id}: resuming signalled from step {max(kept)} (" in capsys.readouterr().out
    run = store.get_run(run_id)
    assert run["status"] == "finished" and store.lease(run_id)["owner"] is None
    steps = [m["step"] for m in run["metrics"] if m["name"] == M.BUDGET_ROLLOUTS]
    assert steps == list(range(1, STEPS + 1))  # each step once
