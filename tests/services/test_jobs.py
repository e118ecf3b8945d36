"""`dibs submit` / `dibs jobs` against a real local Ray head (a run, a killed-and-retried run, a sweep,
a bad YAML): a head on loopback with its dashboard (the Jobs API), started with this venv's `ray` and a
private temp dir; the tests stop exactly the processes they started (that temp dir, or their own
submission ids in a command line)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_cluster import free_port, new_temp_dir, ours, ray_env, start_node, stop_ours

from dibs.platform.core import metrics as M
from dibs.platform.store import open_store
from dibs.platform.store.store import ResultsStore

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
# The smoke pipeline, smaller: a job's whole run in well under a minute on a 2-core machine.
SMOKE = ["warm_start.steps=20", "train.steps=3", "eval.every=3", "eval.k=1", "runtime.num_threads=1"]


@pytest.fixture(scope="module")
def head():
    temp_dir, port, dash = new_temp_dir(), free_port(), free_port()
    try:
        start_node(
            [
                "--head",
                "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1",
                f"--port={port}",
                f"--dashboard-port={dash}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--temp-dir={temp_dir}",
                "--num-cpus=2",
            ]
        )
        yield f"http://127.0.0.1:{dash}", temp_dir
    finally:
        stop_ours(temp_dir)  # the jobs' entrypoints too: they run in the head's working_dir copies


def dibs(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dibs.platform.cli", *args],
        cwd=ROOT,
        env=ray_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def jobs_json(address: str) -> list[dict]:
    out = dibs("jobs", "list", "--json", "--address", address, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def training_steps(url: str, run_id: str) -> list[int]:
    return sorted(
        m["step"] for m in open_store(url).get_run(run_id)["metrics"] if m["name"] == M.ROLLOUT_REWARD
    )


def test_bad_yaml_is_rejected_before_upload(head, tmp_path):
    address, _ = head
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: -1}\n")
    before = len(jobs_json(address))
    out = dibs("submit", str(bad), "--address", address, "--db", f"sqlite:///{tmp_path}/dibs.db", timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("dibs: error:") and len(out.stderr.splitlines()) == 1
    assert "train.steps" in out.stderr
    assert len(jobs_json(address)) == before  # nothing reached the cluster


def test_submit_runs_to_succeeded_and_logs_follow(head, tmp_path):
    address, _ = head
    url = f"sqlite:///{tmp_path}/dibs.db"
    out = dibs(
        "submit",
        "experiments/smoke.yaml",
        "--address",
        address,
        "--db",
        url,
        "--output-dir",
        str(tmp_path / "runs"),
        *sets(SMOKE),
    )
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.split()[1].rstrip(":")
    logs = dibs("jobs", "logs", run_id, "--follow", "--address", address)  # returns when the job ends
    assert f"run {run_id}: starting smoke from the start" in logs.stdout, logs.stdout[-2000:]
    assert dibs("jobs", "status", run_id, "--address", address).stdout.split() == [f"{run_id}:", "SUCCEEDED"]
    row = next(j for j in jobs_json(address) if j["submission_id"] == run_id)
    assert row["dibs_id"] == run_id and row["kind"] == "run" and f"resume {run_id}" in row["entrypoint"]
    assert row["start_time"] and row["end_time"]
    assert open_store(url).get_run(run_id)["status"] == "finished"
    assert training_steps(url, run_id) == [1, 2, 3]


def test_killed_job_is_retried_from_its_checkpoint(head, tmp_path):
    address, temp_dir = head
    url = f"sqlite:///{tmp_path}/dibs.db"
    log = tmp_path / "submit.log"
    steps = [*SMOKE, "train.steps=5", "runtime.checkpoint_every=2"]
    with log.open("w") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dibs.platform.cli",
                "submit",
                "experiments/smoke.yaml",
                "--address",
                address,
                "--db",
                url,
                "--output-dir",
                str(tmp_path / "runs"),
                "--max-retries",
                "1",
                *sets(steps),
            ],
            cwd=ROOT,
            env=ray_env(),
            stdout=f,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        run_id = _wait_for(lambda: _submitted_id(log), 120)
        _wait_for(lambda: open_store(url).checkpoints(run_id), 400)
        # Kill the job's driver (the first attempt's `dibs resume`): Ray marks the job FAILED.
        entry = {"dibs.platform.cli.job_entry", "resume", run_id}
        drivers = [p for p in ours(temp_dir) if entry <= set(p.cmdline())]
        assert drivers
        for p in drivers:
            p.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=500) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert f"resubmitting as {run_id}-retry1" in text
    assert f"run {run_id}: resuming smoke from step " in text  # the retry resumed, not restarted
    statuses = {j["submission_id"]: j["status"] for j in jobs_json(address) if j["dibs_id"] == run_id}
    assert statuses == {run_id: "FAILED", f"{run_id}-retry1": "SUCCEEDED"}
    assert open_store(url).get_run(run_id)["status"] == "finished"
    assert training_steps(url, run_id) == [1, 2, 3, 4, 5]  # each step once


@pytest.mark.skipif(
    not hasattr(ResultsStore, "create_sweep"), reason="the store's sweep tables are not merged yet"
)
def test_sweep_submitted_finishes_with_its_trials(head, tmp_path):
    address, _ = head
    url = f"sqlite:///{tmp_path}/dibs.db"
    sweep = tmp_path / "sweep.yaml"
    # values as the YAML they are on the command line: a sweep file's numbers are numbers, not strings
    fixed = {k: json.loads(v) for k, v in (s.split("=") for s in SMOKE)} | {
        "runtime.output_dir": str(tmp_path / "runs")
    }
    sweep.write_text(
        json.dumps(
            {
                "name": "jobs-sweep",
                "base": str(ROOT / "experiments/smoke.yaml"),
                "fixed": fixed,
                "space": {"allocation.n_per_prompt": {"choice": [4]}},
                "search": {
                    "algorithm": "random",
                    "num_samples": 1,
                    "max_concurrent": 1,
                    "seed": 0,
                    "metric": "eval/accuracy",
                    "mode": "max",
                },
                "scheduler": "none",
                "repeats": 1,
            }
        )
    )
    out = dibs(
        "submit", str(sweep), "--address", address, "--db", url, "--output-dir", str(tmp_path), "--wait"
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    sweep_id = out.stdout.split()[1].rstrip(":")
    store = open_store(url)
    trials = store.trials(sweep_id)
    assert len(trials) == 1 and trials[0]["status"] == "finished"
    run = store.get_run(f"{trials[0]['id']}-s0")  # a trial's runs have deterministic ids (sweep.py)
    assert run["status"] == "finished" and training_steps(url, run["id"]) == [1, 2, 3]


def _submitted_id(log: Path) -> str | None:
    for line in log.read_text().splitlines():
        if ": submitted as job " in line:
            return line.split()[1].rstrip(":")
    return None


def _wait_for(probe, timeout: float):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := probe():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s")
