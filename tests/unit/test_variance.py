"""The variance allocator (docs/method.md §8): the Beta moments and the probability that a group is
informative on hand-derived values, the exact integer split against brute force and on its edge cases, and
the allocator's posterior updates, state and budget modes."""

import itertools
import json
from fractions import Fraction as F

import numpy as np
import pytest

from dibs.algorithms.informative import (
    beta_power_means,
    expected_informative,
    informative_allocation,
    informative_gains,
    informative_table,
)
from dibs.platform.allocation.allocators import AllocContext, StepBudget
from dibs.platform.allocation.factory import build_allocator
from dibs.platform.allocation.variance import VarianceAllocator
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig
from dibs.platform.tasks.base import Problem

pytestmark = pytest.mark.unit


def close(values, expected):
    return np.allclose(np.asarray(values, dtype=float), [float(e) for e in expected], rtol=0, atol=1e-12)


# ---------------------------------------------------------------- the arithmetic (algorithms/informative.py)


def test_beta_power_means_closed_form():
    # Beta(3, 1): E[p^n] = 3 / (n + 3), E[(1-p)^n] = n! 3! / (n + 3)! = 6 / ((n+1)(n+2)(n+3)).
    ep, eq = beta_power_means([3.0], [1.0], 4)
    assert close(ep[0], [F(3, n + 3) for n in range(5)])
    assert close(eq[0], [F(6, (n + 1) * (n + 2) * (n + 3)) for n in range(5)])


def test_mixed_probability_by_hand():
    # Uniform prior: E[p^n] = E[(1-p)^n] = 1 / (n + 1), so f(n) = 1 - 2 / (n + 1) = (n - 1) / (n + 1).
    assert close(informative_table([1.0], [1.0], 5)[0], [0, 0, F(1, 3), F(1, 2), F(3, 5), F(2, 3)])
    # Beta(3, 1): f(2) = 1 - 3/5 - 6/60 = 0.3 = 2 E[p(1-p)] = 2 * 3 / (4 * 5); f(4) = 1 - 3/7 - 1/35 = 19/35.
    f = informative_table([3.0], [1.0], 4)[0]
    assert close(f, [0, 0, F(3, 10), F(9, 20), F(19, 35)])
    assert close(
        f[1:], 1 - beta_power_means([3.0], [1.0], 4)[0][0][1:] - beta_power_means([3.0], [1.0], 4)[1][0][1:]
    )


def test_positive_probability_by_hand():
    # g(n) = 1 - E[(1-p)^n]: uniform prior n / (n + 1); Beta(1, 9): 1 - 9 / (9 + n) = n / (9 + n).
    assert close(informative_table([1.0], [1.0], 3, "positive")[0], [0, F(1, 2), F(2, 3), F(3, 4)])
    assert close(informative_table([1.0], [9.0], 3, "positive")[0], [0, F(1, 10), F(2, 11), F(3, 12)])


def test_gains_do_not_increase_after_the_first_useless_rollout():
    a = np.array([0.3, 1.0, 5.0, 200.0, 0.5])
    b = np.array([0.3, 7.0, 5.0, 0.4, 300.0])
    mixed = informative_gains(a, b, 40)
    assert (mixed[:, 0] == 0).all() and (np.diff(mixed[:, 1:], axis=1) <= 0).all() and (mixed >= 0).all()
    positive = informative_gains(a, b, 40, "positive")
    assert (np.diff(positive, axis=1) <= 0).all()
    assert close(positive[:, 0], a / (a + b))  # the first rollout is accepted with probability E[p]


def test_expected_informative_reads_the_table():
    assert close(expected_informative([1.0, 3.0], [1.0, 1.0], [3, 2]), [F(1, 2), F(3, 10)])
    with pytest.raises(ValueError, match="counts must be"):
        expected_informative([1.0], [1.0], [-1])


def test_allocation_by_hand():
    # A: Beta(1, 1), f_A(n) = (n-1)/(n+1); B: Beta(1, 9) (mostly failed), f_B(2) = 2*9/(10*11) = 9/55,
    # f_B(3) = 27/110. N = 6: (6,0) 5/7, (4,2) 3/5 + 9/55 = 42/55, (3,3) 1/2 + 27/110 = 41/55, (2,4) ~0.64.
    counts = informative_allocation([1.0, 1.0], [1.0, 9.0], 6)
    assert counts.tolist() == [4, 2] and counts.dtype == np.int64
    assert close([expected_informative([1.0, 1.0], [1.0, 9.0], counts).sum()], [F(42, 55)])
    # N = 4: (4,0) 3/5 beats (2,2) 1/3 + 9/55 and (3,1) 1/2.
    assert informative_allocation([1.0, 1.0], [1.0, 9.0], 4).tolist() == [4, 0]
    # RAFT++'s objective, g_A = n/(n+1), g_B = n/(9+n): (3,3) 3/4 + 3/12 = 1 beats (4,2) 4/5 + 2/11.
    assert informative_allocation([1.0, 1.0], [1.0, 9.0], 6, objective="positive").tolist() == [3, 3]
    # A cap of 3 leaves (3, 3).
    assert informative_allocation([1.0, 1.0], [1.0, 9.0], 6, max_per_prompt=3).tolist() == [3, 3]


