"""`dibs sweep` end to end on a tiny base: Tune + Optuna trials land in the store tagged with
their sweep and parameters, the best configuration comes out as a runnable YAML, and a sweep whose
driver is SIGKILLed after its first trial resumes with `--resume`: each trial exactly once, and the
Optuna study (in the same database) continues rather than starting over."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest

from dibs.platform.cli.main import main
from dibs.platform.core import metrics as M
from dibs.platform.core.config import load_config
from dibs.platform.store import open_store

pytestmark = pytest.mark.integration


def tiny_sweep(tmp_path, num_samples: int) -> str:
    (tmp_path / "sweep.yaml").write_text(
        textwrap.dedent(f"""
        name: tiny
        base: {os.path.abspath("experiments/gvm-smoke.yaml")}
        fixed:
          model.cache_dir: {tmp_path}/models
          runtime.output_dir: {tmp_path}/runs
          train.steps: 2
          eval.every: 2
          eval.k: 1
          task.test_size: 16
          warm_start.steps: 10
          warm_start.reuse: true
          runtime.checkpoint_every: 1
        space:
          allocation.alpha: {{loguniform: [1.0e-4, 1.0e-1]}}
          algorithm: {{choice: [raftpp, grpo]}}
        search: {{algorithm: optuna, num_samples: {num_samples}, seed: 0, metric: eval/accuracy, mode: max}}
        """)
    )
    return str(tmp_path / "sweep.yaml")


def test_sweep_records_trials_and_writes_the_best_config(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/dibs.db"
    assert main(["sweep", tiny_sweep(tmp_path, 2), "--db", url, "--output-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    sweep_id = out.split()[1].rstrip(":")
    assert "ready to run: dibs run " in out
    best = load_config(out.rsplit("ready to run: dibs run ", 1)[1].strip())
    assert best.train.steps == 2 and best.allocation.allocator == "gvm"

    assert main(["sweeps", "--json", "--db", url]) == 0
    [sweep] = json.loads(capsys.readouterr().out)
    assert sweep["id"] == sweep_id and sweep["objective"] == "eval/accuracy" and len(sweep["trials"]) == 2
    for trial in sweep["trials"]:
        assert trial["status"] == "finished" and set(trial["params"]) == {"allocation.alpha", "algorithm"}
        [run] = trial["runs"]
        assert run["status"] == "finished" and trial["objective"] == run["final"][M.EVAL_ACCURACY]
        stored = open_store(url).get_run(run["run"])
        assert stored["config"]["algorithm"] == trial["params"]["algorithm"]
        assert stored["config"]["allocation"]["alpha"] == pytest.approx(trial["params"]["allocation.alpha"])
    study = optuna.load_study(study_name=sweep_id, storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_a_killed_sweep_resumes_with_each_trial_once(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/dibs.db"
    args = ["sweep", tiny_sweep(tmp_path, 3), "--db", url, "--output-dir", str(tmp_path / "runs")]
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    # Its own process group: the SIGKILL takes the driver and the Ray processes it started, nothing else.
    proc = subprocess.Popen(
        [sys.executable, "-m", "dibs.platform.cli", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        sweep_id = proc.stdout.readline().split()[1].rstrip(":")
        store = open_store(url)
        deadline = time.time() + 900
        while sum(t["status"] == "finished" for t in store.trials(sweep_id)) < 1:
            assert proc.poll() is None and time.time() < deadline, (
                "the sweep ended before its first trial did"
            )
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = {t["id"] for t in store.trials(sweep_id) if t["status"] == "finished"}

    assert main(["sweep", "--resume", sweep_id, "--db", url, "--output-dir", str(tmp_path / "runs")]) == 0
    assert f"sweep {sweep_id}: 3/3 trials finished" in capsys.readouterr().out
    trials = store.trials(sweep_id)
    assert len(trials) == 3 and all(t["status"] == "finished" for t in trials)
    assert done_before <= {t["id"] for t in trials}
    runs = [r for r in store.list_runs() if r.get("sweep_id") == sweep_id]
    assert sorted(r["trial_id"] for r in runs) == sorted(t["id"] for t in trials)  # one run per trial
    for r in runs:
        steps = [m["step"] for m in store.get_run(r["id"])["metrics"] if m["name"] == M.ROLLOUT_REWARD]
        assert steps == [1, 2]  # a resumed trial's run: each step once
    # The restored searcher went on with the same study (no fresh one): the three trials are there and
    # complete. The searcher's saved state can predate the kill, so the trial that was running then may
    # also leave one orphan entry in the study, as any crashed Optuna process does.
    study = optuna.load_study(study_name=sweep_id, storage=url)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 3 and len(states) <= 4
