"""The math5 evaluator: mean@k / pass@k by hand on a scripted engine, metric names, and how
results are recorded against a checkpoint's run and step."""

import pytest
import torch

from dibs.platform.cli.eval_cli import checkpoint_target, record_evaluation
from dibs.platform.core import metrics as M
from dibs.platform.rollout.base import Rollouts
from dibs.platform.store import open_store
from dibs.platform.tasks.math_data import MathProblem
from dibs.platform.tasks.math_eval import evaluate_suite, format_table, suite_metrics

pytestmark = pytest.mark.unit


class ScriptedEngine:
    """Answers prompt i's j-th sample with replies[prompt][j]; records the calls."""

    def __init__(self, replies: dict[str, list[str]]):
        self.replies, self.calls = replies, []

    def generate(self, prompts, counts, spec, *, seed):
        self.calls.append((list(prompts), list(counts), spec))
        texts = [self.replies[p][j] for p, c in zip(prompts, counts, strict=True) for j in range(c)]
        gids = torch.tensor([i for i, c in enumerate(counts) for _ in range(c)])
        B = len(texts)
        return Rollouts(
            torch.zeros(B, 2, dtype=torch.long),
            torch.ones(B, 2, dtype=torch.long),
            torch.ones(B, 1),
            torch.zeros(B, 1),
            gids,
            texts,
            torch.ones(B, dtype=torch.bool),
        )

    def load_weights(self, state_dict):
        pass


def problem(name, gold):
    return MathProblem(prompt=name, answer=gold, problem=name)


def test_mean_and_pass_at_k_by_hand():
    # Set A (k = 4): p1 has 3/4 right, p2 0/4, p3 4/4 -> mean@4 = (0.75 + 0 + 1) / 3 = 0.5833, pass@4 = 2/3.
    # Set B: q1 1/4 right -> mean@4 = 0.25, pass@4 = 1. Average (unweighted over sets): 0.41667 and 0.83333.
    right, wrong = "\\boxed{0.5}", "\\boxed{7}"
    engine = ScriptedEngine(
        {
            "p1": [right, right, wrong, right],
            "p2": [wrong, "no answer", wrong, wrong],
            "p3": [right] * 4,
            "q1": ["The answer is 1/2.", wrong, wrong, wrong],
        }
    )
    sets = {
        "A": [problem("p1", "\\frac{1}{2}"), problem("p2", "1/2"), problem("p3", "0.5")],
        "B": [problem("q1", "\\frac12")],
    }
    res = evaluate_suite(
        engine, "math5", sets, k=4, temperature=1.0, max_new_tokens=8, seed=0, batch_problems=2
    )
    a, b = res.sets
    assert a.mean_at_k == pytest.approx(7 / 12, rel=1e-6) and a.pass_at_k == pytest.approx(2 / 3)
    assert b.mean_at_k == pytest.approx(0.25) and b.pass_at_k == 1.0
    assert res.mean_at_k == pytest.approx((7 / 12 + 0.25) / 2) and res.pass_at_k == pytest.approx(5 / 6)
    # batch_problems=2: set A in two generate calls, k samples each, at the requested temperature
    assert [c[1] for c in engine.calls] == [[4, 4], [4], [4]]
    assert engine.calls[0][2].temperature == 1.0 and engine.calls[0][2].max_new_tokens == 8
    assert res.stats.calls == 16 and res.stats.no_answer == 1
    assert "mean@4 / pass@4 at T=1" in format_table(res)


def test_metric_names_and_settings_rows():
    engine = ScriptedEngine({"p": ["\\boxed{1}", "\\boxed{2}"]})
    res = evaluate_suite(
        engine, "math5", {"math500": [problem("p", "1")]}, k=2, temperature=0.6, max_new_tokens=8, seed=0
    )
    values = suite_metrics(res)
    assert values == {
        "eval/math5/math500/mean_at_k": 0.5,
        "eval/math5/math500/pass_at_k": 1.0,
        "eval/math5/math500/problems": 1.0,
        "eval/math5/avg/mean_at_k": 0.5,
        "eval/math5/avg/pass_at_k": 1.0,
        "eval/math5/k": 2.0,
        "eval/math5/temperature": 0.6,
    }
    assert M.eval_suite_metric("math5", M.SUITE_AVG, M.MEAN_AT_K) == "eval/math5/avg/mean_at_k"


def test_checkpoint_maps_to_its_run_and_step(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    run = store.create_run(name="r", experiment="e.yaml", config={}, git_commit=None, versions={}, seed=0)
    ckpt = tmp_path / "runs" / run / "checkpoints" / "step-12"
    ckpt.mkdir(parents=True)
    assert checkpoint_target(store, ckpt, seed=0) == (run, 12)
    # A model directory that is no run's checkpoint gets an evaluation-only run, at step 0.
    base = tmp_path / "Qwen2.5-Math-1.5B"
    base.mkdir()
    run_id, step = checkpoint_target(store, base, seed=0)
    assert step == 0 and run_id != run
    assert store.get_run(run_id)["name"] == "eval-Qwen2.5-Math-1.5B"
    stranger = tmp_path / "runs" / "run-unknown" / "checkpoints" / "step-3"
    stranger.mkdir(parents=True)
    with pytest.raises(Exception, match="run-unknown, which is not in store"):
        checkpoint_target(store, stranger, seed=0)


def test_recording_is_idempotent_and_carries_the_steps_budget(tmp_path):
    from dibs.platform.store import MetricRow

    store = open_store(f"sqlite:///{tmp_path}/s.db")
    run = store.create_run(name="r", experiment="e.yaml", config={}, git_commit=None, versions={}, seed=0)
    store.log_metrics(run, [MetricRow(4, "budget/rollouts", 640, 640, 9000, 12.5)])
    assert record_evaluation(store, run, 4, {"eval/math5/avg/mean_at_k": 0.25}) == 1
    assert record_evaluation(store, run, 4, {"eval/math5/avg/mean_at_k": 0.75}) == 0  # kept as it was
    rows = [m for m in store.get_run(run)["metrics"] if m["name"] == "eval/math5/avg/mean_at_k"]
    assert [(r["step"], r["value"], r["rollouts_consumed"], r["tokens_generated"]) for r in rows] == [
        (4, 0.25, 640, 9000)
    ]
