"""The chain-sum task (`task.kind: reasoning_gym`): worked solutions, the strict reward, the format check,
levels, the tokenizer alphabet, and disjoint seeded splits."""

import re

import pytest

from dibs.platform.core.config import TaskConfig
from dibs.platform.tasks.base import Problem
from dibs.platform.tasks.chain_sum import ChainSumTask
from dibs.platform.tasks.registry import build_task

pytestmark = pytest.mark.unit

TASK = ChainSumTask(TaskConfig())


def test_solution_adds_one_term_at_a_time():
    # 55+98 = 153; 153-93 = 60; 60+77 = 137
    assert TASK.solution(Problem("55+98-93+77=", 137, 4)) == "55+98=153;153-93=60;60+77=137;\\boxed{137}"
    # a subtracted zero keeps its sign as written (int("-0") would lose it)
    assert TASK.solution(Problem("7+4-0=", 11, 3)) == "7+4=11;11-0=11;\\boxed{11}"
    assert TASK.solution(Problem("5-9=", -4, 2)) == "5-9=-4;\\boxed{-4}"


def test_reward_is_strict():
    p, good = Problem("5-9=", -4, 2), "5-9=-4;\\boxed{-4}"
    assert TASK.reward(good, p, stopped=True) == 1.0
    assert TASK.reward(good, p, stopped=False) == 0.0  # truncated: no EOS
    assert TASK.reward(good, Problem("5-9=", 4, 2), stopped=True) == 0.0  # wrong answer
    assert TASK.reward(good + ";", p, stopped=True) == 0.0  # rambled past the answer
    assert TASK.reward("\\boxed{3}\\boxed{-4}", p, stopped=True) == 1.0  # the final boxed answer counts
    assert TASK.reward("-4", p, stopped=True) == 0.0  # unboxed


def test_well_formed_is_format_only_and_level_is_terms():
    p = Problem("1+1=", 2, 2)
    assert TASK.well_formed("5-9=-4;\\boxed{-4}", p, stopped=True)
    assert not TASK.well_formed("5-9=-4;\\boxed{-4}", p, stopped=False)
    assert TASK.well_formed("1+1=3;\\boxed{3}", p, stopped=True)  # wrong, but well formed
    assert not TASK.well_formed("1+1=2", p, stopped=True) and not TASK.well_formed(
        "\\boxed{x}", p, stopped=True
    )
    assert TASK.level(Problem("55+98-93+77=", 137, 4)) == 4


def test_alphabet_is_the_tokenizer_of_today_exactly():
    # Digits, the operators, `;`, `\boxed{` as one token and `}`, in this order: the tiny model's cache
    # key hashes the list, so any change would rebuild every cached model.
    assert list(ChainSumTask.alphabet) == list("0123456789+-=;") + ["\\boxed{", "}"]
    assert TASK.kind == "reasoning_gym"


def test_splits_are_seeded_and_disjoint():
    cfg = TaskConfig(train_size=300, test_size=100, sft_size=500, min_terms=2, max_terms=4, sft_max_terms=3)
    a, b = build_task(cfg, seed=3), build_task(cfg, seed=3)
    assert a == b and a.fingerprint() == b.fingerprint()
    assert ChainSumTask(cfg).splits(3) == a
    assert build_task(cfg, seed=4).fingerprint() != a.fingerprint()
    test = {p.prompt for p in a.test}
    assert len(test) == 100 and len({p.prompt for p in a.train}) == 300
    assert not test & {p.prompt for p in a.train}
    assert not test & {p.prompt for p in a.sft}
    assert not {p.prompt for p in a.train} & {p.prompt for p in a.sft}
    assert max(p.level for p in a.sft) <= 3
    assert {p.level for p in a.test} == {2, 3, 4}
    for p in a.test[:20]:
        assert eval(p.prompt[:-1]) == p.answer  # the expression really evaluates to the answer
        assert p.level == len(re.findall(r"[+-]?\d+", p.prompt))  # the level is the number of terms


def test_splits_are_not_shifted_copies_of_each_other():
    """reasoning-gym seeds item i with seed + i: seeds 1 apart would give the same problems shifted by
    one, and a small train split filtered against the held-out one would come out empty."""
    cfg = TaskConfig(train_size=16, test_size=64, sft_size=100, min_terms=2, max_terms=4)
    data = build_task(cfg, seed=0)
    assert len(data.train) == 16
    other = build_task(cfg, seed=1)
    assert not {p.prompt for p in data.train} & {p.prompt for p in other.train}


def test_too_few_distinct_problems_is_a_clear_error():
    cfg = TaskConfig(min_terms=2, max_terms=2, min_digits=1, max_digits=1, test_size=150, train_size=100)
    with pytest.raises(ValueError, match="distinct train problems"):
        build_task(cfg, seed=0)
