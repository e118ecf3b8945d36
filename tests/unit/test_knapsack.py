"""The knapsack allocator (docs/method.md §8, knapsack): the paper's value function, the exact dynamic
programme against brute force, the fallback, the edge cases, and the allocator's carried estimates,
budget modes and state, all on hand-derived values."""

import itertools
import json

import numpy as np
import pytest

from dibs.algorithms.knapsack import (
    info_gain,
    knapsack_allocate,
    knapsack_value,
    nonzero_grad_prob,
    rollouts_for_confidence,
    solve_choice_knapsack,
)
from dibs.platform.allocation.allocators import AllocContext, StepBudget
from dibs.platform.allocation.factory import build_allocator
from dibs.platform.allocation.knapsack import KnapsackAllocator
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig, ConfigError, validate_dict
from dibs.platform.rollout.base import SamplingSpec
from dibs.platform.tasks.base import Problem

pytestmark = pytest.mark.unit

# ---------------------------------------------------------------- the value function


def test_nonzero_gradient_probability_by_hand():
    # 1 - p^n - (1-p)^n: n=2, p=1/2 -> 1/2; n=3 -> 3/4; n=2, p=1/4 -> 1 - 1/16 - 9/16 = 6/16.
    assert nonzero_grad_prob([2, 3], 0.5).tolist() == [0.5, 0.75]
    assert nonzero_grad_prob(2, 0.25) == pytest.approx(0.375)
    # No sample or one sample: never both outcomes (the formula would give -1 at n = 0).
    assert nonzero_grad_prob([0, 1], 0.3).tolist() == [0.0, 0.0]
    # Solved or unsolved: no gradient at any n.
    assert nonzero_grad_prob(8, [0.0, 1.0]).tolist() == [0.0, 0.0]


def test_info_gain_and_value_by_hand():
    # InfoGain(p) = p (1-p)^2: 1/8 at p = 1/2, its maximum 4/27 at p = 1/3, 0 at p = 0 and 1.
    assert info_gain([0.5, 0.0, 1.0]).tolist() == [0.125, 0.0, 0.0]
    assert info_gain(1 / 3) == pytest.approx(4 / 27)
    assert info_gain(np.linspace(0, 1, 301)).max() == pytest.approx(4 / 27, rel=1e-4)
    # Value(2, 1/2) = 1/2 x 1/8; Value(3, 1/2) = 3/4 x 1/8.
    assert knapsack_value([0, 1, 2, 3], 0.5).tolist() == [0.0, 0.0, 0.0625, 0.09375]


def test_value_is_not_concave_from_zero_but_is_from_one():
    inc = np.diff(knapsack_value(np.arange(0, 12), 0.3))
    assert inc[0] == 0 and inc[1] > 0  # 0 -> 1 gains nothing, 1 -> 2 the most: not concave from 0
    assert (np.diff(inc[1:]) <= 0).all()  # from n = 1 on, the increments never grow


def test_rollouts_for_confidence_by_hand():
    # p = 1/2: P(n) = 1 - 2^(1-n): .5, .75, .875, .9375 -> the first >= .9 is n = 5.
    # p = 1/4, confidence .5: P(2) = .375, P(3) = 1 - 1/64 - 27/64 = .5625 -> 3.
    # p = 0: never -> the cap.
    assert rollouts_for_confidence([0.5, 0.25, 0.0], 0.9, 16)[0] == 5
    assert rollouts_for_confidence([0.25], 0.5, 16).tolist() == [3]
    assert rollouts_for_confidence([0.0, 0.5], 0.9, 4).tolist() == [4, 4]
    with pytest.raises(ValueError, match="confidence must be in"):
        rollouts_for_confidence([0.5], 0.0, 8)


# ---------------------------------------------------------------- the dynamic programme


