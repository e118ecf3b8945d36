"""The greso allocator (docs/method.md §8): the keep probability and the split over the kept prompts on
hand-derived values, streaks from observed groups, the adaptive exploration probabilities, the edge cases
(every prompt skipped, bounds, tokens mode), its state and its determinism under a seed."""

import json

import numpy as np
import pytest

from dibs.algorithms.greso import keep_probability, kept_split
from dibs.platform.allocation.allocators import AllocContext, StepBudget
from dibs.platform.allocation.factory import build_allocator
from dibs.platform.allocation.greso import GresoAllocator
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig
from dibs.platform.tasks.base import Problem

pytestmark = pytest.mark.unit

# ---------------------------------------------------------------- the arithmetic (algorithms/greso.py)


def test_keep_probability_by_hand():
    # 0.5^z with a floor of 0.05: 1, 0.5, 0.25, 0.125, then 0.5^10 ~ 0.001 is floored.
    assert keep_probability(np.array([0, 1, 2, 3, 10]), 0.5, 0.05).tolist() == [1, 0.5, 0.25, 0.125, 0.05]
    # Per-prompt exploration (all-accepted vs all-rejected streaks); a streak of 0 keeps even at floor 0.
    assert keep_probability(np.array([2, 2, 0]), np.array([0.5, 0.9, 0.1]), 0.0).tolist() == [0.25, 0.81, 1]


def test_keep_probability_names_bad_input():
    with pytest.raises(ValueError, match="streak must be"):
        keep_probability(np.array([1.5]), 0.5, 0.1)
    with pytest.raises(ValueError, match=r"explore\[1\] = 0.0 must be in \(0, 1\]"):
        keep_probability(np.array([1, 1]), np.array([0.5, 0.0]), 0.1)
    with pytest.raises(ValueError, match="floor must be in"):
        keep_probability(np.array([1]), 0.5, 1.5)


def test_kept_split_by_hand():
    prio = np.array([0.1, 0.5, 0.5, 0.2])
    counts, kept = kept_split([True, False, True, False], prio, 10)
    assert counts.tolist() == [5, 0, 5, 0] and kept.tolist() == [True, False, True, False]
    assert kept_split([True, False, True, False], prio, 11)[0].tolist() == [6, 0, 5, 0]  # remainder first
    # Nothing kept: the highest priority (shortest streak) comes back, ties to the lower index.
    counts, kept = kept_split([False] * 4, prio, 8)
    assert counts.tolist() == [0, 8, 0, 0] and kept.tolist() == [False, True, False, False]
    # The floor goes to every prompt, skipped or not; the rest to the kept ones.
    assert kept_split([True, False, False, False], prio, 10, min_per_prompt=1)[0].tolist() == [7, 1, 1, 1]
    # A cap of 4: 10 needs 3 prompts, so the two best skipped ones (1, then 2 on the tie) come back.
    counts, kept = kept_split([True, False, False, False], prio, 10, max_per_prompt=4)
    assert counts.tolist() == [4, 3, 3, 0] and kept.tolist() == [True, True, True, False]
    # A budget below the kept prompts: one rollout each to the first ones, as uniform does.
    assert kept_split([True] * 4, prio, 3)[0].tolist() == [1, 1, 1, 0]
    assert kept_split([False] * 3, prio[:3], 0)[0].tolist() == [0, 0, 0]


def test_kept_split_names_impossible_bounds():
    with pytest.raises(ValueError, match="min_per_prompt=3 cannot be met"):
        kept_split([True, True], [1.0, 1.0], 5, min_per_prompt=3)
    with pytest.raises(ValueError, match="max_per_prompt=2 cannot be met"):
        kept_split([True, True], [1.0, 1.0], 5, max_per_prompt=2)


# ---------------------------------------------------------------- the allocator (platform/allocation)

NAMES = ["1+2=", "5-9=", "7+7=", "2-1=", "3+3="]
PROMPTS = [Problem(name, 0, 2) for name in NAMES]
NONE = np.zeros(5, dtype=np.int64)


def config(**kw):
    return AllocationConfig(allocator="greso", n_per_prompt=4, **kw)


def ctx(seed=3, budget=None):
    return AllocContext(None, None, None, seed, budget=budget)


def test_unseen_prompts_are_all_kept():
    alloc = build_allocator(config()).allocate(PROMPTS, ctx())
    assert alloc.counts.tolist() == [4] * 5 and alloc.p_hat is None and alloc.probe_rollouts == 0
    assert alloc.stats[M.ALLOC_GRESO_SKIPPED] == 0 and alloc.stats[M.ALLOC_GRESO_MEAN_STREAK] == 0
    assert alloc.stats[M.ALLOC_GRESO_P_EASY] == alloc.stats[M.ALLOC_GRESO_P_HARD] == 0.5


def test_streaks_follow_the_groups():
    greso = GresoAllocator(config())
    # All accepted, all rejected, mixed, a single rollout (says nothing), not generated.
    greso.observe(PROMPTS, np.array([4, 4, 4, 1, 0]), np.array([4, 0, 2, 1, 0]), NONE)
    assert greso.streaks == {"1+2=": 1, "5-9=": -1, "7+7=": 0}
    greso.observe(PROMPTS, np.array([3, 4, 4, 4, 0]), np.array([3, 0, 0, 4, 0]), NONE)
    assert greso.streaks == {"1+2=": 2, "5-9=": -2, "7+7=": -1, "2-1=": 1}
    greso.observe(PROMPTS, np.array([4, 2, 1, 4, 0]), np.array([0, 1, 0, 3, 0]), NONE)
    # 1+2= turns all-rejected: a new streak of the other kind; 7+7='s single rollout leaves it.
    assert greso.streaks == {"1+2=": -1, "5-9=": 0, "7+7=": -1, "2-1=": 0}


