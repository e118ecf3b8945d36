"""Advantages (docs/method.md §5): hand-computed cases, loop-vs-vectorised, invariants."""

import math

import pytest
import torch

from dibs.algorithms.advantages import grpo_advantages, nonzero_groups_mask, raft_advantages

pytestmark = pytest.mark.unit

RTOL, ATOL = 1e-5, 1e-7


def _close(actual, expected, dtype=torch.float32):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=dtype), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- RAFT


def test_raft_advantages_equal_rewards():
    # A = r (docs/method.md §5); mean of [1, 0, 1, 1] = 3/4.
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv, stats = raft_advantages(rewards)
    _close(adv, [1.0, 0.0, 1.0, 1.0])
    assert stats == {"reward_mean": 0.75}
    adv[0] = 5.0  # a copy: editing the advantages leaves the rewards alone
    assert rewards[0] == 1.0


def test_raft_advantages_int_and_empty():
    adv, _ = raft_advantages(torch.tensor([1, 0]))
    assert adv.is_floating_point()
    adv, stats = raft_advantages(torch.zeros(0))
    assert adv.shape == (0,) and stats["reward_mean"] == 0.0


# ---------------------------------------------------------------- GRPO: hand-computed


def test_grpo_hand_computed_ragged_unsorted_ids():
    # rewards [1, 0, 0, 1, 1], groups [7, 7, 7, 3, 3]:
    # group 7 = [1, 0, 0]: mean 1/3; deviations [2/3, -1/3, -1/3]; sum of squares 4/9 + 1/9 + 1/9 = 2/3;
    #   Bessel variance (2/3) / (3 - 1) = 1/3; std = sqrt(1/3) = 0.57735;
    #   A = (2/3) / (sqrt(1/3) + 1e-6) = 1.1547 and (-1/3) / (sqrt(1/3) + 1e-6) = -0.57735.
    # group 3 = [1, 1]: all equal -> A = 0 exactly.
    # equal_group_frac = 2 samples of 5 = 0.4; num_groups = 2.
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    ids = torch.tensor([7, 7, 7, 3, 3])
    adv, stats = grpo_advantages(rewards, ids)
    s = math.sqrt(1 / 3) + 1e-6
    _close(adv, [(2 / 3) / s, (-1 / 3) / s, (-1 / 3) / s, 0.0, 0.0])
    assert adv[3] == 0.0 and adv[4] == 0.0
    assert stats["num_groups"] == 2.0
    assert stats["equal_group_frac"] == pytest.approx(0.4, rel=1e-12)


def test_grpo_hand_computed_interleaved_with_singleton():
    # ids [5, 9, 5, 2, 9, 5], rewards [0.5, 1, 1.5, 1, 0, 0.5]:
    # group 5 = [0.5, 1.5, 0.5]: mean 5/6; deviations [-1/3, 2/3, -1/3]; sum sq 2/3; var 1/3; std sqrt(1/3).
    # group 9 = [1, 0]: mean 1/2; deviations [1/2, -1/2]; sum sq 1/2; var 1/2 / 1; std sqrt(1/2) = 0.70711;
    #   A = +-0.5 / (0.70711 + eps) = +-0.70711.
    # group 2 = [1]: size 1 -> A = 0 (no baseline; the reference would give A = r = 1).
    # equal_group_frac: only the singleton counts (trivially all equal) -> 1/6.
    rewards = torch.tensor([0.5, 1.0, 1.5, 1.0, 0.0, 0.5])
    ids = torch.tensor([5, 9, 5, 2, 9, 5])
    eps = 1e-6
    adv, stats = grpo_advantages(rewards, ids, eps=eps)
    s5, s9 = math.sqrt(1 / 3) + eps, math.sqrt(1 / 2) + eps
    _close(adv, [(-1 / 3) / s5, 0.5 / s9, (2 / 3) / s5, 0.0, -0.5 / s9, (-1 / 3) / s5])
    assert stats["num_groups"] == 3.0
    assert stats["equal_group_frac"] == pytest.approx(1 / 6, rel=1e-12)


def test_grpo_all_equal_is_exactly_zero_despite_rounding():
    # Three rewards of 0.1 in float64: 0.1 + 0.1 + 0.1 = 0.30000000000000004, / 3 != 0.1,
    # so r - mean is ~1e-17 and (r - mean) / (0 + 1e-6) would be ~1e-11, not 0. We want exactly 0.
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7], dtype=torch.float64)
    adv, stats = grpo_advantages(rewards, torch.tensor([0, 0, 0, 1, 1]))
    assert torch.equal(adv, torch.zeros(5, dtype=torch.float64))
    assert stats["equal_group_frac"] == 1.0


