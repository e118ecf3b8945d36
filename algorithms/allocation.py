"""Per-prompt rollout budgets: uniform and GVM allocation (docs/method.md §2).

Pure numpy. Inputs are per-prompt arrays of length m: estimated gradient norms G_i >= 0 and acceptance
rates p_i in [0, 1] (docs/method.md §3). Outputs are int64 sample counts n_i that sum to the budget N exactly.
"""

import math

import numpy as np
from numpy.typing import ArrayLike

# round_preserving_sum accepts fractions whose sum is within this of the total (float noise only).
_SUM_TOL = 1e-6


def uniform_allocation(num_prompts: int, n: int) -> np.ndarray:
    """The baseline: n samples for each of num_prompts prompts (N = m * n, docs/method.md §1).

    Returns:
        [num_prompts] int64, all equal to n. ValueError if either argument is negative.
    """
    if num_prompts < 0 or n < 0:
        raise ValueError(f"num_prompts and n must be >= 0, got num_prompts={num_prompts}, n={n}")
    return np.full(num_prompts, n, dtype=np.int64)


def _validated(grad_norms: ArrayLike, accept_rates: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return (G, p) as float64 [m] arrays; ValueError naming the first bad prompt index."""
    g = np.asarray(grad_norms, dtype=np.float64)
    p = np.asarray(accept_rates, dtype=np.float64)
    if g.ndim != 1 or p.shape != g.shape:
        raise ValueError(f"grad_norms and accept_rates must both have shape [m], got {g.shape} and {p.shape}")
    for name, arr in (("grad_norms", g), ("accept_rates", p)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] = {arr[bad[0]]} is not finite (prompt {bad[0]})")
    bad = np.flatnonzero(g < 0)
    if bad.size:
        raise ValueError(f"grad_norms[{bad[0]}] = {g[bad[0]]} is negative (prompt {bad[0]})")
    bad = np.flatnonzero((p < 0) | (p > 1))
    if bad.size:
        raise ValueError(f"accept_rates[{bad[0]}] = {p[bad[0]]} is outside [0, 1] (prompt {bad[0]})")
    return g, p


def gvm_weights(
    grad_norms: ArrayLike, accept_rates: ArrayLike, *, alpha: float = 1e-3, beta: float = 2.0
) -> np.ndarray:
    """GVM weight w_i = G_i / sqrt(p_i + alpha / p_i^(beta - 1)) (docs/method.md §2).

    The alpha term regularises the variance-optimal G/sqrt(p) so the weight vanishes as p -> 0;
    with beta = 2 it peaks at p = sqrt(alpha).

    Args:
        grad_norms: [m] G_i, finite and >= 0.
        accept_rates: [m] p_i in [0, 1].
        alpha: regulariser, >= 0 (alpha = 0 gives plain G / sqrt(p)).
        beta: exponent, finite.

    Returns:
        [m] float64 weights; 0 where p_i = 0 or G_i = 0. ValueError (naming the prompt index) for
        NaN/inf inputs, negative G or p outside [0, 1].
    """
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    g, p = _validated(grad_norms, accept_rates)
    active = (p > 0) & (g > 0)
    p_safe = np.where(active, p, 1.0)  # placeholder where inactive, to keep the powers finite
    w = g / np.sqrt(p_safe + alpha / p_safe ** (beta - 1.0))
    return np.where(active, w, 0.0)


def round_preserving_sum(fractions: ArrayLike, total: int) -> np.ndarray:
    """Largest-remainder rounding of non-negative fractions that sum to `total` (docs/method.md §2).

    Floor every entry, then give one more unit to each of the (total - sum of floors) entries with the
    largest residuals; equal residuals go to the lower index (stable, deterministic). Every result is
    within 1 of its fraction, and the result sums to `total` exactly.

    Args:
        fractions: [m] finite, >= 0, summing to `total` up to float noise (abs/rel 1e-6).
        total: integer >= 0.

    Returns:
        [m] int64. ValueError for negative or non-finite fractions, or a sum that is not `total`.
    """
    x = np.asarray(fractions, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"fractions must have shape [m], got {x.shape}")
    if total < 0 or int(total) != total:
        raise ValueError(f"total must be an integer >= 0, got {total}")
    bad = np.flatnonzero(~np.isfinite(x) | (x < 0))
    if bad.size:
        raise ValueError(f"fractions[{bad[0]}] = {x[bad[0]]} must be finite and >= 0")
    if abs(x.sum() - total) > _SUM_TOL * max(1.0, total):
        raise ValueError(f"fractions sum to {x.sum()}, expected total = {total}")
    floors = np.floor(x)
    counts = floors.astype(np.int64)
    deficit = int(total) - int(counts.sum())  # in [0, m] given the sum check above
    order = np.argsort(-(x - floors), kind="stable")  # largest residual first, ties by lower index
    counts[order[:deficit]] += 1
    return counts


def _check_bounds(m: int, total: int, lo: int, hi: int | None) -> None:
    if lo < 0:
        raise ValueError(f"min_per_prompt must be >= 0, got {lo}")
    if lo * m > total:
        raise ValueError(f"min_per_prompt={lo} cannot be met: {m} prompts x {lo} > total={total}")
    if hi is not None and hi < lo:
        raise ValueError(f"max_per_prompt={hi} is below min_per_prompt={lo}")
    if hi is not None and hi * m < total:
        raise ValueError(f"max_per_prompt={hi} cannot be met: {m} prompts x {hi} < total={total}")


def _bounded_shares(weights: np.ndarray, total: float, lo: float, hi: float) -> np.ndarray:
    """Shares x_i = clip(lam * w_i, lo, hi) with sum x = total, by iterative clamping.

    Each pass splits what is left among the unclamped prompts in proportion to their weights (evenly
    when all their weights are 0). Clamping both sides in one pass can be wrong, so each pass clamps
    one side: with V_hi = total excess above hi and V_lo = total shortfall below lo, V_hi > V_lo means
    the true lam is larger than this pass's, so the prompts above hi stay above it and are fixed at hi
    (and symmetrically for V_lo > V_hi; V_hi = V_lo means this pass's lam is the answer). Every pass
    fixes at least one prompt, so at most m passes. Needs lo * m <= total <= hi * m.
    """
    x = np.zeros_like(weights)
    free = np.ones(weights.shape, dtype=bool)
    while free.any():
        w = weights[free] if weights[free].sum() > 0 else np.ones(int(free.sum()))
        prop = (total - x[~free].sum()) * w / w.sum()
        over, under = prop > hi, prop < lo
        v_hi, v_lo = (prop - hi)[over].sum(), (lo - prop)[under].sum()
        if not over.any() and not under.any():
            x[free] = prop
            break
        fix = over if v_hi > v_lo else under if v_lo > v_hi else over | under
        idx = np.flatnonzero(free)[fix]
        x[idx] = np.where(over[fix], hi, lo)
        free[idx] = False
    return x


def _filtered_shares(
    w: np.ndarray, p: np.ndarray, total: int, threshold: float, insufficient: float
) -> np.ndarray:
    """Pre-filter shares s_i = total * w_i / sum(w), filtered once and renormalised to total (§2).

    All-zero weights give the uniform split total / m. A prompt is dropped when p_i > threshold (too
    easy) or p_i * s_i < insufficient (too few expected accepted samples), both judged on the pre-filter
    shares and not iterated. If that would drop every prompt, the filters are ignored so the budget is
    still spent.
    """
    weight_sum = w.sum()
    shares = total * w / weight_sum if weight_sum > 0 else np.full(w.size, total / w.size)
    keep = (p <= threshold) & (p * shares >= insufficient)
    if keep.any():
        shares = np.where(keep, shares, 0.0)
    return total * shares / shares.sum()


def gvm_allocate(
    grad_norms: ArrayLike,
    accept_rates: ArrayLike,
    total: int,
    *,
    alpha: float = 1e-3,
    beta: float = 2.0,
    filter_threshold: float = 1.0,
    filter_insufficient: float = 0.0,
    min_per_prompt: int = 0,
    max_per_prompt: int | None = None,
) -> np.ndarray:
    """GVM sample allocation n_i ∝ w_i with Σ n_i = total (docs/method.md §2).

    w = gvm_weights(G, p) -> shares total * w / Σ w -> filters (`_filtered_shares`: p_i > filter_threshold,
    1.0 = off; p_i * share_i < filter_insufficient, 0 = off) -> renormalise -> bounds -> rounding.

    Edge cases (decisions):
        * total = 0: all zeros. m = 0 prompts: empty result, and total must be 0 (else ValueError).
        * Every weight zero (e.g. every p_i = 0, where the reference divides by zero): uniform split of
          total. Filters that would drop every prompt are ignored, so the budget is always spent.
        * total below the number of prompts with positive weight: allowed, some prompts get 0.
        * NaN/inf inputs, p outside [0, 1], negative G: ValueError naming the prompt index.
        * Bounds (off by default): min * m > total or max * m < total is a ValueError. Otherwise shares
          become clip(lam * share_i, min, max) with lam set so they sum to total (clamp, redistribute the
          rest in proportion, until stable: `_bounded_shares`). Zero-share prompts are raised to min
          and get an even split of any remainder only when every other prompt sits at max.

    Args:
        grad_norms: [m] G_i >= 0.  accept_rates: [m] p_i in [0, 1].  total: the budget N, integer >= 0.

    Returns:
        [m] int64 counts summing to total, within [min, max]. Without bounds each n_i is within 1 of its
        exact share.
    """
    if total < 0 or int(total) != total:
        raise ValueError(f"total must be an integer >= 0, got {total}")
    total = int(total)
    w = gvm_weights(grad_norms, accept_rates, alpha=alpha, beta=beta)
    m = w.size
    if m == 0:
        if total:
            raise ValueError(f"total={total} cannot be allocated to 0 prompts")
        return np.zeros(0, dtype=np.int64)
    _check_bounds(m, total, min_per_prompt, max_per_prompt)
    if total == 0:
        return np.zeros(m, dtype=np.int64)

    p = np.asarray(accept_rates, dtype=np.float64)
    shares = _filtered_shares(w, p, total, filter_threshold, filter_insufficient)
    if min_per_prompt > 0 or max_per_prompt is not None:
        # Every bounded share lies in [min, max]; rounding then keeps n_i there, since a share only
        # rounds up when it is not an integer, and max is one.
        hi = math.inf if max_per_prompt is None else float(max_per_prompt)
        shares = _bounded_shares(shares, float(total), float(min_per_prompt), hi)
    return round_preserving_sum(shares, total)