def test_choice_knapsack_by_hand():
    # Capacity 5. Item 0: options (value, cost) (0,0) (3,2) (4,4); item 1: (0,0) (2,1) (5,3).
    # Best: item 0 option 1 + item 1 option 2 = 8 at cost 5 (4+2 = 6 would cost 5 too, worse).
    values = [np.array([0.0, 3.0, 4.0]), np.array([0.0, 2.0, 5.0])]
    costs = [np.array([0, 2, 4]), np.array([0, 1, 3])]
    assert solve_choice_knapsack(values, costs, 5).tolist() == [1, 2]
    assert solve_choice_knapsack(values, costs, 0).tolist() == [0, 0]
    assert solve_choice_knapsack(values, costs, 1).tolist() == [0, 1]


def test_choice_knapsack_refuses_bad_input():
    with pytest.raises(ValueError, match="option 0 must cost 0"):
        solve_choice_knapsack([np.array([1.0])], [np.array([1])], 3)
    with pytest.raises(ValueError, match="capacity must be an integer >= 0"):
        solve_choice_knapsack([], [], -1)
    with pytest.raises(ValueError, match="item 0: values and costs must be non-empty"):
        solve_choice_knapsack([np.array([0.0, 1.0])], [np.array([0])], 3)


def _brute_force(p, c, budget, lo, hi):
    best = 0.0
    for ns in itertools.product(range(lo, hi + 1), repeat=len(p)):
        ns = np.array(ns)
        if ns @ c <= budget + 1e-9:
            best = max(best, float(knapsack_value(ns, p).sum()))
    return best


def test_exact_against_brute_force_on_small_cases():
    rng = np.random.default_rng(3)
    for _ in range(150):
        m = int(rng.integers(1, 5))
        p = rng.integers(0, 9, m) / 8.0
        c = rng.integers(1, 6, m).astype(float)
        lo = int(rng.integers(0, 3))
        hi = int(rng.integers(max(lo, 1), 6))
        budget = float(rng.integers(0, 25))
        plan = knapsack_allocate(p, c, budget, lo=lo, hi=hi)
        lo_used = 0 if lo * c.sum() > budget else lo
        assert plan.floor_dropped == (lo_used != lo)
        assert plan.cost <= budget and ((plan.counts >= lo_used) & (plan.counts <= hi)).all()
        assert plan.value == pytest.approx(_brute_force(p, c, budget, lo_used, hi), abs=1e-12)


def test_rounded_units_stay_feasible_and_near_optimal():
    # Real-valued costs and a coarse grid (max_units = 32): rounding, repair and refill keep the plan
    # within budget and close to the optimum.
    rng = np.random.default_rng(5)
    for _ in range(40):
        m = int(rng.integers(2, 5))
        p = rng.integers(1, 8, m) / 8.0
        c = rng.uniform(1.0, 5.0, m)
        budget = float(rng.uniform(10, 40))
        plan = knapsack_allocate(p, c, budget, lo=0, hi=5, max_units=32)
        assert plan.cost <= budget + 1e-9
        assert plan.value >= 0.9 * _brute_force(p, c, budget, 0, 5)


# ---------------------------------------------------------------- allocation, fallback, edge cases

# Pass rates 1/2, 1/4, solved, unsolved. InfoGain: 1/8, 1/4 x 9/16 = 9/64.
P = np.array([0.5, 0.25, 1.0, 0.0])


def test_rollouts_budget_by_hand():
    # Budget 10, floor 2 each (8), 2 left for the two prompts with a value. Increments over n = 2:
    # p = 1/2: V(3) - V(2) = (3/4 - 1/2) / 8 = .03125, then (7/8 - 3/4) / 8 = .015625;
    # p = 1/4: (.5625 - .375) x 9/64 = .026367, then (.6796875 - .5625) x 9/64 = .016479.
    # One each (.057617) beats two to either (.046875, .042847): [3, 3, 2, 2].
    plan = knapsack_allocate(P, np.ones(4), 10, lo=2, hi=4)
    assert plan.counts.tolist() == [3, 3, 2, 2] and plan.cost == 10 and plan.fallback == 0
    assert plan.value == pytest.approx(0.09375 + 0.5625 * 9 / 64)
    # Budget 12: both reach the cap of 4.
    assert knapsack_allocate(P, np.ones(4), 12, lo=2, hi=4).counts.tolist() == [4, 4, 2, 2]


