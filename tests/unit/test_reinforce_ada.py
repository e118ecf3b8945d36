"""reinforce_ada on a scripted engine (docs/method.md §8): rounds and exits under both rules, the step's
budget cap, a budget smaller than the prompt count, the balanced down-selection, the pool's baseline, and
the loop's accounting of every drawn sample (budget rows and per-prompt rows)."""

import functools
import math

import numpy as np
import pytest
import torch

from dibs.platform.allocation.allocators import Allocation, AllocContext, StepBudget
from dibs.platform.allocation.factory import build_allocator, build_stage
from dibs.platform.allocation.reinforce_ada import (
    AdaRounds,
    ReinforceAdaAllocator,
    balanced_pick,
    exit_targets,
    round_counts,
)
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig, ExperimentConfig, TaskConfig
from dibs.platform.rollout.base import Rollouts, SamplingSpec
from dibs.platform.runtime.budget import Budget, account, prompt_stats, prompt_tokens
from dibs.platform.runtime.loop import advantages
from dibs.platform.tasks.base import Problem
from dibs.platform.tasks.chain_sum import ChainSumTask
from dibs.platform.tasks.evaluate import score_groups

pytestmark = pytest.mark.unit

SCORE = functools.partial(score_groups, ChainSumTask(TaskConfig()))

# A prompt's k-th sample of the step (counted over all its rounds) is right iff its pattern says so.
SCRIPT = {  # prompt: (answer, accept pattern)
    "1+2=": (3, [1, 0]),
    "7+7=": (14, [1]),  # all right
    "3+3=": (6, [1, 1, 1, 0]),
    "5-9=": (-4, [0]),  # all wrong
    "6+1=": (7, [1, 0, 0, 0]),
    "8-8=": (0, [0]),  # all wrong
    "4+4=": (8, [0]),  # all wrong
    "2+5=": (7, [1]),  # all right
}
P = {name: Problem(name, answer, 2) for name, (answer, _) in SCRIPT.items()}


class ScriptEngine:
    """Answers by each prompt's pattern, continuing it across calls; 3 response tokens a sample."""

    def __init__(self):
        self.calls, self.seeds, self.drawn = [], [], {}

    def generate(self, prompts, counts, spec, *, seed):
        self.calls.append((list(prompts), list(counts)))
        self.seeds.append(seed)
        gids, texts = [], []
        for i, (prompt, c) in enumerate(zip(prompts, counts, strict=True)):
            answer, pattern = SCRIPT[prompt]
            for _ in range(c):
                k = self.drawn.get(prompt, 0)
                self.drawn[prompt] = k + 1
                texts.append(f"\\boxed{{{answer + (0 if pattern[k % len(pattern)] else 1)}}}")
                gids.append(i)
        B, L = len(texts), 6 + len(self.calls)  # widths differ between calls: the merge pads them
        resp = torch.zeros(B, L - 1)
        resp[:, -3:] = 1.0
        return Rollouts(
            torch.zeros(B, L, dtype=torch.long),
            torch.ones(B, L, dtype=torch.long),
            resp,
            -resp,
            torch.tensor(gids, dtype=torch.long),
            texts,
            torch.ones(B, dtype=torch.bool),
        )


def ctx(engine, budget=None):
    return AllocContext(
        engine, None, SamplingSpec(max_new_tokens=3), seed=5, step=1, score=SCORE, budget=budget
    )


def cfg(**kw):
    base = {"allocator": "reinforce_ada", "n_per_prompt": 4, "ada_round_size": 2, "ada_max_rounds": 4}
    return AllocationConfig(**(base | kw))


def run(prompts, config, budget=None):
    engine = ScriptEngine()
    batch = AdaRounds(config).sample([P[p] for p in prompts], ctx(engine, budget), draw=None)
    return engine, batch


def kept(batch):
    """Per prompt of the batch, its training group's rewards in batch order."""
    rewards = SCORE(batch.rollouts, batch.prompts).tolist()
    gids = batch.rollouts.group_ids.tolist()
    return {
        p.prompt: [r for r, g in zip(rewards, gids, strict=True) if g == i]
        for i, p in enumerate(batch.prompts)
    }


