"""Rollout allocation (docs/method.md §2): hand-computed cases, loop-vs-vectorised, invariants, edge cases."""

import math

import numpy as np
import pytest

from dibs.algorithms.allocation import gvm_allocate, gvm_weights, round_preserving_sum, uniform_allocation

pytestmark = pytest.mark.unit

RTOL = 1e-5


# ---------------------------------------------------------------- plain-Python references


def _weights_reference(g, p, alpha, beta):
    return [
        gi / math.sqrt(pi + alpha / pi ** (beta - 1)) if gi > 0 and pi > 0 else 0.0
        for gi, pi in zip(g, p, strict=True)
    ]


def _round_reference(fractions, total):
    floors = [math.floor(x) for x in fractions]
    order = sorted(range(len(fractions)), key=lambda i: (-(fractions[i] - floors[i]), i))
    for i in order[: total - sum(floors)]:
        floors[i] += 1
    return floors


def _allocate_reference(g, p, total, alpha, beta, threshold, insufficient):
    w = _weights_reference(g, p, alpha, beta)
    shares = [total * wi / sum(w) for wi in w] if sum(w) > 0 else [total / len(w)] * len(w)
    kept = [
        s if (pi <= threshold and pi * s >= insufficient) else 0.0 for s, pi in zip(shares, p, strict=True)
    ]
    if sum(kept) > 0:
        shares = kept
    return _round_reference([total * s / sum(shares) for s in shares], total)


def _random_inputs(rng: np.random.Generator, m: int):
    g = rng.gamma(2.0, 1.0, m) * (rng.random(m) > 0.15)  # some G = 0 (nothing accepted)
    p = rng.integers(0, 9, m) / 8.0  # probe estimates k/8, including 0 and 1
    return g, p


# ---------------------------------------------------------------- uniform


def test_uniform_allocation():
    out = uniform_allocation(3, 8)
    assert out.dtype == np.int64 and out.tolist() == [8, 8, 8]
    assert uniform_allocation(0, 8).shape == (0,)
    with pytest.raises(ValueError):
        uniform_allocation(-1, 8)


# ---------------------------------------------------------------- gvm_weights


def test_gvm_weights_hand_computed():
    # alpha = 1e-3, beta = 2: w = G / sqrt(p + alpha / p).
    # prompt 0: 1 / sqrt(0.5 + 0.001 / 0.5)  = 1 / sqrt(0.502) = 1.411391
    # prompt 1: 2 / sqrt(0.25 + 0.001 / 0.25) = 2 / sqrt(0.254) = 3.968379
    # prompt 2: G = 0 -> 0;  prompt 3: p = 0 -> 0 (no division by zero).
    w = gvm_weights([1.0, 2.0, 0.0, 1.0], [0.5, 0.25, 0.5, 0.0])
    np.testing.assert_allclose(w, [1 / math.sqrt(0.502), 2 / math.sqrt(0.254), 0.0, 0.0], rtol=RTOL)
    assert w[2] == 0.0 and w[3] == 0.0
    # beta = 3: w = G / sqrt(p + alpha / p^2); p = 0.1: 0.1 + 0.001 / 0.01 = 0.2 -> 1 / sqrt(0.2) = 2.236068.
    np.testing.assert_allclose(gvm_weights([1.0], [0.1], beta=3.0), [1 / math.sqrt(0.2)], rtol=RTOL)


def test_gvm_weights_peak_at_sqrt_alpha():
    # beta = 2: p + alpha / p is smallest at p = sqrt(alpha), so w peaks there (docs/method.md §2).
    alpha = 1e-2
    w = gvm_weights([1.0] * 3, [0.5 * math.sqrt(alpha), math.sqrt(alpha), 2 * math.sqrt(alpha)], alpha=alpha)
    assert w[1] > w[0] and w[1] > w[2]


@pytest.mark.parametrize("seed", range(3))
def test_gvm_weights_match_loop(seed: int):
    g, p = _random_inputs(np.random.default_rng(seed), 40)
    for alpha, beta in [(1e-3, 2.0), (0.0, 2.0), (1e-2, 1.5)]:
        np.testing.assert_allclose(
            gvm_weights(g, p, alpha=alpha, beta=beta), _weights_reference(g, p, alpha, beta), rtol=1e-12
        )


