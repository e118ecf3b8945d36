"""Expected informative groups under a Beta posterior, and the integer split of a budget that maximises
them (docs/method.md §8, variance).

A prompt's pass rate p has the posterior Beta(a, b), and its moments have the closed form
E[p^n] = prod_{k<n} (a + k) / (a + b + k). A group of n rollouts is informative, by objective:

- `mixed` (GRPO: a group whose rewards are all equal has zero advantage): its rewards differ, with
  probability f(n) = 1 - E[p^n] - E[(1-p)^n] for n >= 1, and f(0) = 0 (so f(0) = f(1) = 0);
- `positive` (RAFT / RAFT++: a group trains on its accepted samples): it holds an accepted sample, with
  probability g(n) = 1 - E[(1-p)^n].

The gain of the n-th rollout, f(n) - f(n-1), has a form without cancellation,
E[p^k (1-p)] + E[(1-p)^k p] = E[p^k] b / (a+b+k) + E[(1-p)^k] a / (a+b+k) with k = n - 1, which does not
grow with k; the first gain is 0 and the second 2ab / ((a+b)(a+b+1)) = 2 E[p(1-p)]. So f is concave from
n = 1 on but not from 0, and a greedy over single rollouts stalls at the first, useless, one.
`informative_allocation` solves the integer problem exactly (see `_repair_split` for the argument). Pure
numpy; every input is an explicit argument.
"""

import math

import numpy as np
from numpy.typing import ArrayLike

OBJECTIVES = ("mixed", "positive")