# ---------------------------------------------------------------- the rules, by hand


def test_exit_targets():
    assert exit_targets("positive", 4) == (1, 0)
    assert exit_targets("balanced", 4) == (2, 2)
    assert exit_targets("balanced", 5) == (2, 3)  # odd n: positives floor, negatives ceil (public code)
    assert exit_targets("balanced", 1) == (0, 1)
    with pytest.raises(ValueError, match="unknown rule 'both'"):
        exit_targets("both", 4)


@pytest.mark.parametrize(
    ("accepted", "n", "expected"),
    [
        ([1, 1, 1, 0, 1, 1, 1, 0], 4, [0, 1, 3, 7]),  # 2 of 6 positives, both negatives
        ([1, 0, 0, 0, 0, 1], 4, [0, 1, 2, 5]),  # 2 positives, the first 2 of 4 negatives
        ([0] * 6, 4, [0, 1, 2, 3]),  # no positive: the first n negatives
        ([1] * 5, 4, [0, 1, 2, 3]),  # no negative: the shortfall filled with positives
        ([1, 0, 1, 1, 1], 4, [0, 1, 2, 3]),  # one negative: 3 positives fill the rest
        ([1, 1, 0, 0, 0], 3, [0, 2, 3]),  # odd n: n // 2 = 1 positive, 2 negatives
        ([1, 0], 4, [0, 1]),  # a pool of at most n is kept whole
        ([], 4, []),
    ],
)
def test_balanced_pick(accepted, n, expected):
    assert balanced_pick(np.array(accepted, dtype=bool), n).tolist() == expected


def test_round_counts():
    assert round_counts(3, 2, 100).tolist() == [2, 2, 2]
    assert round_counts(3, 2, 6).tolist() == [2, 2, 2]
    assert round_counts(3, 3, 5).tolist() == [2, 2, 1]  # short: shared evenly, the first take the rest
    assert round_counts(4, 2, 2).tolist() == [1, 1, 0, 0]  # fewer than the prompts: some get none
    assert round_counts(2, 2, 0).tolist() == [0, 0]


# ---------------------------------------------------------------- rounds and exits


def test_balanced_rounds_exit_and_pool_baseline():
    # n = 4: exit at 2 accepted and 2 rejected; 2 samples a round, N = 24 for 3 prompts.
    # Round 1 (all 3, 6 drawn), round 2 (all 3, 12): 1+2= has [1,0,1,0] -> exits.
    # Rounds 3-4 (7+7= and 3+3=, 16 then 20): 3+3= reaches [1,1,1,0,1,1,1,0] (6/2) -> exits after round 4;
    # 7+7= (8 right) never does. The cap of 4 rounds stops the step with 4 of N unspent.
    engine, batch = run(["1+2=", "7+7=", "3+3="], cfg(), StepBudget(24))
    assert engine.calls == [(["1+2=", "7+7=", "3+3="], [2, 2, 2])] * 2 + [(["7+7=", "3+3="], [2, 2])] * 2
    assert engine.seeds == [5, 6, 7, 8]  # round r samples with the allocation seed + r
    # Groups: 1+2= whole; 7+7= its first 4 (all right); 3+3= positions 0, 1 (right) and 3, 7 (wrong).
    assert kept(batch) == {"1+2=": [1, 0, 1, 0], "7+7=": [1] * 4, "3+3=": [1, 1, 0, 0]}
    assert batch.rollouts.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # Pool baselines: 1+2= mean 1/2, std sqrt(1/3); 7+7= all right: std 0; 3+3= mean 6/8 = 0.75,
    # squared deviations 6 x 1/16 + 2 x 9/16 = 3/2, Bessel var 3/2 / 7 = 3/14.
    s1, s3 = math.sqrt(1 / 3), math.sqrt(3 / 14)
    torch.testing.assert_close(batch.baseline, torch.tensor([0.5] * 4 + [1.0] * 4 + [0.75] * 4))
    torch.testing.assert_close(batch.scale, torch.tensor([s1] * 4 + [0.0] * 4 + [s3] * 4))
    # Dropped: 7+7='s last 4 (right) and 3+3='s positions 2, 4, 5, 6 (right), 3 tokens each.
    d = batch.dropped
    assert (d.rollouts, d.accepted, d.tokens) == (8, 8, 24) and d.rows == []
    assert d.per_prompt.rollouts.tolist() == [0, 4, 4] and d.per_prompt.accepted.tolist() == [0, 4, 4]
    assert batch.stats == {
        M.ALLOC_ADA_ROUNDS: 4.0,
        M.ALLOC_ADA_POOL_ROLLOUTS: 20.0,
        M.ALLOC_ADA_DROPPED_ROLLOUTS: 8.0,
        M.ALLOC_ADA_UNSPENT: 4.0,
        M.ALLOC_ADA_EXITED_PROMPTS: 2.0,
        M.ALLOC_ADA_EMPTY_PROMPTS: 0.0,
        M.ALLOC_ADA_FIRST_ROUND_REWARD: 5 / 6,  # round 1: [1,0], [1,1], [1,1]
    }


