"""Policy losses (docs/method.md §5): hand-computed cases, loop-vs-vectorised, micro-batch invariance."""

import math

import pytest
import torch

from dibs.algorithms.losses import (
    clipped_policy_loss,
    low_var_kl,
    policy_loss,
    raft_loss,
    token_mean,
)

pytestmark = pytest.mark.unit

RTOL, ATOL = 1e-5, 1e-7


def _close(actual, expected):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- token_mean


def test_token_mean_hand_computed():
    # valid tokens: row 0 -> 1, 2 ; row 1 -> 4  => sum 7 over 3 tokens = 7/3; with token_count 7 -> 1.
    values = torch.tensor([[1.0, 2.0, 100.0], [4.0, -50.0, 60.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    _close(token_mean(values, mask), 7 / 3)
    _close(token_mean(values, mask.float(), token_count=7), 1.0)
    _close(token_mean(values, mask, token_count=torch.tensor(14.0)), 0.5)


def test_token_mean_empty_mask_and_bad_count():
    values = torch.ones(2, 3, requires_grad=True)
    out = token_mean(values, torch.zeros(2, 3))
    assert float(out.detach()) == 0.0 and out.requires_grad
    with pytest.raises(ValueError, match="token_count"):
        token_mean(values, torch.ones(2, 3), token_count=0)


# ---------------------------------------------------------------- low_var_kl


def test_low_var_kl_hand_computed():
    # d = ref - logp. d = 0 -> e^0 - 0 - 1 = 0; d = 1 -> e - 2 = 0.718282; d = -1 -> e^-1 + 1 - 1 = 0.367879;
    # d = 30 clamps to 20 -> e^20 - 21.
    logp = torch.tensor([[-1.0, -2.0, -1.0, -30.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.0, -1.0, -2.0, 0.0]], dtype=torch.float64)
    _close(low_var_kl(logp, ref), [[0.0, math.e - 2, math.exp(-1), math.exp(20) - 21]])


def test_low_var_kl_nonnegative_random():
    gen = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(4, 7, generator=gen) * 5, -torch.rand(4, 7, generator=gen) * 5
    assert bool((low_var_kl(logp, ref) >= 0).all())


# ---------------------------------------------------------------- raft_loss


def test_raft_loss_hand_computed():
    # A = [1, 0]; logp row 0 = [-1, -3] (both valid), row 1 masked except first (A = 0 there).
    # -token_mean(A * logp) = -((1*-1) + (1*-3) + 0) / 3 tokens = 4/3.
    logp = torch.tensor([[-1.0, -3.0], [-2.0, -5.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, stats = raft_loss(logp, torch.tensor([1.0, 0.0]), mask)
    _close(loss, 4 / 3)
    assert stats["pg_loss"] == pytest.approx(4 / 3, rel=RTOL)
    loss.backward()
    # d/dlogp = -A * mask / 3
    _close(logp.grad, [[-1 / 3, -1 / 3], [0.0, 0.0]])


# ---------------------------------------------------------------- clipped_policy_loss: hand cases


def _one_token(rho: float, adv: float):
    old = torch.tensor([[-1.0]])
    logp = (old + math.log(rho)).clone().requires_grad_(True)
    return logp, old, torch.tensor([adv]), torch.ones(1, 1)


def test_clip_upper_branch_has_zero_gradient():
    # rho = 1.5, A = +1, eps = 0.2: min(1.5 * 1, clip(1.5, 0.8, 1.2) * 1) = min(1.5, 1.2) = 1.2
    # -> loss = -1.2, the clipped (constant) branch: zero gradient, clip_frac = 1.
    logp, old, adv, mask = _one_token(1.5, 1.0)
    loss, stats = clipped_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    _close(loss, -1.2)
    loss.backward()
    assert float(logp.grad) == 0.0
    assert stats["clip_frac"] == 1.0 and stats["ratio_mean"] == pytest.approx(1.5, rel=RTOL)


def test_clip_lower_side_keeps_gradient_for_positive_advantage():
    # rho = 0.5, A = +1: min(0.5, clip(0.5, 0.8, 1.2) = 0.8) = 0.5 -> unclipped branch, loss = -0.5,
    # d(-rho * A)/dlogp = -rho * A = -0.5; clip_frac = 0.
    logp, old, adv, mask = _one_token(0.5, 1.0)
    loss, stats = clipped_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    _close(loss, -0.5)
    loss.backward()
    _close(logp.grad, [[-0.5]])
    assert stats["clip_frac"] == 0.0


def test_clip_negative_advantage():
    # rho = 0.5, A = -1: min(-0.5, 0.8 * -1 = -0.8) = -0.8 -> clipped, loss = 0.8, zero gradient.
    # rho = 1.5, A = -1: min(-1.5, -1.2) = -1.5 -> unclipped, loss = 1.5, gradient -rho * A = 1.5.
    logp, old, adv, mask = _one_token(0.5, -1.0)
    loss, stats = clipped_policy_loss(logp, old, adv, mask)
    loss.backward()
    _close(loss, 0.8)
    assert float(logp.grad) == 0.0 and stats["clip_frac"] == 1.0
    logp, old, adv, mask = _one_token(1.5, -1.0)
    loss, stats = clipped_policy_loss(logp, old, adv, mask)
    loss.backward()
    _close(loss, 1.5)
    _close(logp.grad, [[1.5]])
    assert stats["clip_frac"] == 0.0


def test_clipped_with_kl_hand_computed():
    # Two tokens, rho = 1 (logp == old), A = 2: pg = -mean(2, 2) = -2.
    # ref - logp = [1, 0]: k3 = [e - 2, 0], token-mean (e - 2) / 2 = 0.359141; kl_coef 0.1 -> 0.0359141.
    logp = torch.tensor([[-2.0, -1.0]])
    ref = torch.tensor([[-1.0, -1.0]])
    adv, mask = torch.tensor([2.0]), torch.ones(1, 2)
    loss, stats = clipped_policy_loss(logp, logp, adv, mask, kl_coef=0.1, ref_logp=ref)
    _close(loss, -2.0 + 0.1 * (math.e - 2) / 2)
    assert stats["pg_loss"] == pytest.approx(-2.0, rel=RTOL)
    assert stats["kl"] == pytest.approx((math.e - 2) / 2, rel=RTOL)
    assert stats["ratio_mean"] == pytest.approx(1.0, rel=RTOL)


def test_clipped_validation():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="ref_logp"):
        clipped_policy_loss(x, x, torch.zeros(1), torch.ones(1, 2), kl_coef=0.1)
    with pytest.raises(ValueError, match="advantages"):
        clipped_policy_loss(x, x, torch.zeros(2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="clip_eps"):
        clipped_policy_loss(x, x, torch.zeros(1), torch.ones(1, 2), clip_eps=0.0)


# ---------------------------------------------------------------- loop vs vectorised


def _random_batch(seed: int, b: int = 5, t: int = 7):
    gen = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=gen) * 3
    old = logp + (torch.rand(b, t, generator=gen) - 0.5)  # rho in [e^-0.5, e^0.5]: both clip sides hit
    ref = logp + (torch.rand(b, t, generator=gen) - 0.5)
    adv = torch.randn(b, generator=gen)
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return logp, old, ref, adv, mask


def _clipped_reference(logp, old, ref, adv, mask, eps, kl_coef):
    """Token-by-token Python loop in float64 with math; returns (loss, clip_frac)."""
    total, n, clipped = 0.0, 0, 0
    for i in range(logp.shape[0]):
        for j in range(logp.shape[1]):
            if not mask[i, j]:
                continue
            rho = math.exp(float(logp[i, j]) - float(old[i, j]))
            a = float(adv[i])
            surrogate = min(rho * a, min(max(rho, 1 - eps), 1 + eps) * a)
            clipped += min(max(rho, 1 - eps), 1 + eps) * a < rho * a
            d = float(ref[i, j]) - float(logp[i, j])
            total += -surrogate + kl_coef * (math.exp(d) - d - 1)
            n += 1
    return total / n, clipped / n


@pytest.mark.parametrize("seed", range(4))
def test_clipped_matches_loop(seed: int):
    logp, old, ref, adv, mask = _random_batch(seed)
    loss, stats = clipped_policy_loss(logp, old, adv, mask, clip_eps=0.2, kl_coef=0.05, ref_logp=ref)
    expected, clip_frac = _clipped_reference(logp, old, ref, adv, mask, 0.2, 0.05)
    assert float(loss) == pytest.approx(expected, rel=RTOL)
    assert stats["clip_frac"] == pytest.approx(clip_frac, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_raft_matches_loop(seed: int):
    logp, _, _, adv, mask = _random_batch(seed)
    loss, _ = raft_loss(logp, adv, mask)
    terms = [-float(adv[i]) * float(logp[i, j]) for i in range(5) for j in range(7) if mask[i, j]]
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=RTOL)


# ---------------------------------------------------------------- micro-batch invariance


def _logp_from_leaf(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[b, T, V] logits -> log_softmax -> log-prob of the sampled token, [b, T]."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def _loss_fn(algorithm: str):
    def fn(logp, old, ref, adv, mask, count):
        return policy_loss(
            algorithm,
            logp,
            old,
            adv,
            mask,
            clip_eps=0.2,
            kl_coef=0.0 if algorithm == "raft" else 0.05,
            ref_logp=ref,
            token_count=count,
        )

    return fn


@pytest.mark.parametrize("algorithm", ["raft", "raftpp", "grpo"])
@pytest.mark.parametrize("split", [[2, 4], [1, 1, 4]])
def test_micro_batches_sum_to_full_batch(algorithm: str, split: list[int]):
    gen = torch.Generator().manual_seed(11)
    b, t, v = 6, 5, 4
    logits = torch.randn(b, t, v, generator=gen, dtype=torch.float32).requires_grad_(True)
    tokens = torch.randint(0, v, (b, t), generator=gen)
    with torch.no_grad():
        base = _logp_from_leaf(logits, tokens)
        old = base + 0.4 * torch.randn(b, t, generator=gen)  # rho spread well beyond 1 +- 0.2
        ref = base + 0.3 * torch.randn(b, t, generator=gen)
    adv = torch.randn(b, generator=gen)
    mask = torch.arange(t)[None, :] < torch.tensor([5, 1, 3, 2, 4, 5])[:, None]  # ragged lengths
    full_count = int(mask.sum())
    loss_fn = _loss_fn(algorithm)

    full_loss, _ = loss_fn(_logp_from_leaf(logits, tokens), old, ref, adv, mask, None)
    full_loss.backward()
    full_grad = logits.grad.clone()
    assert full_grad.abs().sum() > 0  # a real gradient flows
    logits.grad = None

    summed = torch.zeros(())
    for idx in torch.split(torch.arange(b), split):
        micro, _ = loss_fn(
            _logp_from_leaf(logits[idx], tokens[idx]), old[idx], ref[idx], adv[idx], mask[idx], full_count
        )
        micro.backward()  # gradients accumulate in logits.grad
        summed = summed + micro.detach()
    torch.testing.assert_close(summed, full_loss.detach(), rtol=RTOL, atol=1e-7)
    torch.testing.assert_close(logits.grad, full_grad, rtol=RTOL, atol=1e-7)


# ---------------------------------------------------------------- dispatch


def test_policy_loss_dispatch():
    logp, old, ref, adv, mask = _random_batch(0)
    kwargs = {"clip_eps": 0.2, "kl_coef": 0.01, "ref_logp": ref, "token_count": None}
    for name in ("raftpp", "grpo"):
        loss, stats = policy_loss(name, logp, old, adv, mask, **kwargs)
        expected, _ = clipped_policy_loss(logp, old, adv, mask, **kwargs)
        assert torch.equal(loss, expected) and set(stats) == {"pg_loss", "kl", "clip_frac", "ratio_mean"}
    loss, _ = policy_loss(
        "raft", logp, None, adv, mask, clip_eps=0.2, kl_coef=0.0, ref_logp=None, token_count=None
    )
    assert torch.equal(loss, raft_loss(logp, adv, mask)[0])
    with pytest.raises(ValueError, match="'ppo'"):
        policy_loss("ppo", logp, old, adv, mask, **kwargs)
    with pytest.raises(ValueError, match="KL"):
        policy_loss("raft", logp, old, adv, mask, **kwargs)