def test_grpo_empty_and_validation():
    adv, stats = grpo_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert adv.shape == (0,) and stats == {"equal_group_frac": 0.0, "num_groups": 0.0}
    with pytest.raises(ValueError, match="integer"):
        grpo_advantages(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        grpo_advantages(torch.zeros(3), torch.zeros(2, dtype=torch.int64))


# ---------------------------------------------------------------- GRPO: loop vs vectorised


def _grpo_reference(rewards: torch.Tensor, ids: torch.Tensor, eps: float) -> torch.Tensor:
    """Plain loop over groups, torch.std (Bessel) per group; size-1 and all-equal groups -> 0."""
    adv = torch.zeros_like(rewards)
    for gid in set(ids.tolist()):
        idx = [i for i, v in enumerate(ids.tolist()) if v == gid]
        r = rewards[idx]
        if len(idx) < 2 or bool((r == r[0]).all()):
            continue
        adv[idx] = (r - r.mean()) / (r.std() + eps)
    return adv


def _random_groups(gen: torch.Generator, num_groups: int) -> torch.Tensor:
    """Ragged groups (sizes 1..9) with arbitrary non-contiguous ids, shuffled."""
    sizes = torch.randint(1, 10, (num_groups,), generator=gen)
    id_values = torch.randperm(10_000, generator=gen)[:num_groups] * 7 - 20_000  # negatives too
    ids = torch.repeat_interleave(id_values, sizes)
    return ids[torch.randperm(ids.numel(), generator=gen)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("binary", [True, False])
def test_grpo_matches_loop(seed: int, binary: bool):
    gen = torch.Generator().manual_seed(seed)
    ids = _random_groups(gen, num_groups=12)
    if binary:
        rewards = torch.randint(0, 2, ids.shape, generator=gen).float()
    else:
        rewards = torch.rand(ids.shape, generator=gen)
    adv, stats = grpo_advantages(rewards, ids, eps=1e-6)
    torch.testing.assert_close(adv, _grpo_reference(rewards, ids, 1e-6), rtol=RTOL, atol=1e-6)
    assert stats["num_groups"] == float(len(set(ids.tolist())))


def test_grpo_invariants_per_group_mean_zero_and_unit_std():
    # Within each group with distinct rewards, A has mean 0 and Bessel std std/(std+eps) ~ 1.
    gen = torch.Generator().manual_seed(0)
    ids = _random_groups(gen, num_groups=20)
    rewards = torch.rand(ids.shape, generator=gen, dtype=torch.float64)
    adv, _ = grpo_advantages(rewards, ids, eps=0.0)
    for gid in set(ids.tolist()):
        a = adv[ids == gid]
        if a.numel() > 1:
            assert abs(float(a.mean())) < 1e-12
            assert float(a.std()) == pytest.approx(1.0, rel=1e-12)


def test_grpo_permutation_equivariant():
    gen = torch.Generator().manual_seed(3)
    ids = _random_groups(gen, num_groups=8)
    rewards = torch.randint(0, 2, ids.shape, generator=gen).float()
    perm = torch.randperm(ids.numel(), generator=gen)
    adv, _ = grpo_advantages(rewards, ids)
    adv_perm, _ = grpo_advantages(rewards[perm], ids[perm])
    torch.testing.assert_close(adv_perm, adv[perm], rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- nonzero_groups_mask


def test_nonzero_groups_mask_hand_computed():
    # groups: 7 -> [1, 0, 0] (two distinct values: keep), 3 -> [1, 1] (all equal: drop),
    # 4 -> [0] (size 1: drop), 2 -> [0.5, 0.5, 0.25] (keep).
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.5, 0.25])
    ids = torch.tensor([7, 7, 7, 3, 3, 4, 2, 2, 2])
    mask = nonzero_groups_mask(rewards, ids)
    assert mask.tolist() == [True, True, True, False, False, False, True, True, True]


@pytest.mark.parametrize("seed", range(3))
def test_nonzero_groups_mask_matches_loop_and_advantages(seed: int):
    gen = torch.Generator().manual_seed(seed)
    ids = _random_groups(gen, num_groups=15)
    rewards = torch.randint(0, 2, ids.shape, generator=gen).float()
    mask = nonzero_groups_mask(rewards, ids)
    expected = [len(set(rewards[ids == g].tolist())) >= 2 for g in ids.tolist()]
    assert mask.tolist() == expected
    # Dropped samples are exactly those whose GRPO advantage is forced to zero by the group rule.
    adv, stats = grpo_advantages(rewards, ids)
    assert bool((adv[~mask] == 0).all())
    assert stats["equal_group_frac"] == pytest.approx(float((~mask).float().mean()), rel=1e-6)