def test_a_group_smaller_than_the_budget_per_prompt():
    # ada_group = 2 with N = 3 x 4: balanced exit at 1 accepted and 1 rejected, groups of 2. Round 1
    # (2 each): 1+2= [1,0] and 6+1= [1,0] exit; 7+7= draws 2 a round (all right) until N = 12 is spent
    # after round 4 and keeps its first 2 of a pool of 8: the budget freed by easy exits went to it.
    engine, batch = run(["1+2=", "6+1=", "7+7="], cfg(ada_group=2), StepBudget(12))
    assert engine.calls == [(["1+2=", "6+1=", "7+7="], [2, 2, 2])] + [(["7+7="], [2])] * 3
    assert kept(batch) == {"1+2=": [1, 0], "6+1=": [1, 0], "7+7=": [1, 1]}
    assert batch.dropped.per_prompt.rollouts.tolist() == [0, 0, 6]
    assert batch.stats[M.ALLOC_ADA_UNSPENT] == 0 and batch.stats[M.ALLOC_ADA_EXITED_PROMPTS] == 2


def test_positive_exit_at_first_accepted_sample():
    # 1+2= and 6+1= are right in round 1 ([1,0] each): both exit. 5-9= draws 2 more in rounds 2 and 3
    # (N = 12 leaves room), hits the 3-round cap with 6 wrong, and keeps its first 4.
    engine, batch = run(["1+2=", "5-9=", "6+1="], cfg(ada_exit="positive", ada_max_rounds=3))
    assert engine.calls == [(["1+2=", "5-9=", "6+1="], [2, 2, 2]), (["5-9="], [2]), (["5-9="], [2])]
    assert kept(batch) == {"1+2=": [1, 0], "5-9=": [0] * 4, "6+1=": [1, 0]}
    assert batch.dropped.per_prompt.rollouts.tolist() == [0, 2, 0]
    assert batch.stats[M.ALLOC_ADA_EXITED_PROMPTS] == 2 and batch.stats[M.ALLOC_ADA_UNSPENT] == 2
    assert batch.stats[M.ALLOC_ADA_ROUNDS] == 3
    # 5-9='s pool is all wrong: scale 0 (no signal); 1+2= and 6+1= pools [1,0]: mean 1/2, std sqrt(1/2).
    assert batch.scale.tolist()[2:6] == [0.0] * 4
    torch.testing.assert_close(batch.scale[:2], torch.full((2,), math.sqrt(0.5)))