def test_fallback_goes_to_unsolved_prompts_first_then_to_all():
    # Budget 14, cap 4: the valued prompts are full at 8, the floors take 4; 2 left go to the unsolved
    # prompt (3) up to the cap. Budget 15: then 1 more to the rest below the cap, the solved prompt.
    plan = knapsack_allocate(P, np.ones(4), 14, lo=2, hi=4)
    assert plan.counts.tolist() == [4, 4, 2, 4] and plan.fallback == 2
    plan = knapsack_allocate(P, np.ones(4), 15, lo=2, hi=4)
    assert plan.counts.tolist() == [4, 4, 3, 4] and plan.fallback == 3 and plan.cost == 15
    # Everything at the cap: the rest of the budget stays unspent.
    plan = knapsack_allocate(P, np.ones(4), 40, lo=2, hi=4)
    assert plan.counts.tolist() == [4, 4, 4, 4] and plan.cost == 16


def test_confidence_caps_a_solvable_prompt_and_sends_the_rest_to_the_unsolved():
    # p = [1/2, 0], budget 12, floor 2, cap 8. Confidence .9: prompt 0 needs 5 (P(5) = .9375), so it gets
    # 5 and the unsolved prompt the remaining 5 (to 7). Off (1.0): prompt 0 takes all it can use (8), the
    # unsolved one what is left (4).
    p = np.array([0.5, 0.0])
    plan = knapsack_allocate(p, np.ones(2), 12, lo=2, hi=8, confidence=0.9)
    assert plan.counts.tolist() == [5, 7] and plan.fallback == 5
    plan = knapsack_allocate(p, np.ones(2), 12, lo=2, hi=8, confidence=1.0)
    assert plan.counts.tolist() == [8, 4] and plan.fallback == 2


@pytest.mark.parametrize("p", [1.0, 0.0])
def test_every_value_zero_spreads_the_budget_evenly(p):
    # All solved or none solved: no prompt has a value; 10 over 3 prompts in rounds: [4, 3, 3].
    plan = knapsack_allocate(np.full(3, p), np.ones(3), 10, lo=2, hi=8)
    assert plan.counts.tolist() == [4, 3, 3] and plan.value == 0.0 and plan.fallback == 4


def test_budget_below_the_prompt_count_drops_the_floor():
    # 4 prompts at p = 1/2, budget 3, floor 2 (8 > 3): the floor goes to 0 and the best use of 3 rollouts
    # is one prompt at 3 (V = 3/32), not 2 + 1 (1/16 + 0).
    plan = knapsack_allocate(np.full(4, 0.5), np.ones(4), 3, lo=2, hi=8)
    assert plan.counts.tolist() == [3, 0, 0, 0] and plan.floor_dropped and plan.value == 0.09375


def test_token_costs_by_hand():
    # Two prompts at p = 1/2 costing 5 and 2 tokens a rollout, 14 tokens, no floor: V(2) = 1/16,
    # V(4) = 7/64. 2 + 2 rollouts (14 tokens, 1/8) beat 4 of the cheap one (8 tokens, 7/64) + 1 of the
    # other (worth 0) and 2 of the dear one alone.
    plan = knapsack_allocate(np.full(2, 0.5), np.array([5.0, 2.0]), 14, lo=0, hi=4)
    assert plan.counts.tolist() == [2, 2] and plan.cost == 14 and plan.value == 0.125


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"p\[1\] = 1.5 must be in \[0, 1\] \(prompt 1\)"):
        knapsack_allocate([0.5, 1.5], [1, 1], 4, lo=0, hi=2)
    with pytest.raises(ValueError, match=r"cost\[0\] = 0.0 must be finite and > 0"):
        knapsack_allocate([0.5], [0], 4, lo=0, hi=2)
    with pytest.raises(ValueError, match="budget must be finite and >= 0"):
        knapsack_allocate([0.5], [1], -1, lo=0, hi=2)
    with pytest.raises(ValueError, match="bounds must satisfy"):
        knapsack_allocate([0.5], [1], 4, lo=3, hi=2)


