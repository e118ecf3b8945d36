"""`dibs run experiments/smoke.yaml` end to end through Ray, then read back with `dibs runs` /
`dibs export`."""

import csv
import io
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dibs(*args, cwd=REPO, check=True):
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "dibs.platform.cli", *args],
        cwd=cwd,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"dibs {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    db = tmp_path_factory.mktemp("store") / "dibs.db"
    url = f"sqlite:///{db}"
    out = tmp_path_factory.mktemp("out")
    proc = dibs(
        "run",
        "experiments/smoke.yaml",
        "--db",
        url,
        "--name",
        "smoke-ray",
        "--set",
        f"runtime.output_dir={out}",
        "--set",
        f"model.cache_dir={out}/models",
    )
    runs = json.loads(dibs("runs", "--json", "--db", url).stdout)
    return url, proc, runs


def test_run_prints_before_and_after(smoke_run):
    _, proc, _ = smoke_run
    assert "eval/accuracy" in proc.stdout and "step 0 (warm start)" in proc.stdout
    assert "eval/mean_at_k (k=2, T=1.0)" in proc.stdout


def test_runs_json_lists_the_finished_run(smoke_run):
    _, _, runs = smoke_run
    assert len(runs) == 1
    run = runs[0]
    assert run["name"] == "smoke-ray" and run["status"] == "finished"
    assert run["started"] and run["finished"]


def test_export_has_config_and_every_metric_row(smoke_run):
    url, _, runs = smoke_run
    run = json.loads(dibs("export", runs[0]["id"], "--format", "json", "--db", url).stdout)
    assert run["config"]["train"]["steps"] == 4 and run["config"]["runtime"]["executor"] == "ray"
    assert run["git_commit"] is None or len(run["git_commit"]) == 40
    assert run["versions"]["torch"].startswith("2.")
    rows = run["metrics"]
    by_name = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    # eval at step 0 and every 2 steps (eval.every=2, 4 steps) -> steps 0, 2, 4
    assert [r["step"] for r in by_name["eval/accuracy"]] == [0, 2, 4]
    # training metrics at steps 1..4, each exactly once
    assert [r["step"] for r in by_name["rollout/reward_mean"]] == [1, 2, 3, 4]
    # budget: 8 prompts x 4 samples per step -> 32 rollouts per step, carried on every row
    assert [r["rollouts_consumed"] for r in by_name["rollout/reward_mean"]] == [32, 64, 96, 128]
    assert by_name["eval/accuracy"][0]["rollouts_consumed"] == 0
    tokens = [r["tokens_generated"] for r in by_name["rollout/reward_mean"]]
    assert tokens == sorted(tokens) and tokens[0] > 0
    csv_rows = list(
        csv.DictReader(io.StringIO(dibs("export", runs[0]["id"], "--format", "csv", "--db", url).stdout))
    )
    assert len(csv_rows) == len(rows)
    assert set(csv_rows[0]) == {
        "step",
        "rollouts_consumed",
        "tokens_generated",
        "wall_seconds",
        "name",
        "value",
    }


def test_bad_yaml_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: -3\n")
    for extra in ([], ["--db", f"sqlite:///{tmp_path}/x.db"]):
        proc = dibs("validate" if not extra else "run", str(bad), *extra, check=False)
        assert proc.returncode == 2
        assert proc.stderr.strip() == f"dibs: error: {bad}: train.lr: Input should be greater than 0 (got -3)"
        assert "Traceback" not in proc.stderr


def test_bad_db_url_is_one_line_error(tmp_path):
    proc = dibs("runs", "--db", "nosuchdb://x", check=False)
    assert proc.returncode == 2 and "nosuchdb://x" in proc.stderr and "Traceback" not in proc.stderr