@pytest.mark.parametrize(
    "g, p, match",
    [
        ([1.0, 1.0, float("nan")], [0.5, 0.5, 0.5], r"grad_norms\[2\]"),
        ([1.0, float("inf")], [0.5, 0.5], r"grad_norms\[1\]"),
        ([1.0, -0.5], [0.5, 0.5], r"grad_norms\[1\].*negative"),
        ([1.0, 1.0], [1.5, 0.5], r"accept_rates\[0\].*\[0, 1\]"),
        ([1.0, 1.0], [0.5, -0.1], r"accept_rates\[1\]"),
        ([1.0, 1.0], [0.5, float("nan")], r"accept_rates\[1\]"),
    ],
)
def test_bad_inputs_name_the_prompt(g, p, match):
    with pytest.raises(ValueError, match=match):
        gvm_weights(g, p)
    with pytest.raises(ValueError, match=match):
        gvm_allocate(g, p, 16)


# ---------------------------------------------------------------- round_preserving_sum


def test_round_preserving_sum_hand_computed():
    # [2.5, 1.25, 0.25] -> floors [2, 1, 0] (sum 3), 1 unit left -> largest residual 0.5 (index 0).
    assert round_preserving_sum([2.5, 1.25, 0.25], 4).tolist() == [3, 1, 0]
    # Tie: residuals [0.5, 0.5, 0] with 1 unit left -> the lower index wins.
    assert round_preserving_sum([1.5, 1.5, 1.0], 4).tolist() == [2, 1, 1]
    # Already integers: unchanged.
    assert round_preserving_sum([3.0, 0.0, 5.0], 8).tolist() == [3, 0, 5]
    assert round_preserving_sum([], 0).tolist() == []


def test_round_preserving_sum_validation():
    with pytest.raises(ValueError, match="sum"):
        round_preserving_sum([1.0, 1.0], 3)
    with pytest.raises(ValueError, match=r"fractions\[1\]"):
        round_preserving_sum([3.0, -1.0], 2)


@pytest.mark.parametrize("seed", range(5))
def test_round_preserving_sum_matches_loop_and_sums(seed: int):
    rng = np.random.default_rng(seed)
    total = int(rng.integers(0, 200))
    raw = rng.random(30)
    fractions = total * raw / raw.sum()
    out = round_preserving_sum(fractions, total)
    assert out.dtype == np.int64 and int(out.sum()) == total
    assert out.tolist() == _round_reference(fractions.tolist(), total)
    assert np.all(np.abs(out - fractions) < 1)


# ---------------------------------------------------------------- gvm_allocate: hand cases


def test_gvm_allocate_hand_computed_tie():
    # alpha = 0: w = G / sqrt(p) = [1/0.5, 2/1, 0.5/0.25, 3/0 -> 0] = [2, 2, 2, 0] (exact in binary).
    # total 10 -> shares 10/3 each = 3.33: floors [3, 3, 3, 0] (9), 1 unit left, equal residuals 1/3
    # -> lowest index: [4, 3, 3, 0].
    out = gvm_allocate([1.0, 2.0, 0.5, 3.0], [0.25, 1.0, 0.0625, 0.0], 10, alpha=0.0)
    assert out.dtype == np.int64 and out.tolist() == [4, 3, 3, 0]