def test_a_large_step_spends_its_budget_exactly():
    # m = 1024 prompts, N = 8192 rollouts (the paper's step): one unit per rollout, exact, all spent.
    rng = np.random.default_rng(0)
    p = rng.integers(0, 9, 1024) / 8.0
    plan = knapsack_allocate(p, np.ones(1024), 8192, lo=2, hi=128, confidence=0.9)
    assert plan.counts.sum() == 8192 and plan.counts.min() >= 2


# ---------------------------------------------------------------- the allocator

PROMPTS = [Problem("1+2=", 3, 2), Problem("5-9=", -4, 2), Problem("7+7=", 14, 2), Problem("2-1=", 1, 2)]
SPEC = SamplingSpec(temperature=1.0, max_new_tokens=5)
CFG = AllocationConfig(allocator="knapsack", n_per_prompt=4)


def ctx(budget=None):
    return AllocContext(None, None, SPEC, 0, budget=budget)


def seen(cfg=CFG):
    """An allocator that saw one visit of each prompt: 4 rollouts, accepted [2, 0, 4, 1], tokens
    [40, 12, 20, 100] -> p̂ = [1/2, 0, 1, 1/4], L̂ = [10, 3, 5, 25]."""
    alloc = KnapsackAllocator(cfg)
    alloc.observe(PROMPTS, np.array([4] * 4), np.array([2, 0, 4, 1]), np.array([40, 12, 20, 100]))
    return alloc


def test_unseen_prompts_use_the_prior():
    # All at p = 1/2 (the prior), N = 16, floor 2 (8), confidence .9 caps each at 5. The 8 left take the
    # best increments: 4 x .03125 (n 2 -> 3) then 4 x .015625 (3 -> 4): [4, 4, 4, 4].
    alloc = build_allocator(CFG)
    assert isinstance(alloc, KnapsackAllocator)
    out = alloc.allocate(PROMPTS, ctx())
    assert out.counts.tolist() == [4, 4, 4, 4] and out.p_hat.tolist() == [0.5] * 4
    assert out.probe_rollouts == 0 and out.trained is None
    assert out.stats[M.KNAPSACK_VALUE] == pytest.approx(4 * 0.109375)
    assert out.stats[M.KNAPSACK_UNSEEN_PROMPTS] == 4 and out.stats[M.KNAPSACK_EFFECTIVE_PROMPTS] == 4
    # No history and no token estimate in the step budget: max_new_tokens (5) per rollout.
    assert out.stats[M.KNAPSACK_PLANNED_TOKENS] == 16 * 5 and out.stats[M.KNAPSACK_PLANNED_ROLLOUTS] == 16


def test_carried_estimates_split_the_rollouts_by_hand():
    # p̂ = [1/2, 0, 1, 1/4], N = 16, floor 2 (8 left). Caps at confidence .9: 5 for p = 1/2; 9 for
    # p = 1/4 (P(8) = .89987, P(9) = .92491). The increments are concave from n = 2, so the 8 best win:
    # .03125 (0), .026367 (3), .016479 (3), .015625 (0), .011536 (3), .008446 (3), .0078125 (0),
    # .006283 (3) -> prompt 0 at 5, prompt 3 at 7.
    out = seen().allocate(PROMPTS, ctx())
    assert out.counts.tolist() == [5, 2, 2, 7]
    assert out.p_hat.tolist() == [0.5, 0.0, 1.0, 0.25]
    want = knapsack_value(5, 0.5) + knapsack_value(7, 0.25)
    assert out.stats[M.KNAPSACK_VALUE] == pytest.approx(float(want))
    assert out.stats[M.KNAPSACK_PLANNED_TOKENS] == 5 * 10 + 2 * 3 + 2 * 5 + 7 * 25
    assert out.stats[M.KNAPSACK_FALLBACK_ROLLOUTS] == 0 and out.stats[M.KNAPSACK_UNSEEN_PROMPTS] == 0
    assert out.stats[M.ALLOC_N_MIN] == 2 and out.stats[M.ALLOC_N_MAX] == 7