def test_every_prompt_solved_in_round_one():
    # positive: every prompt has an accepted sample in round 1, so one round of 4 x 2 = 8 of N = 16.
    engine, batch = run(["1+2=", "7+7=", "2+5=", "3+3="], cfg(ada_exit="positive"))
    assert len(engine.calls) == 1 and engine.calls[0][1] == [2, 2, 2, 2]
    assert batch.stats[M.ALLOC_ADA_ROUNDS] == 1 and batch.stats[M.ALLOC_ADA_EXITED_PROMPTS] == 4
    assert batch.stats[M.ALLOC_ADA_UNSPENT] == 8 and batch.dropped.rollouts == 0
    assert len(batch.rollouts.texts) == 8


def test_nothing_solved_rounds_until_the_budget_cap():
    # 3 all-wrong prompts, 3 samples a round, N = 11: round 1 draws 9, round 2 shares the last 2 over
    # the 3 active prompts (1, 1, 0: the first ones take them) and the budget stops the step, 10 rounds
    # allowed or not. Nothing exits; pools 4, 4, 3 are kept whole (n = 4).
    engine, batch = run(["5-9=", "8-8=", "4+4="], cfg(ada_round_size=3, ada_max_rounds=10), StepBudget(11))
    assert engine.calls == [(["5-9=", "8-8=", "4+4="], [3, 3, 3]), (["5-9=", "8-8="], [1, 1])]
    assert batch.rollouts.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 3
    assert batch.stats[M.ALLOC_ADA_POOL_ROLLOUTS] == 11 and batch.stats[M.ALLOC_ADA_UNSPENT] == 0
    assert batch.stats[M.ALLOC_ADA_EXITED_PROMPTS] == 0 and batch.stats[M.ALLOC_ADA_ROUNDS] == 2
    assert batch.scale.tolist() == [0.0] * 11  # all-wrong pools carry no GRPO signal


def test_nothing_solved_rounds_until_the_round_cap():
    # 2 all-wrong prompts, 1 sample a round, 3 rounds at most: 6 of N = 8 drawn, 2 unspent.
    engine, batch = run(["5-9=", "8-8="], cfg(ada_round_size=1, ada_max_rounds=3))
    assert [c[1] for c in engine.calls] == [[1, 1]] * 3
    assert batch.stats[M.ALLOC_ADA_POOL_ROLLOUTS] == 6 and batch.stats[M.ALLOC_ADA_UNSPENT] == 2


def test_budget_smaller_than_the_prompt_count():
    # Tokens mode can make N < m: N = 2 over 4 prompts draws 1 sample for each of the first two and
    # stops. The other two stay in the batch without rollouts (rows with n_alloc 0, p̂ NaN).
    budget = StepBudget(2, tokens=6, tokens_per_rollout=3.0)
    engine, batch = run(["1+2=", "5-9=", "7+7=", "3+3="], cfg(), budget)
    assert engine.calls == [(["1+2=", "5-9="], [1, 1])]
    assert [p.prompt for p in batch.prompts] == ["1+2=", "5-9=", "7+7=", "3+3="]
    assert batch.rollouts.group_ids.tolist() == [0, 1]
    assert batch.stats[M.ALLOC_ADA_EMPTY_PROMPTS] == 2 and batch.stats[M.ALLOC_ADA_UNSPENT] == 0
    # Pools of one sample: no spread, scale 0, so GRPO gives them nothing (as a group of size 1).
    assert batch.scale.tolist() == [0.0, 0.0]
    rewards = SCORE(batch.rollouts, batch.prompts)
    rows = prompt_stats(
        batch.prompts, Allocation(np.array([1, 1, 0, 0])), batch.rollouts, rewards, batch.dropped
    )
    assert [(r.n_alloc, r.accepted) for r in rows] == [(1, 1), (1, 0), (0, 0), (0, 0)]
    assert math.isnan(rows[2].p_hat) and math.isnan(rows[3].p_hat)