def test_gvm_allocate_hand_computed_filters():
    # alpha = 0, G = sqrt(p) * [1, 1, 1, 2] -> w = [1, 1, 1, 2]; total 10 -> pre-filter shares [2, 2, 2, 4].
    # filter_threshold 0.8: p = [0.9, 0.5, 0.1, 0.5] -> prompt 0 (p = 0.9 > 0.8) out.
    # filter_insufficient 0.3: p * share = [1.8, 1.0, 0.2, 2.0] -> prompt 2 (0.2 < 0.3) out.
    # kept [0, 2, 0, 4] renormalised to 10 -> [0, 3.33, 0, 6.67] -> floors [0, 3, 0, 6], 1 left
    # -> larger residual 0.67 (prompt 3): [0, 3, 0, 7].
    p = np.array([0.9, 0.5, 0.1, 0.5])
    g = np.sqrt(p) * np.array([1.0, 1.0, 1.0, 2.0])
    assert gvm_allocate(g, p, 10, alpha=0.0).tolist() == [2, 2, 2, 4]
    out = gvm_allocate(g, p, 10, alpha=0.0, filter_threshold=0.8, filter_insufficient=0.3)
    assert out.tolist() == [0, 3, 0, 7]


def test_gvm_allocate_hand_computed_bounds():
    # alpha = 0, p = 1 -> w = G = [10, 1, 1]; total 12, min 2, max 6.
    # Proportional [10, 1, 1]: excess above 6 is 4, shortfall below 2 is 1 + 1 = 2; 4 > 2, so only
    # prompt 0 is clamped (to 6). The remaining 6 split over [1, 1] -> [3, 3], inside the bounds.
    # (Clamping both sides at once would give [6, 2, 2], which sums to 10, not 12.)
    out = gvm_allocate([10.0, 1.0, 1.0], [1.0, 1.0, 1.0], 12, alpha=0.0, min_per_prompt=2, max_per_prompt=6)
    assert out.tolist() == [6, 3, 3]


def test_gvm_allocate_bounds_zero_weight_prompts():
    # w = [w0, 0, 0]; max 2: prompt 0 saturates at 2 and the remaining 3 are split evenly over the
    # zero-weight prompts: [2, 1.5, 1.5] -> floors [2, 1, 1], 1 left, tie -> [2, 2, 1].
    assert gvm_allocate([1.0, 0.0, 0.0], [0.5] * 3, 5, max_per_prompt=2).tolist() == [2, 2, 1]
    # min 1 lifts zero-weight prompts: [1, 1] fixed, prompt 0 takes the remaining 6.
    assert gvm_allocate([1.0, 0.0, 0.0], [0.5] * 3, 8, min_per_prompt=1).tolist() == [6, 1, 1]


# ---------------------------------------------------------------- gvm_allocate: edge cases


def test_all_weights_zero_falls_back_to_uniform():
    # Every p = 0 (the reference divides by zero): uniform 10 / 4 = 2.5 -> [3, 3, 2, 2].
    assert gvm_allocate([0.0] * 4, [0.0] * 4, 10).tolist() == [3, 3, 2, 2]
    # The insufficient filter would remove all of them (p * share = 0), so it is ignored.
    assert gvm_allocate([0.0] * 4, [0.0] * 4, 10, filter_insufficient=1.0).tolist() == [3, 3, 2, 2]


def test_filters_removing_everything_are_ignored():
    g, p = [1.0, 2.0, 3.0], [0.9, 0.95, 1.0]
    assert gvm_allocate(g, p, 24, filter_threshold=0.5).tolist() == gvm_allocate(g, p, 24).tolist()


def test_total_zero_and_total_below_prompt_count():
    assert gvm_allocate([1.0, 2.0], [0.5, 0.5], 0).tolist() == [0, 0]
    # Equal weights, total 3 over 5 prompts: 0.6 each -> floors 0, 3 units to the lowest indices.
    assert gvm_allocate([1.0] * 5, [0.5] * 5, 3).tolist() == [1, 1, 1, 0, 0]
    assert gvm_allocate([], [], 0).shape == (0,)
    with pytest.raises(ValueError, match="0 prompts"):
        gvm_allocate([], [], 4)
    with pytest.raises(ValueError, match="total"):
        gvm_allocate([1.0], [0.5], -1)


def test_infeasible_bounds():
    with pytest.raises(ValueError, match=r"min_per_prompt=3 cannot be met"):
        gvm_allocate([1.0] * 4, [0.5] * 4, 10, min_per_prompt=3)
    with pytest.raises(ValueError, match=r"max_per_prompt=2 cannot be met"):
        gvm_allocate([1.0] * 4, [0.5] * 4, 10, max_per_prompt=2)
    with pytest.raises(ValueError, match="below min_per_prompt"):
        gvm_allocate([1.0] * 4, [0.5] * 4, 10, min_per_prompt=2, max_per_prompt=1)


