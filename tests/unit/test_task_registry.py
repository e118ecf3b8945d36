"""Tasks behind the `Task` Protocol: the registry (unknown kinds, registering one), the math task's hooks,
scoring and the held-out evaluation through a task, and a tokenizer from a task's declared alphabet."""

from pathlib import Path

import pytest
import torch

from dibs.platform.allocation.allocators import AllocContext
from dibs.platform.core import metrics as M
from dibs.platform.core.config import ConfigError, EvalConfig, TaskConfig, validate_dict
from dibs.platform.learn.model import train_tokenizer
from dibs.platform.rollout.base import Rollouts
from dibs.platform.tasks import registry
from dibs.platform.tasks.base import Problem, TaskData
from dibs.platform.tasks.chain_sum import ChainSumTask
from dibs.platform.tasks.evaluate import evaluate, score_groups
from dibs.platform.tasks.math_data import MathProblem
from dibs.platform.tasks.math_task import MathTask
from dibs.platform.tasks.registry import check_task_kind, known_kinds, make_task, register_task

pytestmark = pytest.mark.unit


class EchoTask:
    """Say the prompt back: reward 1 iff the response is the answer; well formed iff stopped and letters."""

    kind = "echo"
    alphabet = tuple("abcd")

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg

    def splits(self, seed: int) -> TaskData:
        return TaskData(sft=[], train=[Problem("a", "a", 1)], test=[Problem("b", "b", 1)])

    def reward(self, response, problem, *, stopped):
        return 1.0 if response == problem.answer else 0.0

    def well_formed(self, response, problem, *, stopped):
        return stopped and response.isalpha()

    def level(self, problem):
        return problem.level

    def solution(self, problem):
        return problem.answer


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Each test registers into a copy: nothing leaks into the rest of the session."""
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))


def test_the_shipped_kinds_and_an_unknown_one():
    assert known_kinds() == ["math", "reasoning_gym"]
    assert isinstance(make_task(TaskConfig()), ChainSumTask)
    cfg = validate_dict(
        {"task": {"kind": "maths"}}
    ).task  # the config checks the shape, the registry the name
    expected = (
        "<config>: task.kind: unknown task kind 'maths'; known kinds: math, reasoning_gym "
        "(register_task adds one, platform/tasks/registry.py)"
    )
    with pytest.raises(ConfigError) as e:
        make_task(cfg)
    assert str(e.value) == expected
    with pytest.raises(ConfigError, match="^x.yaml: task.kind: unknown task kind 'maths'"):
        check_task_kind(cfg, "x.yaml")


def test_register_a_task_from_user_code():
    register_task("echo", EchoTask)
    register_task("echo", EchoTask)  # the same factory again: a no-op
    assert known_kinds() == ["echo", "math", "reasoning_gym"]
    cfg = validate_dict({"task": {"kind": "echo", "test_size": 3}}).task
    check_task_kind(cfg)
    task = make_task(cfg)
    assert isinstance(task, EchoTask) and task.cfg.test_size == 3
    assert registry.build_task(cfg, seed=0).test == [Problem("b", "b", 1)]


def test_registering_is_checked():
    with pytest.raises(
        ValueError, match="'reasoning_gym' is already registered .ChainSumTask.; pass replace=True"
    ):
        register_task("reasoning_gym", EchoTask)
    register_task("reasoning_gym", EchoTask, replace=True)
    assert isinstance(make_task(TaskConfig()), EchoTask)
    with pytest.raises(ValueError, match="kind 'Echo Task' must match"):
        register_task("Echo Task", EchoTask)
    with pytest.raises(TypeError, match="factory of 'echo' must be callable"):
        register_task("echo", 3)


def test_math_task_hooks():
    task = make_task(TaskConfig(kind="math", train_file="unused.jsonl"))
    assert isinstance(task, MathTask) and task.kind == "math"
    half = MathProblem("p", "\\frac{1}{2}", problem="What is 1/2?", solution="so \\boxed{0.5}")
    # Math-Verify decides, whether or not the response stopped; no answer or a wrong one scores 0.
    assert task.reward("so \\boxed{0.5}", half, stopped=False) == 1.0
    assert task.reward("The answer is 1/2.", half, stopped=True) == 1.0
    assert task.reward("\\boxed{2}", half, stopped=True) == 0.0
    assert task.reward("no answer here", half, stopped=True) == 0.0
    # Well formed: stopped, and a final answer can be extracted (right or wrong).
    assert task.well_formed("\\boxed{2}", half, stopped=True) and not task.well_formed(
        "\\boxed{2}", half, stopped=False
    )
    assert not task.well_formed("no answer here", half, stopped=True)
    assert task.level(half) is None
    assert task.solution(half) == "so \\boxed{0.5}"
    with pytest.raises(ValueError, match="no worked solution"):
        task.solution(MathProblem("p", "1", problem="q"))
    # The tiny math-smoke model keeps the chain-sum vocabulary it has always had.
    assert list(task.alphabet) == list("0123456789+-=;") + ["\\boxed{", "}"]


class ScriptedEngine:
    """Sample j of prompt p is replies[p][j] (the greedy call takes j = 0); one response token each."""

    def __init__(self, replies: dict[str, list[str]]):
        self.replies = replies

    def generate(self, prompts, counts, spec, *, seed):
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


def test_score_groups_follows_group_ids():
    problems = [Problem("a", "a"), Problem("b", "b")]
    ro = ScriptedEngine({"a": ["a", "b"], "b": ["b"]}).generate(["b", "a"], [1, 2], None, seed=0)
    assert ro.group_ids.tolist() == [0, 1, 1] and ro.texts == ["b", "a", "b"]
    # sample 0 answers problems[0] ("a") with "b": 0; samples 1 and 2 answer problems[1] ("b"): "a" 0, "b" 1
    assert score_groups(EchoTask(TaskConfig()), ro, problems).tolist() == [0.0, 0.0, 1.0]


def test_evaluate_through_the_task_by_hand():
    problems = [Problem("a", "a", 1), Problem("bb", "bb", 2), Problem("cc", "cc", 2), Problem("d", "d", None)]
    engine = ScriptedEngine({"a": ["a", "b"], "bb": ["?", "bb"], "cc": ["cc", "cc"], "d": ["e", "d"]})
    out = evaluate(engine, EchoTask(TaskConfig()), problems, EvalConfig(k=2), seed=0)
    # greedy: a right, bb wrong ("?", not letters), cc right, d wrong but well formed
    assert out[M.EVAL_ACCURACY] == 0.5 and out[M.EVAL_FORMAT_RATE] == 0.75
    # per level: level 1 [a: 1] -> 1.0, level 2 [bb: 0, cc: 1] -> 0.5; d has no level and no row
    assert out[M.eval_accuracy_at(1)] == 1.0 and out[M.eval_accuracy_at(2)] == 0.5
    assert sorted(k for k in out if k.startswith("eval/accuracy_terms_")) == [
        "eval/accuracy_terms_1",
        "eval/accuracy_terms_2",
    ]
    # 2 samples each: a [1, 0], bb [0, 1], cc [1, 1], d [0, 1] -> 5 of 8
    assert out[M.EVAL_MEAN_AT_K] == 5 / 8 and out[M.EVAL_RESPONSE_LEN] == 1.0


def test_alloc_context_without_a_scorer_says_so():
    ctx = AllocContext(None, None, None, 0)
    with pytest.raises(ValueError, match="AllocContext.score is not set"):
        ctx.score(None, [])


def test_a_declared_alphabet_builds_its_own_tokenizer():
    tok = train_tokenizer(tuple("0123456789="))
    # specials 0-2, then the characters in code-point order: "0".."9" -> 3..12, "=" -> 13
    assert tok.encode("12=21", add_special_tokens=False) == [4, 5, 13, 5, 4] and len(tok) == 14
    assert tok.decode([4, 5, 13, 5, 4]) == "12=21"
    with pytest.raises(ValueError, match="at least one single character"):
        train_tokenizer(["\\boxed{"])


def test_dibs_validate_names_an_unknown_kind_in_one_line(capsys, monkeypatch):
    from dibs.platform.cli.main import main

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert main(["validate", "experiments/smoke.yaml", "--set", "task.kind=maths"]) == 2
    assert capsys.readouterr().err.strip() == (
        "dibs: error: experiments/smoke.yaml: task.kind: unknown task kind "
        "'maths'; known kinds: math, reasoning_gym (register_task adds one, "
        "platform/tasks/registry.py)"
    )