def test_the_split_a_greedy_would_leave_is_repaired():
    # Three equal prompts, N = 7: the relaxed greedy gives (3, 3, 1), a wasted rollout; f(3) = 3 E[p(1-p)]
    # = 3r and f(2) = 2r, so (3, 2, 2) reaches 7r = 7/6 with the uniform prior.
    counts = informative_allocation([1.0] * 3, [1.0] * 3, 7)
    assert counts.tolist() == [3, 2, 2]
    assert close([expected_informative([1.0] * 3, [1.0] * 3, counts).sum()], [F(7, 6)])


def brute_force(a, b, total, objective, lo, hi):
    hi = total if hi is None else hi
    table = informative_table(a, b, max(hi, 1), objective)
    return max(
        table[np.arange(len(a)), list(n)].sum()
        for n in itertools.product(range(lo, hi + 1), repeat=len(a))
        if sum(n) == total
    )


def test_allocation_is_optimal_against_brute_force():
    rng = np.random.default_rng(0)
    checked = 0
    for case in range(400):
        m, total = int(rng.integers(1, 5)), int(rng.integers(0, 10))
        objective = "positive" if case % 4 == 3 else "mixed"
        lo = int(rng.integers(0, 3)) if case % 3 == 0 else 0
        hi = int(rng.integers(2, 6)) if case % 5 == 0 else None
        if lo * m > total or (hi is not None and hi * m < total):
            continue
        if case % 2:  # equal and extreme posteriors: ties and near-zero gains
            a, b = rng.choice([0.5, 1.0, 30.0], m), rng.choice([0.5, 1.0, 30.0], m)
        else:
            a, b = rng.uniform(0.2, 6.0, m), rng.uniform(0.2, 6.0, m)
        counts = informative_allocation(
            a, b, total, objective=objective, min_per_prompt=lo, max_per_prompt=hi
        )
        assert counts.sum() == total and (counts >= lo).all() and (hi is None or (counts <= hi).all())
        got = expected_informative(a, b, counts, objective).sum()
        assert got >= brute_force(a, b, total, objective, lo, hi) - 1e-12, (a, b, total, lo, hi, counts)
        checked += 1
    assert checked > 250


def test_equal_posteriors_split_evenly_solved_or_not():
    # Every prompt solved (posterior near 1) or none: the gains are tiny but the budget is spent, and
    # equal posteriors get the even split (ties go round-robin).
    for a, b in ((50.0, 1.0), (1.0, 50.0)):
        assert informative_allocation([a] * 4, [b] * 4, 16).tolist() == [4] * 4
        assert informative_allocation([a] * 4, [b] * 4, 10).tolist() == [3, 3, 2, 2]


def test_budget_below_the_prompts():
    # N < m: a group of one is never informative, so N = 3 goes to one group of 3, N = 5 to (3, 2).
    assert informative_allocation([1.0] * 4, [1.0] * 4, 3).tolist() == [3, 0, 0, 0]
    assert informative_allocation([1.0] * 4, [1.0] * 4, 5).tolist() == [3, 2, 0, 0]
    assert informative_allocation([1.0] * 4, [1.0] * 4, 1).tolist() == [1, 0, 0, 0]  # nothing better
    assert informative_allocation([1.0] * 2, [1.0] * 2, 0).tolist() == [0, 0]
    assert informative_allocation([], [], 0).tolist() == []
    # A floor of one: the rest goes to the prompt that gains most from its second rollout, the first.
    assert informative_allocation([1.0] * 4, [1.0] * 4, 5, min_per_prompt=1).tolist() == [2, 1, 1, 1]


def test_a_large_budget_is_spent_past_the_first_width():
    # One uncertain prompt among solved ones: it takes far more than twice the mean share.
    a, b = np.array([1.0] + [400.0] * 7), np.array([1.0] + [0.5] * 7)
    counts = informative_allocation(a, b, 64)
    assert counts.sum() == 64 and counts[0] > 2 * 64 // 8 + 2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"b\[1\] = 0.0 must be finite and > 0 \(prompt 1\)"):
        informative_allocation([1.0, 1.0], [1.0, 0.0], 4)
    with pytest.raises(ValueError, match="min_per_prompt=3 cannot be met"):
        informative_allocation([1.0, 1.0], [1.0, 1.0], 4, min_per_prompt=3)
    with pytest.raises(ValueError, match="max_per_prompt=1 cannot be met"):
        informative_allocation([1.0, 1.0], [1.0, 1.0], 4, max_per_prompt=1)
    with pytest.raises(ValueError, match="objective must be one of"):
        informative_allocation([1.0], [1.0], 4, objective="variance")