def test_keep_is_drawn_from_the_seeded_generator():
    greso = GresoAllocator(config(greso_explore=0.5, greso_floor=0.0))
    greso.load_state_dict({"streaks": {"1+2=": 1, "5-9=": -2, "7+7=": 3, "2-1=": 0}})
    out = greso.allocate(PROMPTS, ctx(seed=12345))
    u = np.random.default_rng(12345).random(5)
    kept = u < np.array([0.5, 0.25, 0.125, 1.0, 1.0])
    assert out.counts.tolist() == kept_split(kept, np.ones(5), 20)[0].tolist()
    assert out.stats[M.ALLOC_GRESO_SKIPPED] == 5 - kept.sum()
    assert out.stats[M.ALLOC_GRESO_STREAK_PROMPTS] == 3 and out.stats[M.ALLOC_GRESO_MEAN_STREAK] == 6 / 5
    # Same state, same seed: the same draw (a resumed run decides as the straight one).
    again = GresoAllocator(config(greso_explore=0.5, greso_floor=0.0))
    again.load_state_dict(json.loads(json.dumps(greso.state_dict())))
    assert again.allocate(PROMPTS, ctx(seed=12345)).counts.tolist() == out.counts.tolist()


def test_long_streaks_are_skipped_and_the_budget_moves():
    # p_e = 1e-6: any streak is skipped (keep probability 1e-6 at best), whatever the draw.
    greso = GresoAllocator(config(greso_explore=1e-6, greso_floor=0.0))
    greso.load_state_dict({"streaks": {"1+2=": 2, "5-9=": -1}})
    out = greso.allocate(PROMPTS, ctx())
    assert out.counts.tolist() == [0, 0, 7, 7, 6]  # N = 20 over the three kept
    assert out.stats[M.ALLOC_GRESO_SKIPPED] == 2 and out.stats[M.ALLOC_ZERO_PROMPTS] == 2
    assert out.stats[M.ALLOC_GRESO_SKIPPED_EASY] == 1 and out.stats[M.ALLOC_GRESO_SKIPPED_HARD] == 1
    assert out.stats[M.ALLOC_GRESO_KEPT_BACK] == 0
    # A floor of 1 rollout still goes to the skipped prompts.
    floored = GresoAllocator(config(greso_explore=1e-6, greso_floor=0.0, min_per_prompt=1))
    floored.load_state_dict(greso.state_dict())
    assert floored.allocate(PROMPTS, ctx()).counts.tolist() == [1, 1, 6, 6, 6]


def test_every_prompt_skipped_keeps_the_shortest_streak():
    # Every prompt solved or failed for a while: the one most likely kept (streak 1) takes the budget.
    greso = GresoAllocator(config(greso_explore=1e-3, greso_floor=0.0))
    greso.load_state_dict({"streaks": {"1+2=": 3, "5-9=": -2, "7+7=": 2, "2-1=": -1, "3+3=": 4}})
    out = greso.allocate(PROMPTS, ctx())
    assert out.counts.tolist() == [0, 0, 0, 20, 0]
    assert out.stats[M.ALLOC_GRESO_KEPT_BACK] == 1 and out.stats[M.ALLOC_GRESO_SKIPPED] == 4


def test_tokens_mode_spends_the_planned_rollouts():
    greso = GresoAllocator(config(greso_explore=1e-6, greso_floor=0.0))
    greso.load_state_dict({"streaks": {"1+2=": 1}})
    out = greso.allocate(PROMPTS, ctx(budget=StepBudget(9, 900, 100.0)))  # N = 9, not 5 x 4
    assert out.counts.tolist() == [0, 3, 2, 2, 2]


def test_exploration_adapts_toward_the_target():
    greso = GresoAllocator(config(greso_explore=0.5, greso_target=0.3, greso_adapt_step=0.1))
    groups = np.array([4, 4, 4, 0, 0])
    # First step: no prompt seen before, nothing the filter could act on: no change.
    greso.observe(PROMPTS, groups, np.array([4, 0, 0, 0, 0]), NONE)
    assert (greso.p_easy, greso.p_hard) == (0.5, 0.5)
    # 1 of 3 groups all accepted (>= 0.3 / 3): p_easy down; 2 of 3 all rejected (>= 0.3 x 2/3): p_hard down.
    greso.observe(PROMPTS, groups, np.array([4, 0, 0, 0, 0]), NONE)
    assert (greso.p_easy, greso.p_hard) == pytest.approx((0.4, 0.4))
    # No zero-variance group: both up.
    greso.observe(PROMPTS, groups, np.array([2, 1, 3, 0, 0]), NONE)
    assert (greso.p_easy, greso.p_hard) == pytest.approx((0.5, 0.5))
    greso.p_easy = greso.p_hard = 0.92
    greso.observe(PROMPTS, groups, np.array([2, 1, 3, 0, 0]), NONE)
    assert (greso.p_easy, greso.p_hard) == (0.95, 0.95)  # within [0.05, 0.95]
    state = json.loads(json.dumps(greso.state_dict()))
    restored = GresoAllocator(config())
    restored.load_state_dict(state)
    assert (restored.streaks, restored.p_easy, restored.p_hard) == (greso.streaks, 0.95, 0.95)
    fixed = GresoAllocator(config(greso_target=None))
    for _ in range(2):
        fixed.observe(PROMPTS, groups, np.array([4, 0, 0, 0, 0]), NONE)
    assert (fixed.p_easy, fixed.p_hard) == (0.5, 0.5)
