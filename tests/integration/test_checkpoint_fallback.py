"""`dibs resume` skips checkpoints it must not use, each in one stderr line, and continues the run from the
newest usable one: here a truncated step-2 and a step-3 row of the store pointing outside the run's
directory give way to step 1, and the run finishes with every step recorded once."""

import shutil

import pytest

from dibs.platform.cli.main import main
from dibs.platform.core import metrics as M
from dibs.platform.store import open_store

pytestmark = pytest.mark.integration


def test_resume_skips_a_truncated_and_an_outside_checkpoint(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/dibs.db"
    sets = [
        f"model.cache_dir={tmp_path}/models",
        f"runtime.output_dir={tmp_path}/runs",
        "train.steps=2",
        "runtime.checkpoint_every=1",
        "eval.every=1",
        "eval.k=1",
        "warm_start.steps=2",
        "task.train_size=16",
        "task.test_size=4",
        "task.sft_size=64",
        "train.prompts_per_step=4",
        "allocation.n_per_prompt=2",
    ]
    args = ["run", "experiments/smoke.yaml", "--executor", "inline", "--db", url, "--name", "fallback"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    store = open_store(url)
    run_id = store.list_runs()[0]["id"]
    store.finish_run(run_id, "failed")  # as if it had died after its last checkpoint
    steps = dict(store.checkpoints(run_id))
    learner_pt = tmp_path / "runs" / run_id / "checkpoints" / "step-2" / "learner.pt"
    learner_pt.write_bytes(learner_pt.read_bytes()[:100])
    outside = tmp_path / "elsewhere" / "step-3"
    shutil.copytree(steps[1], outside)  # a valid checkpoint, but not in this run's directory
    store.add_checkpoint(run_id, 3, str(outside))
    capsys.readouterr()

    assert main(["resume", run_id, "--db", url]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("dibs: ")]
    assert warnings == [
        (
            f"dibs: warning: checkpoint of step 3 skipped ({outside}): {outside} is outside the run's "
            f"directory {(tmp_path / 'runs' / run_id).resolve()}"
        ),
        (
            f"dibs: warning: checkpoint of step 2 skipped ({steps[2]}): learner.pt: not a readable torch "
            "archive (BadZipFile: File is not a zip file)"
        ),
    ]
    assert f"run {run_id}: resuming fallback from step 1 ({steps[1]}); store" in out
    run = store.get_run(run_id)
    assert run["status"] == "finished"
    assert [m["step"] for m in run["metrics"] if m["name"] == M.ROLLOUT_REWARD] == [1, 2]