def test_a_step_budget_of_other_than_m_x_n_rollouts():
    out = seen().allocate(PROMPTS, ctx(StepBudget(10)))
    assert out.counts.sum() == 10 and out.counts.min() >= 2  # 8 on the floors, 2 by value


def test_tokens_mode_plans_against_the_token_budget_by_hand():
    # L̂ = [10, 3, 5, 25]; floors cost 2 x 43 = 86 of 126 tokens, 40 left. Prompt 0 (10 a rollout, up to
    # 3 more) and prompt 3 (25 a rollout): one each (35 tokens, .03125 + .026367) beats three of prompt 0
    # (30 tokens, .0546875). The 5 tokens left buy the unsolved prompt one rollout (3 tokens).
    budget = StepBudget(rollouts=7, tokens=126, tokens_per_rollout=12.0)  # N = 7 is not what binds
    out = seen().allocate(PROMPTS, ctx(budget))
    assert out.counts.tolist() == [3, 3, 2, 3]
    assert out.stats[M.KNAPSACK_PLANNED_TOKENS] == 3 * 10 + 3 * 3 + 2 * 5 + 3 * 25 == 124
    assert out.stats[M.KNAPSACK_FALLBACK_ROLLOUTS] == 1


def test_unseen_length_is_the_runs_mean():
    alloc = seen()
    new = [Problem("9+9=", 18, 2)]
    # The step budget's tokens per rollout when it has one; else the mean over the prompts seen
    # (172 tokens / 16 rollouts); else max_new_tokens.
    assert alloc.estimates(new, ctx(StepBudget(4, 100, 7.5)))[1].tolist() == [7.5]
    assert alloc.estimates(new, ctx())[1].tolist() == [172 / 16]
    assert KnapsackAllocator(CFG).estimates(new, ctx())[1].tolist() == [5.0]


def test_observe_pools_visits_with_decay():
    # decay .5: a visit of 4 rollouts all accepted (40 tokens), then 4 with none (8 tokens):
    # p̂ = (.5 x 4 + 0) / (.5 x 4 + 4) = 1/3, L̂ = (.5 x 40 + 8) / 6 = 14/3. A visit with 0 rollouts
    # changes nothing.
    alloc = KnapsackAllocator(CFG)
    one = PROMPTS[:1]
    alloc.observe(one, np.array([4]), np.array([4]), np.array([40]))
    alloc.observe(one, np.array([4]), np.array([0]), np.array([8]))
    alloc.observe(one, np.array([0]), np.array([0]), np.array([0]))
    p_hat, length, seen_ = alloc.estimates(one, ctx())
    assert p_hat.tolist() == [pytest.approx(1 / 3)] and length.tolist() == [pytest.approx(14 / 3)]
    assert seen_.tolist() == [True]


def test_state_round_trips_through_json():
    alloc = seen()
    again = KnapsackAllocator(CFG)
    again.load_state_dict(json.loads(json.dumps(alloc.state_dict())))
    assert again.allocate(PROMPTS, ctx()).counts.tolist() == [5, 2, 2, 7]
    assert again.state_dict() == alloc.state_dict()
    with pytest.raises(ValueError, match="knapsack: unknown state keys"):
        again.load_state_dict({"estimates": {}})


def test_bounds_follow_the_config():
    assert KnapsackAllocator(CFG).bounds() == (2, 64)  # knapsack_min 2, 16 x n_per_prompt 4
    cfg = AllocationConfig(allocator="knapsack", n_per_prompt=4, min_per_prompt=3, max_per_prompt=6)
    assert KnapsackAllocator(cfg).bounds() == (3, 6)


def test_knapsack_knobs_are_validated():
    with pytest.raises(ConfigError, match="allocation.knapsack_confidence"):
        validate_dict({"allocation": {"allocator": "knapsack", "knapsack_confidence": 0.0}})
    with pytest.raises(ConfigError, match="allocation.knapsack_decay"):
        validate_dict({"allocation": {"allocator": "knapsack", "knapsack_decay": 1.5}})
