"""The chain-sum task: worked solutions, the strict reward, and disjoint seeded splits."""

import pytest

from dibs.platform.core.config import TaskConfig
from dibs.platform.tasks.task import Problem, build_task, score, solution, well_formed

pytestmark = pytest.mark.unit


def test_solution_adds_one_term_at_a_time():
    # 55+98 = 153; 153-93 = 60; 60+77 = 137
    assert solution(Problem("55+98-93+77=", 137, 4)) == "55+98=153;153-93=60;60+77=137;\\boxed{137}"
    # a subtracted zero keeps its sign as written (int("-0") would lose it)
    assert solution(Problem("7+4-0=", 11, 3)) == "7+4=11;11-0=11;\\boxed{11}"
    assert solution(Problem("5-9=", -4, 2)) == "5-9=-4;\\boxed{-4}"


def test_reward_is_strict():
    good = "5-9=-4;\\boxed{-4}"
    assert score(good, -4, stopped=True) == 1.0
    assert score(good, -4, stopped=False) == 0.0  # truncated: no EOS
    assert score(good, 4, stopped=True) == 0.0  # wrong answer
    assert score(good + ";", -4, stopped=True) == 0.0  # rambled past the answer
    assert score("\\boxed{3}\\boxed{-4}", -4, stopped=True) == 1.0  # the final boxed answer counts
    assert score("-4", -4, stopped=True) == 0.0  # unboxed
    assert well_formed(good, stopped=True) and not well_formed(good, stopped=False)
    assert well_formed("1+1=3;\\boxed{3}", stopped=True)


def test_splits_are_seeded_and_disjoint():
    cfg = TaskConfig(train_size=300, test_size=100, sft_size=500, min_terms=2, max_terms=4, sft_max_terms=3)
    a, b = build_task(cfg, seed=3), build_task(cfg, seed=3)
    assert a == b and a.fingerprint() == b.fingerprint()
    assert build_task(cfg, seed=4).fingerprint() != a.fingerprint()
    test = {p.prompt for p in a.test}
    assert len(test) == 100 and len({p.prompt for p in a.train}) == 300
    assert not test & {p.prompt for p in a.train}
    assert not test & {p.prompt for p in a.sft}
    assert not {p.prompt for p in a.train} & {p.prompt for p in a.sft}
    assert max(p.num_terms for p in a.sft) <= 3
    assert {p.num_terms for p in a.test} == {2, 3, 4}
    for p in a.test[:20]:
        assert eval(p.prompt[:-1]) == p.answer  # the expression really evaluates to the answer


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
