"""The README's "Adding a task" example, as written there: its code block registers a third task, which then
runs the smoke experiment end to end through the normal loop (warm start, RL steps, evaluations)."""

import re
import runpy
from pathlib import Path

import pytest

from dibs.platform.core import metrics as M
from dibs.platform.core.config import load_config
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress
from dibs.platform.tasks import registry
from dibs.platform.tasks.base import Problem
from dibs.platform.tasks.registry import make_task

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- example: task -->"


def example_code() -> str:
    """The fenced python block right under the marker, up to its closing fence."""
    readme = (REPO / "README.md").read_text()
    assert MARKER in readme, "README.md lost the task example's marker"
    m = re.match(r"\s*```python\n(.*?)\n```", readme.split(MARKER, 1)[1], re.DOTALL)
    assert m, "no ```python block right under the task example's marker"
    return m.group(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reverse")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "_TASKS", dict(registry._TASKS))  # the registration ends with this module
        example = tmp / "readme_task_example.py"
        example.write_text(example_code())
        runpy.run_path(str(example))
        cfg = load_config(
            REPO / "experiments/smoke.yaml", ["task.kind=reverse", f"model.cache_dir={tmp}/models"]
        )
        task = make_task(cfg.task)
        calls = []
        reward = task.reward
        mp.setattr(
            type(task),
            "reward",
            lambda self, r, p, *, stopped: calls.append(p) or reward(r, p, stopped=stopped),
        )
        rows = MemoryRecorder()
        summary = train(cfg, rows, NullProgress(), checkpoint_dir=str(tmp / "ckpt"))
        yield cfg, task, rows, summary, list(calls)  # the run's calls only, not the tests' own


def test_the_example_scores_by_hand(run):
    _, task, _, _, _ = run
    p = Problem("4071=", "1704", 4)
    assert task.kind == "reverse" and task.solution(p) == "1704"
    assert task.reward("1704", p, stopped=True) == 1.0
    assert task.reward("1704", p, stopped=False) == 0.0  # cut off before EOS
    assert task.reward("4071", p, stopped=True) == 0.0  # not reversed
    assert task.well_formed("4071", p, stopped=True) and not task.well_formed("17=4", p, stopped=True)
    assert task.level(p) == 4


def test_the_splits_are_seeded_disjoint_and_reversals(run):
    cfg, task, _, summary, _ = run
    data = task.splits(cfg.seed)
    assert summary["data_fingerprint"] == data.fingerprint()  # the run trained on this task's problems
    assert (len(data.test), len(data.train), len(data.sft)) == (64, 256, 2000)  # experiments/smoke.yaml
    prompts = [p.prompt for p in data.test + data.train + data.sft]
    assert len(set(prompts)) == len(prompts)
    assert all(p.answer == p.prompt[:-1][::-1] and p.level == len(p.answer) for p in data.test)
    assert data == task.splits(cfg.seed) != task.splits(cfg.seed + 1)


def test_the_run_evaluated_and_rewarded_with_the_new_task(run):
    cfg, task, rows, _, calls = run
    levels = {p.level for p in task.splits(cfg.seed).test}
    assert levels <= {2, 3, 4}  # string lengths, min_terms..max_terms = 2..4 by default
    eval_steps = sorted(step for step, name in rows.rows if name == M.EVAL_ACCURACY)
    assert eval_steps == [0, 2, 4]  # step 0 and every eval.every = 2 of 4 steps
    for step in eval_steps:
        for name in (M.EVAL_ACCURACY, M.EVAL_MEAN_AT_K, M.EVAL_FORMAT_RATE):
            assert 0.0 <= rows.at(step, name)[0] <= 1.0
        # one accuracy row per level the held-out strings have
        assert {n for s, n in rows.rows if s == step and n.startswith("eval/accuracy_terms_")} == {
            M.eval_accuracy_at(level) for level in levels
        }
    assert [s for s, n in sorted(rows.rows) if n == M.ROLLOUT_REWARD] == [1, 2, 3, 4]
    # every reward came from the new task, on its own problems: 4 steps x 8 prompts x 4 samples, and the
    # three evaluations' 64 greedy + 64 x 2 sampled answers
    assert len(calls) == 4 * 8 * 4 + 3 * (64 + 64 * 2)
    assert all(p.answer == p.prompt[:-1][::-1] for p in calls)
