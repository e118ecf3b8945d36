"""Rollout budgets as a knapsack (Knapsack RL, arXiv 2509.25849; docs/method.md §8, knapsack).

Pure numpy. Each prompt i is an item: n rollouts of it cost n * c_i (c_i = 1 when the budget counts
rollouts, its expected response tokens when it counts tokens) and are worth the paper's task value

    Value(n, p) = P(nonzero gradient | n, p) * InfoGain(p),
    P(nonzero gradient | n, p) = 1 - p^n - (1 - p)^n,   InfoGain(p) = p (1 - p)^2,

p the prompt's pass rate: a GRPO group has a gradient only when it holds both outcomes, and InfoGain is
the paper's estimate of what one update on the prompt raises its pass rate by. `knapsack_allocate`
maximises Σ Value(n_i, p_i) subject to Σ n_i c_i <= budget and lo <= n_i <= hi, exactly by dynamic
programming over integer cost units (`solve_choice_knapsack`), then spends what the values leave over
(`spread`).

Value(n, p) is 0 at n = 0 and n = 1 and rises at n = 2, so it is not concave from 0 and a greedy on
marginal value per cost could stop short of opening a prompt; the dynamic programme needs no
concavity.
"""

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


def nonzero_grad_prob(n: ArrayLike, p: ArrayLike) -> np.ndarray:
    """P(a group of n samples with pass rate p holds both a success and a failure) = 1 - p^n - (1-p)^n.

    0 for n < 2 (the formula gives -1 at n = 0 and 0 at n = 1; float noise is clipped), and 0 at p = 0
    or 1. Broadcasts n against p."""
    n = np.asarray(n, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    prob = 1.0 - p**n - (1.0 - p) ** n
    return np.where(n >= 2, np.clip(prob, 0.0, 1.0), 0.0)


def info_gain(p: ArrayLike) -> np.ndarray:
    """The paper's InfoGain(p) = p (1 - p)^2: 0 at p = 0 and 1, largest (4/27) at p = 1/3."""
    p = np.asarray(p, dtype=np.float64)
    return p * (1.0 - p) ** 2


def knapsack_value(n: ArrayLike, p: ArrayLike) -> np.ndarray:
    """Value(n, p) = nonzero_grad_prob(n, p) * info_gain(p), the worth of n rollouts of a prompt."""
    return nonzero_grad_prob(n, p) * info_gain(p)


def rollouts_for_confidence(p: ArrayLike, confidence: float, cap: int) -> np.ndarray:
    """[m] int64: the fewest n in [2, cap] with nonzero_grad_prob(n, p_i) >= confidence; `cap` where no
    n up to it reaches the confidence (always for p in {0, 1}, or confidence = 1)."""
    if not 0 < confidence <= 1:
        raise ValueError(f"confidence must be in (0, 1], got {confidence}")
    p = np.asarray(p, dtype=np.float64)
    if cap < 2:
        return np.full(p.shape, cap, dtype=np.int64)
    ns = np.arange(2, cap + 1)
    reached = nonzero_grad_prob(ns[None, :], p[:, None]) >= confidence
    return np.where(reached.any(1), ns[reached.argmax(1)], cap).astype(np.int64)


def solve_choice_knapsack(values: list[np.ndarray], costs: list[np.ndarray], capacity: int) -> np.ndarray:
    """Exact multiple-choice knapsack: item i takes one option k, worth values[i][k] at integer cost
    costs[i][k] >= 0, so that the total value is largest with total cost <= capacity.

    Option 0 of every item must cost 0 (so some choice always fits). Dynamic programming over cost
    units: O(capacity x Σ_i options_i) time, m x (capacity + 1) choice indices of memory. Ties go to
    the lower option (fewer rollouts), earlier items first.

    Returns:
        [m] int64 option indices.
    """
    if len(values) != len(costs):
        raise ValueError(f"values and costs must list the same items, got {len(values)} and {len(costs)}")
    if capacity < 0 or int(capacity) != capacity:
        raise ValueError(f"capacity must be an integer >= 0, got {capacity}")
    capacity = int(capacity)
    m = len(values)
    dp = np.zeros(capacity + 1)  # best value of the items so far with at most w units, w = index
    widest = max((len(v) for v in values), default=1)
    choice = np.zeros((m, capacity + 1), dtype=np.int16 if widest <= 2**15 else np.int32)  # memory
    for i, (v, c) in enumerate(zip(values, costs, strict=True)):
        v, c = np.asarray(v, dtype=np.float64), np.asarray(c, dtype=np.int64)
        if v.shape != c.shape or v.ndim != 1 or v.size == 0:
            raise ValueError(f"item {i}: values and costs must be non-empty [k] arrays of one length")
        if c[0] != 0 or (c < 0).any():
            raise ValueError(f"item {i}: option 0 must cost 0 and no option may cost < 0, got {c.tolist()}")
        best = dp + v[0]
        for k in range(1, v.size):
            w = int(c[k])
            if w > capacity:
                continue
            cand = dp[: capacity + 1 - w] + v[k]
            better = cand > best[w:]
            best[w:][better] = cand[better]
            choice[i, w:][better] = k
        dp = best
    picked = np.zeros(m, dtype=np.int64)
    w = capacity
    for i in range(m - 1, -1, -1):
        picked[i] = choice[i, w]
        w -= int(np.asarray(costs[i])[picked[i]])
    return picked


@dataclass(frozen=True)
class KnapsackPlan:
    """What `knapsack_allocate` decided: the counts, their total value and cost, and how many of the
    rollouts the fallback placed (spent where the estimated values are 0)."""

    counts: np.ndarray  # [m] int64
    value: float  # Σ Value(n_i, p_i)
    cost: float  # Σ n_i c_i
    fallback: int  # rollouts `spread` placed after the values were maximised
    floor_dropped: bool  # the floor lo did not fit the budget and was lowered to 0


def _validated(
    rates: ArrayLike, cost: ArrayLike, budget: float, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(rates, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if p.ndim != 1 or c.shape != p.shape:
        raise ValueError(f"p and cost must both have shape [m], got {p.shape} and {c.shape}")
    bad = np.flatnonzero(~np.isfinite(p) | (p < 0) | (p > 1))
    if bad.size:
        raise ValueError(f"p[{bad[0]}] = {p[bad[0]]} must be in [0, 1] (prompt {bad[0]})")
    bad = np.flatnonzero(~np.isfinite(c) | (c <= 0))
    if bad.size:
        raise ValueError(f"cost[{bad[0]}] = {c[bad[0]]} must be finite and > 0 (prompt {bad[0]})")
    if not (math.isfinite(budget) and budget >= 0):
        raise ValueError(f"budget must be finite and >= 0, got {budget}")
    if not 0 <= lo <= hi or hi < 1:
        raise ValueError(f"bounds must satisfy 0 <= lo <= hi and hi >= 1, got lo={lo}, hi={hi}")
    return p, c


def knapsack_allocate(
    p: ArrayLike,
    cost: ArrayLike,
    budget: float,
    *,
    lo: int,
    hi: int,
    confidence: float = 1.0,
    max_units: int = 8192,
) -> KnapsackPlan:
    """Rollouts per prompt maximising Σ Value(n_i, p_i) with Σ n_i c_i <= budget, lo <= n_i <= hi.

    1. Floor: every prompt gets lo; when Σ lo c_i exceeds the budget the floor is lowered to 0.
    2. Knapsack: prompts with 0 < p_i < 1 (the others are worth 0 at any n) choose n_i in [lo, hi_i],
       hi_i = min(hi, the fewest rollouts that see both outcomes with probability `confidence`) (the
       authors' fallback: a prompt gets what it needs to yield a gradient, the rest goes to prompts
       nobody solved; confidence = 1 is off), exactly by `solve_choice_knapsack` over the budget left
       by the floor. Integer costs and a budget of at most `max_units` are exact (one unit = one
       rollout or token); otherwise the budget is cut into `max_units` units, each option's cost is
       rounded to the nearest unit, and the plan is repaired with the real costs (the rollout whose
       removal loses least value per cost goes while over budget; the best value per cost is added
       while one fits).
    3. Fallback: what is left goes, one rollout per prompt per round, first to prompts with p_i = 0
       (never solved: more samples may find a first success, as the paper's fallback), then to all
       prompts, up to hi, while a rollout fits (`spread`).

    Args:
        p: [m] pass rates in [0, 1].  cost: [m] cost of one rollout of each prompt, > 0.
        budget: total cost allowed, >= 0.  lo, hi: bounds on each count, 0 <= lo <= hi, hi >= 1.
        confidence: in (0, 1].  max_units: the dynamic programme's largest capacity.

    Returns:
        KnapsackPlan; its counts never cost more than the budget. ValueError names a bad input.
    """
    rates, c = _validated(p, cost, budget, lo, hi)
    floor_dropped = bool(lo * c.sum() > budget)
    lo = 0 if floor_dropped else lo
    counts = np.full(rates.shape, lo, dtype=np.int64)
    effective = np.flatnonzero((rates > 0) & (rates < 1))
    caps = np.full(effective.size, hi, dtype=np.int64)
    if confidence < 1:  # P(nonzero gradient) < 1 for every n, though float rounding reaches 1 near n = 54
        caps = np.maximum(rollouts_for_confidence(rates[effective], confidence, hi), lo)
    left = budget - lo * c.sum()
    counts[effective] += _solve(rates[effective], c[effective], left, lo, caps, max_units)
    hi_eff = np.full(rates.shape, lo, dtype=np.int64)
    hi_eff[effective] = caps
    _repair(counts, rates, c, budget, lo, hi_eff)
    planned = counts.copy()
    left = budget - float(counts @ c)
    left = spread(counts, c, left, rates == 0, hi)
    spread(counts, c, left, np.ones(rates.shape, dtype=bool), hi)
    return KnapsackPlan(
        counts,
        float(knapsack_value(counts, rates).sum()),
        float(counts @ c),
        int((counts - planned).sum()),
        floor_dropped,
    )


def _solve(
    p: np.ndarray, c: np.ndarray, left: float, lo: int, caps: np.ndarray, max_units: int
) -> np.ndarray:
    """[k] extra rollouts above lo for the prompts with a value, by the exact dynamic programme over
    `left` budget in integer units (exact when costs and budget are integers and fit max_units)."""
    if p.size == 0 or left <= 0:
        return np.zeros(p.size, dtype=np.int64)
    exact = bool(np.all(c == np.round(c))) and left <= max_units
    unit = 1.0 if exact else left / max_units
    capacity = int(math.floor(left + 1e-9)) if exact else max_units
    values, costs = [], []
    for pi, ci, cap in zip(p, c, caps, strict=True):
        extra = np.arange(0, int(cap) - lo + 1)
        values.append(knapsack_value(lo + extra, pi))
        costs.append(np.round(extra * ci / unit).astype(np.int64))
    return solve_choice_knapsack(values, costs, capacity)


def _repair(counts: np.ndarray, p: np.ndarray, c: np.ndarray, budget: float, lo: int, hi: np.ndarray) -> None:
    """In place, with real costs: while over budget, drop the rollout that loses least value per cost;
    then add the rollout with the best value per cost while one fits (rounded units only)."""
    for _ in range(int(hi.sum()) + 1):  # each pass moves one rollout; bounded for safety
        over = float(counts @ c) - budget
        if over <= 1e-9:
            break
        can = np.flatnonzero(counts > lo)
        loss = (knapsack_value(counts[can], p[can]) - knapsack_value(counts[can] - 1, p[can])) / c[can]
        counts[can[np.argmin(loss)]] -= 1
    for _ in range(int(hi.sum()) + 1):
        left = budget - float(counts @ c)
        can = np.flatnonzero((counts < hi) & (c <= left + 1e-9))
        gain = (knapsack_value(counts[can] + 1, p[can]) - knapsack_value(counts[can], p[can])) / c[can]
        if can.size == 0 or gain.max() <= 0:
            break
        counts[can[np.argmax(gain)]] += 1


def spread(counts: np.ndarray, cost: np.ndarray, left: float, among: np.ndarray, hi: int) -> float:
    """In place: `left` budget spread over the prompts `among` (bool [m]) in rounds of one rollout each,
    fewest rollouts first (ties by index), up to hi and while a rollout fits. Returns what is left."""
    for _ in range(int(among.sum()) * hi + 1):  # every round adds at least one rollout
        can = np.flatnonzero(among & (counts < hi))
        can = can[np.argsort(counts[can], kind="stable")]
        can = can[cost[can] <= left + 1e-9]
        if can.size == 0:
            break
        take = can[np.cumsum(cost[can]) <= left + 1e-9]
        take = take if take.size else can[:1]
        counts[take] += 1
        left -= float(cost[take].sum())
    return left