# ---------------------------------------------------------------- loop vs vectorised


@pytest.mark.parametrize("seed", range(6))
def test_gvm_allocate_matches_loop(seed: int):
    rng = np.random.default_rng(seed)
    g, p = _random_inputs(rng, 32)
    total = int(rng.integers(0, 400))
    for threshold, insufficient in [(1.0, 0.0), (0.8, 0.5)]:
        out = gvm_allocate(g, p, total, filter_threshold=threshold, filter_insufficient=insufficient)
        if total:
            expected = _allocate_reference(g.tolist(), p.tolist(), total, 1e-3, 2.0, threshold, insufficient)
            assert out.tolist() == expected


def _bounded_reference(shares, total, lo, hi):
    """clip(lam * s, lo, hi) summing to total, lam by bisection (independent of the clamping loop)."""
    a, b = 0.0, 1.0
    while np.clip(b * shares, lo, hi).sum() < total:
        b *= 2
    for _ in range(200):
        mid = (a + b) / 2
        a, b = (mid, b) if np.clip(mid * shares, lo, hi).sum() < total else (a, mid)
    return np.clip(b * shares, lo, hi)


@pytest.mark.parametrize("seed", range(6))
def test_bounded_allocation_matches_bisection(seed: int):
    rng = np.random.default_rng(seed)
    m, total = 20, 160
    g, p = rng.gamma(1.0, 1.0, m) + 0.01, rng.uniform(0.05, 1.0, m)  # every weight positive
    lo, hi = int(rng.integers(0, 5)), int(rng.integers(10, 30))
    out = gvm_allocate(g, p, total, min_per_prompt=lo, max_per_prompt=hi)
    w = gvm_weights(g, p)
    expected = round_preserving_sum(_bounded_reference(total * w / w.sum(), total, lo, hi), total)
    assert out.tolist() == expected.tolist()
    assert out.min() >= lo and out.max() <= hi


# ---------------------------------------------------------------- invariants


@pytest.mark.parametrize("seed", range(10))
def test_allocation_sums_to_total_and_respects_bounds(seed: int):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 50))
    g, p = _random_inputs(rng, m)
    total = int(rng.integers(0, 20 * m))
    lo = int(rng.integers(0, total // m + 1))
    hi = int(rng.integers(max(lo, -(-total // m)), 40 * m + 1))
    kwargs = {
        "filter_threshold": float(rng.choice([1.0, 0.9])),
        "filter_insufficient": float(rng.choice([0.0, 1.0])),
    }
    for bounds in [{}, {"min_per_prompt": lo, "max_per_prompt": hi}]:
        out = gvm_allocate(g, p, total, **kwargs, **bounds)
        assert out.dtype == np.int64 and out.shape == (m,)
        assert int(out.sum()) == total and out.min() >= bounds.get("min_per_prompt", 0)
        assert out.max() <= bounds.get("max_per_prompt", total)


@pytest.mark.parametrize("seed", range(5))
def test_each_count_within_one_of_its_share(seed: int):
    rng = np.random.default_rng(seed)
    g, p = _random_inputs(rng, 25)
    total = int(rng.integers(1, 500))
    w = gvm_weights(g, p)
    shares = total * w / w.sum()
    assert np.all(np.abs(gvm_allocate(g, p, total) - shares) < 1)


@pytest.mark.parametrize("seed", range(5))
def test_monotone_in_grad_norm(seed: int):
    rng = np.random.default_rng(seed)
    g, p = rng.gamma(2.0, 1.0, 10), rng.uniform(0.05, 1.0, 10)
    i = int(rng.integers(0, 10))
    previous = -1
    for scale in np.linspace(0.0, 5.0, 60):
        g_i = g.copy()
        g_i[i] = g[i] * scale
        n_i = int(gvm_allocate(g_i, p, 80)[i])
        assert n_i >= previous
        previous = n_i