def _beta_params(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) as float64 [m] arrays; ValueError naming the first bad prompt index."""
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.ndim != 1 or b_arr.shape != a_arr.shape:
        raise ValueError(f"a and b must both have shape [m], got {a_arr.shape} and {b_arr.shape}")
    for name, arr in (("a", a_arr), ("b", b_arr)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] = {arr[bad[0]]} must be finite and > 0 (prompt {bad[0]})")
    return a_arr, b_arr


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def beta_power_means(a: ArrayLike, b: ArrayLike, n_max: int) -> tuple[np.ndarray, np.ndarray]:
    """E[p^n] and E[(1-p)^n] under Beta(a_i, b_i) for n = 0..n_max, each [m, n_max + 1]."""
    a_arr, b_arr = _beta_params(a, b)
    if n_max < 0:
        raise ValueError(f"n_max must be >= 0, got {n_max}")
    k = np.arange(n_max, dtype=np.float64)
    total = a_arr[:, None] + b_arr[:, None] + k
    ones = np.ones((a_arr.size, 1))
    ep = np.concatenate([ones, np.cumprod((a_arr[:, None] + k) / total, axis=1)], axis=1)
    eq = np.concatenate([ones, np.cumprod((b_arr[:, None] + k) / total, axis=1)], axis=1)
    return ep, eq


def informative_gains(a: ArrayLike, b: ArrayLike, n_max: int, objective: str = "mixed") -> np.ndarray:
    """[m, n_max]: column t - 1 is what the t-th rollout of a prompt adds to P(its group is informative).

    Mathematically non-increasing from the second column on (from the first, `positive`); float noise is
    clipped so that it stays so, which the allocation relies on.
    """
    _check_objective(objective)
    a_arr, b_arr = _beta_params(a, b)
    ep, eq = beta_power_means(a_arr, b_arr, max(n_max - 1, 0))
    k = np.arange(ep.shape[1], dtype=np.float64)
    denom = a_arr[:, None] + b_arr[:, None] + k
    if objective == "positive":  # g(k+1) - g(k) = E[(1-p)^k p]
        return np.minimum.accumulate(eq * (a_arr[:, None] / denom), axis=1)[:, :n_max]
    gains = np.zeros((a_arr.size, max(n_max, 1)))
    if n_max >= 2:
        r = a_arr * b_arr / ((a_arr + b_arr) * (a_arr + b_arr + 1.0))  # E[p (1-p)]
        tail = ep * (b_arr[:, None] / denom) + eq * (a_arr[:, None] / denom)  # f(k+1) - f(k), k >= 1
        tail[:, 1] = 2.0 * r  # exact closed forms of the first two, so that f(2) = 2r and f(3) = 3r exactly
        if tail.shape[1] > 2:
            tail[:, 2] = r
        gains[:, 1:] = np.minimum.accumulate(tail[:, 1:], axis=1)
    return gains[:, :n_max]


def informative_table(a: ArrayLike, b: ArrayLike, n_max: int, objective: str = "mixed") -> np.ndarray:
    """[m, n_max + 1]: P(a group of n rollouts of prompt i is informative) for n = 0..n_max."""
    gains = informative_gains(a, b, n_max, objective)
    return np.concatenate([np.zeros((gains.shape[0], 1)), np.cumsum(gains, axis=1)], axis=1)


def expected_informative(
    a: ArrayLike, b: ArrayLike, counts: ArrayLike, objective: str = "mixed"
) -> np.ndarray:
    """[m]: P(prompt i's group of counts[i] rollouts is informative); their sum is the expected number of
    informative groups."""
    n = np.asarray(counts, dtype=np.int64)
    a_arr, _ = _beta_params(a, b)
    if n.shape != a_arr.shape or (n < 0).any():
        raise ValueError(f"counts must be [m] non-negative integers, got shape {n.shape}")
    table = informative_table(a, b, int(n.max()) if n.size else 0, objective)
    return table[np.arange(n.size), n]


def _check_bounds(m: int, total: int, lo: int, hi: int | None) -> None:
    if total < 0 or int(total) != total:
        raise ValueError(f"total must be an integer >= 0, got {total}")
    if lo < 0 or (hi is not None and hi < max(lo, 1)):
        raise ValueError(f"need 0 <= min_per_prompt <= max_per_prompt, max >= 1; got {lo} and {hi}")
    if lo * m > total:
        raise ValueError(f"min_per_prompt={lo} cannot be met: {m} prompts x {lo} > total={total}")
    if hi is not None and hi * m < total:
        raise ValueError(f"max_per_prompt={hi} cannot be met: {m} prompts x {hi} < total={total}")


def informative_allocation(
    a: ArrayLike,
    b: ArrayLike,
    total: int,
    *,
    objective: str = "mixed",
    min_per_prompt: int = 0,
    max_per_prompt: int | None = None,
) -> np.ndarray:
    """Counts n_i (sum `total`, each in [min, max]) maximising sum_i P(group i is informative).

    Ties are broken deterministically: among rollouts of equal gain, first the two rollouts that open a
    prompt (in prompt order), then the t-th rollouts of every prompt before any (t+1)-th, so equal
    posteriors get an even split (the first prompts taking the rest). The budget is always spent, even
    when every gain is tiny (every prompt solved, or none).

    Args:
        a, b: [m] Beta posterior parameters, > 0.  total: the budget N, integer >= 0.
        objective: `mixed` or `positive` (module docstring).

    Returns:
        [m] int64. ValueError for bad parameters or bounds that cannot hold (min x m > N or max x m < N).
    """
    _check_objective(objective)
    a_arr, b_arr = _beta_params(a, b)
    m, hi = a_arr.size, max_per_prompt
    _check_bounds(m, total, min_per_prompt, hi)
    total = int(total)
    if m == 0 or total == 0:
        return np.zeros(m, dtype=np.int64)
    cap = total if hi is None else min(hi, total)
    # Only the first `width` rollouts of each prompt are tabulated; a solution that reaches the width
    # might want more, so it is solved again twice as wide (rare: the start is twice the mean share).
    width = min(cap, max(min_per_prompt + 3, 2 * math.ceil(total / m) + 2))
    while True:
        counts, reached = _solve(a_arr, b_arr, total, objective, min_per_prompt, width)
        if width >= cap or not reached:
            return counts
        width = min(cap, 2 * width)


def _solve(
    a: np.ndarray, b: np.ndarray, total: int, objective: str, lo: int, width: int
) -> tuple[np.ndarray, bool]:
    """The optimum with at most `width` rollouts per prompt; True when some prompt reached `width`."""
    m = a.size
    gains = informative_gains(a, b, width, objective)
    rates = gains.copy()
    split = objective == "mixed" and lo == 0 and width >= 2
    if split:
        # The relaxation: the useless first rollout and the second share their gain (r each), which makes
        # every prompt's rates non-increasing (r, r, r, ...), i.e. concave; `_repair_split` restores f.
        rates[:, :2] = gains[:, 1:2] / 2.0
    rates[:, :lo] = np.inf  # the floor is taken first
    t = np.broadcast_to(np.arange(1, width + 1), (m, width))
    i = np.broadcast_to(np.arange(m)[:, None], (m, width))
    s = np.where(t <= 2, 0, t)  # the opening pair stays adjacent; later rollouts round-robin on ties
    order = np.lexsort((t.ravel(), i.ravel(), s.ravel(), -rates.ravel()))
    # A prompt's rates do not increase and ties go by position, so the top `total` rollouts are a prefix
    # of each prompt's list: counting them gives the greedy (optimal) solution of the concave problem.
    counts = np.bincount(order[:total] // width, minlength=m).astype(np.int64)
    reached = bool((counts >= width).any())
    if split:
        table = np.concatenate([np.zeros((m, 1)), np.cumsum(gains, axis=1)], axis=1)
        counts = _repair_split(counts, table, width)
        reached = reached or bool((counts >= width).any())
    return counts, reached


def _repair_split(counts: np.ndarray, table: np.ndarray, width: int) -> np.ndarray:
    """The `mixed` optimum from the relaxed greedy `counts`, where at most one prompt j holds exactly one
    rollout (its opening pair is adjacent in the order, so only the last rollout taken can split one).

    Why this is exact: let r_j be the rate of that last rollout, the price lambda. Every other prompt k sits
    at a maximiser of f_k(n) - lambda n (its taken rates are >= lambda, the rest <= lambda, and n_k != 1),
    and j's maximisers are {0, 2, 3} (f(2) = 2r, f(3) = 3r). For any allocation, sum f = sum_k M_k +
    lambda N - sum_k c_k(n_k) with M_k the maxima and costs c_k >= 0, so the optimum minimises the total
    cost of moving off the maximisers while keeping the sum N. Moving one other prompt k by +1 (j at 0), -1
    (j at 2) or -2 (j at 3), or leaving j at 1 (cost lambda) always suffices, and any combination of
    moves costs at least one of these (a move by -3 or more costs at least the move by -1 of the same
    prompt, as c_k is convex on n >= 1 and c_k(0) >= c_k(n_k - 1)). So the best of these candidates is
    optimal; tests check it against brute force.
    """
    ones = np.flatnonzero(counts == 1)
    if ones.size == 0:
        return counts
    j = int(ones[0])
    rows = np.arange(counts.size)
    base = float(table[rows, counts].sum())
    others = rows != j
    best, best_counts = base, counts  # j keeps its single rollout: a wasted one

    def consider(value: float, k: int, n_j: int, n_k: int) -> None:
        nonlocal best, best_counts
        if value > best:
            best, best_counts = value, counts.copy()
            best_counts[j], best_counts[k] = n_j, n_k

    def give_back(give: int, n_j: int) -> None:  # j opens with n_j rollouts, k gives `give` back
        ok = others & (counts >= 2) & (n_j <= width)
        if ok.any():
            loss = np.where(ok, table[rows, counts] - table[rows, np.maximum(counts - give, 0)], np.inf)
            k = int(np.argmin(loss))
            consider(base + table[j, n_j] - loss[k], k, n_j, int(counts[k]) - give)

    # In this order, so that ties go to more groups, then to the earlier prompts: j opens with 2 and k
    # gives one back; j closes and its rollout goes where it adds most; j opens with 3 and k gives two.
    give_back(1, 2)
    ok = others & (counts < width)
    if ok.any():
        gain = np.where(ok, table[rows, np.minimum(counts + 1, width)] - table[rows, counts], -np.inf)
        k = int(np.argmax(gain))
        consider(base + gain[k], k, 0, int(counts[k]) + 1)
    give_back(2, 3)
    return best_counts