def test_allocator_counts_stay_within_the_budget_and_the_factory_pairs_the_stage():
    config = cfg()
    alloc = build_allocator(config)
    assert isinstance(alloc, ReinforceAdaAllocator) and isinstance(build_stage(config), AdaRounds)
    out = alloc.allocate([P["1+2="], P["5-9="], P["7+7="]], ctx(None))
    assert out.counts.tolist() == [4, 4, 4] and out.probe_rollouts == 0 and out.stats == {}
    assert alloc.allocate([P["1+2="], P["5-9="], P["7+7="]], ctx(None, StepBudget(7))).counts.tolist() == [
        3,
        2,
        2,
    ]
    assert alloc.state_dict() == {}


# ---------------------------------------------------------------- the loop's view of the batch


def test_loop_accounts_every_drawn_sample_once():
    engine, batch = run(["1+2=", "7+7=", "3+3="], cfg(), StepBudget(24))
    rewards = SCORE(batch.rollouts, batch.prompts)
    grpo = ExperimentConfig().model_copy(update={"algorithm": "grpo"})
    adv, keep, _ = advantages(grpo, rewards, batch.rollouts.group_ids, batch.baseline, batch.scale)
    # 3+3= kept [1, 1, 0, 0] against its pool (mean 0.75, std sqrt(3/14)), not its group's mean 1/2.
    s3 = math.sqrt(3 / 14) + 1e-6
    torch.testing.assert_close(adv[8:], torch.tensor([0.25 / s3] * 2 + [-0.75 / s3] * 2))
    assert adv[4:8].tolist() == [0.0] * 4 and keep.all()
    budget = Budget()
    alloc = Allocation(np.array([8, 8, 8]))
    spent = account(budget, alloc, batch.rollouts, rewards, adv, keep, batch.dropped)
    # 12 trained + 8 dropped = the 20 drawn; accepted 8 kept + 8 dropped = 16 of the pools
    # (2 + 8 + 6); wasted: 7+7='s 4 zero-advantage samples + the 8 dropped.
    assert spent[M.STEP_ROLLOUTS] == 20 == spent[M.BUDGET_TRAIN_ROLLOUTS] == budget.rollouts
    assert spent[M.STEP_ACCEPTED] == 16 and spent[M.STEP_WASTED] == 12 and spent[M.BUDGET_TOKENS] == 60
    rows = prompt_stats(batch.prompts, alloc, batch.rollouts, rewards, batch.dropped)
    assert [(r.prompt_id, r.n_alloc, r.accepted, r.p_hat) for r in rows] == [
        ("1+2=", 4, 2, 0.5),
        ("7+7=", 8, 8, 1.0),
        ("3+3=", 8, 6, 0.75),
    ]
    assert sum(r.n_alloc for r in rows) == spent[M.STEP_ROLLOUTS]
    assert prompt_tokens(batch.rollouts, 3, batch.dropped).tolist() == [12, 24, 24]


def test_loop_advantages_take_the_pool_only_under_grpo():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    gids = torch.tensor([0, 0, 1, 1])
    baseline, scale = torch.tensor([0.25, 0.25, 1.0, 1.0]), torch.tensor([0.5, 0.5, 0.0, 0.0])
    raftpp = ExperimentConfig().model_copy(update={"algorithm": "raftpp"})
    adv, keep, _ = advantages(raftpp, rewards, gids, baseline, scale)
    assert adv.tolist() == [1.0, 0.0, 1.0, 1.0] and keep.all()  # A = r, pools or not
    base = ExperimentConfig()
    drop = base.model_copy(
        update={"algorithm": "grpo", "train": base.train.model_copy(update={"drop_equal_groups": True})}
    )
    adv, keep, _ = advantages(drop, rewards, gids, baseline, scale)
    torch.testing.assert_close(adv, torch.tensor([0.75 / (0.5 + 1e-6), -0.25 / (0.5 + 1e-6), 0.0, 0.0]))
    assert keep.tolist() == [True, True, False, False]  # equal pools are the equal groups
    _, keep, _ = advantages(drop, torch.tensor([1.0, 1.0, 1.0, 0.0]), gids, baseline, torch.full((4,), 0.5))
    assert keep.all()  # group 0 is all right but its pool is mixed: it stays