# ---------------------------------------------------------------- the allocator (platform/allocation)

PROMPTS = [Problem("1+2=", 3, 2), Problem("5-9=", -4, 2), Problem("7+7=", 14, 2)]


def ctx(budget=None, seed=11):
    return AllocContext(None, None, None, seed, budget=budget)


def test_unseen_prompts_split_evenly_with_their_prior():
    alloc = build_allocator(AllocationConfig(allocator="variance", n_per_prompt=4)).allocate(PROMPTS, ctx())
    assert alloc.counts.tolist() == [4, 4, 4] and alloc.p_hat.tolist() == [0.5] * 3
    assert (alloc.probe_rollouts, alloc.g_hat, alloc.probed, alloc.trained) == (0, None, None, None)
    # f(4) = 3/5 under the uniform prior, for each of 3 prompts.
    assert alloc.stats[M.ALLOC_VARIANCE_EXPECTED] == pytest.approx(1.8)
    assert alloc.stats[M.ALLOC_VARIANCE_UNIFORM] == pytest.approx(1.8)
    assert alloc.stats[M.ALLOC_VARIANCE_SEEN] == 0 and alloc.stats[M.ALLOC_VARIANCE_EVIDENCE] == 0
    assert alloc.stats[M.ALLOC_VARIANCE_P_MEAN] == 0.5


def test_observe_updates_the_posterior_with_decay():
    alloc = VarianceAllocator(AllocationConfig(allocator="variance", variance_prior=1.0, variance_decay=0.5))
    alloc.observe(PROMPTS, np.array([4, 0, 2]), np.array([3, 0, 0]), np.zeros(3, dtype=np.int64))
    assert alloc.posterior == {"1+2=": (4.0, 2.0), "7+7=": (1.0, 3.0)}  # 5-9= had no rollouts: no visit
    # Second visit of 1+2=: a = 1 + 0.5 (4 - 1) + 2 = 4.5, b = 1 + 0.5 (2 - 1) + 0 = 1.5.
    alloc.observe(PROMPTS[:1], np.array([2]), np.array([2]), np.zeros(1, dtype=np.int64))
    assert alloc.posterior["1+2="] == (4.5, 1.5)


def test_the_posterior_moves_the_budget_in_tokens_mode():
    cfg = AllocationConfig(allocator="variance", n_per_prompt=4)
    alloc = VarianceAllocator(cfg)
    alloc.load_state_dict(json.loads(json.dumps({"posterior": {"1+2=": [1, 1], "5-9=": [1, 9]}})))
    # N = 6, not 2 x 4: the hand-derived (4, 2) of test_allocation_by_hand.
    out = alloc.allocate(PROMPTS[:2], ctx(StepBudget(6, 600, 100.0)))
    assert out.counts.tolist() == [4, 2] and out.p_hat.tolist() == [0.5, 0.1]
    assert out.stats[M.ALLOC_VARIANCE_EXPECTED] == pytest.approx(42 / 55)
    assert out.stats[M.ALLOC_VARIANCE_UNIFORM] == pytest.approx(41 / 55)  # (3, 3)
    assert out.stats[M.ALLOC_VARIANCE_EVIDENCE] == pytest.approx(4.0)  # (0 + 8) / 2
    assert out.stats[M.ALLOC_N_MIN] == 2 and out.stats[M.ALLOC_ZERO_PROMPTS] == 0
    positive = VarianceAllocator(cfg.model_copy(update={"variance_objective": "positive"}))
    positive.load_state_dict(alloc.state_dict())
    assert positive.allocate(PROMPTS[:2], ctx(StepBudget(6, 600, 100.0))).counts.tolist() == [3, 3]


def test_state_round_trips_and_decides_the_same():
    cfg = AllocationConfig(allocator="variance", n_per_prompt=4, variance_decay=0.8, min_per_prompt=1)
    alloc = VarianceAllocator(cfg)
    alloc.observe(PROMPTS, np.array([4, 4, 4]), np.array([4, 0, 1]), np.zeros(3, dtype=np.int64))
    restored = VarianceAllocator(cfg)
    restored.load_state_dict(json.loads(json.dumps(alloc.state_dict())))
    assert restored.posterior == alloc.posterior
    a, b = alloc.allocate(PROMPTS, ctx()), restored.allocate(PROMPTS, ctx(seed=99))  # no randomness
    assert a.counts.tolist() == b.counts.tolist() and a.p_hat.tolist() == b.p_hat.tolist()
    assert a.counts.min() >= 1 and a.counts.sum() == 12
