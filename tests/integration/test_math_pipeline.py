"""The math setting end to end on a tiny CPU model: a couple of GRPO steps on math prompts from a JSONL
file with the five-set evaluation inside the run, then `dibs eval` on a checkpoint over the full five-set
suite (accuracy near 0 is expected; per-set rows must exist at the checkpoint's run and step)."""

import contextlib
import io
import json
import os
from types import SimpleNamespace

import pytest

from dibs.platform.cli.main import main

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETS = ("math500", "minerva_math", "olympiad_bench", "aime24", "amc23")


def dibs(*args, check=True):
    """`dibs ARGS` in this process (the run is inline), from the repository root; stdout, stderr, code."""
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(cwd)
    if check and code != 0:
        raise AssertionError(f"dibs {' '.join(args)} failed ({code}):\n{err.getvalue()[-4000:]}")
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def math_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("math")
    url = f"sqlite:///{out}/dibs.db"
    dibs(
        "run",
        "experiments/math-smoke.yaml",
        "--db",
        url,
        "--set",
        f"runtime.output_dir={out}/runs",
        "--set",
        f"model.cache_dir={out}/models",
        "--set",
        "runtime.checkpoint_every=1",
    )
    (run,) = json.loads(dibs("runs", "--json", "--db", url).stdout)
    return url, out, run["id"]


def rows_by_name(url, run_id):
    run = json.loads(dibs("export", run_id, "--db", url).stdout)
    out = {}
    for m in run["metrics"]:
        out.setdefault(m["name"], {})[m["step"]] = m["value"]
    return run, out


def test_training_on_math_prompts_with_the_suite_in_the_loop(math_run):
    url, _, run_id = math_run
    run, rows = rows_by_name(url, run_id)
    assert run["status"] == "finished" and run["config"]["task"]["kind"] == "math"
    assert sorted(rows["rollout/reward_mean"]) == [1, 2]
    for name in SETS + ("avg",):
        assert sorted(rows[f"eval/math5/{name}/mean_at_k"]) == [0, 2]
    assert rows["eval/math5/math500/problems"][0] == 1.0  # eval.limit: 1


def test_dibs_eval_records_every_set_at_the_checkpoints_step(math_run):
    url, out, run_id = math_run
    ckpt = f"{out}/runs/{run_id}/checkpoints/step-1"
    proc = dibs(
        "eval",
        ckpt,
        "--suite",
        "math5",
        "--limit",
        "2",
        "--k",
        "2",
        "--max-new-tokens",
        "16",
        "--engine",
        "hf",
        "--device",
        "cpu",
        "--db",
        url,
    )
    assert f"run {run_id}, step 1" in proc.stdout and "mean@2 / pass@2 at T=1" in proc.stdout
    _, rows = rows_by_name(url, run_id)
    for name in SETS:
        assert (
            0.0 <= rows[f"eval/math5/{name}/mean_at_k"][1] <= rows[f"eval/math5/{name}/pass_at_k"][1] <= 1.0
        )
        assert rows[f"eval/math5/{name}/problems"][1] == 2.0
    assert rows["eval/math5/k"][1] == 2.0 and rows["eval/math5/temperature"][1] == 1.0
    again = json.loads(
        dibs(
            "eval",
            ckpt,
            "--limit",
            "2",
            "--k",
            "2",
            "--max-new-tokens",
            "16",
            "--json",
            "--device",
            "cpu",
            "--db",
            url,
        ).stdout
    )
    assert again["rows_new"] == 0 and again["rows_kept"] == 19 and again["step"] == 1
    assert [s["name"] for s in again["sets"]] == list(SETS)


def test_run_names_a_missing_path_in_one_line(tmp_path):
    proc = dibs(
        "run",
        "experiments/paper/grpo-gvm-qwen2.5-math-1.5b.yaml",
        "--db",
        f"sqlite:///{tmp_path}/x.db",
        check=False,
    )
    assert proc.returncode == 2
    # The first missing path, named by its key (docs/conventions.md, Recipes and paths).
    assert proc.stderr.strip() == (
        "dibs: error: experiments/paper/grpo-gvm-qwen2.5-math-1.5b.yaml: model.path: "
        "no such file or directory: /models/Qwen2.5-Math-1.5B"
    )
    assert not (tmp_path / "x.db").exists()  # nothing recorded


def test_eval_of_a_missing_checkpoint_is_one_line(tmp_path):
    proc = dibs("eval", str(tmp_path / "nope"), "--db", f"sqlite:///{tmp_path}/x.db", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "not a Hugging Face model directory" in proc.stderr
