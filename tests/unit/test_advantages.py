"""Advantages (docs/method.md §5): hand-computed cases, loop-vs-vectorised, invariants."""

import math

import pytest
import torch

from dibs.algorithms.advantages import group_stats, grpo_advantages, nonzero_groups_mask, raft_advantages

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


# ---------------------------------------------------------------- GRPO with a pool's baseline


def test_group_stats_hand_computed():
    # ids [4, 4, 8, 4, 6, 6, 4], rewards [1, 0, 1, 0, 1, 1, 1]:
    # group 4 = [1, 0, 0, 1]: mean 1/2; squared deviations 4 x 1/4 = 1; Bessel var 1/3; std sqrt(1/3).
    # group 8 = [1]: size 1 -> std 0 (mean 1). group 6 = [1, 1]: all equal -> std 0 (mean 1).
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    ids = torch.tensor([4, 4, 8, 4, 6, 6, 4])
    mean, std = group_stats(rewards, ids)
    s = math.sqrt(1 / 3)
    _close(mean, [0.5, 0.5, 1.0, 0.5, 1.0, 1.0, 0.5])
    _close(std, [s, s, 0.0, s, 0.0, 0.0, s])
    assert std[2] == 0.0 and std[4] == 0.0 and std[5] == 0.0
    # Three rewards of 0.1: the mean rounds, the std is still exactly 0.
    _, std = group_stats(torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64), torch.tensor([0, 0, 0]))
    assert torch.equal(std, torch.zeros(3, dtype=torch.float64))


def test_grpo_pool_baseline_ragged_groups():
    # A batch kept from larger pools: group 0 kept [1, 0] of a pool [1, 0, 1, 1, 1, 0, 1, 1] (mean 3/4,
    # squared deviations 6 x 1/16 + 2 x 9/16 = 3/2, Bessel var 3/14); group 1 kept [0, 0, 1] of a pool
    # [0, 0, 1, 0] (mean 1/4, squared deviations 3 x 1/16 + 9/16 = 3/4, var 1/4, std 1/2).
    # A = (r - pool mean) / (pool std + eps); the groups' own stats would give +-0.707 and others.
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0])
    ids = torch.tensor([0, 0, 1, 1, 1])
    s0, s1 = math.sqrt(3 / 14), 0.5
    baseline = torch.tensor([0.75, 0.75, 0.25, 0.25, 0.25])
    scale = torch.tensor([s0, s0, s1, s1, s1])
    adv, stats = grpo_advantages(rewards, ids, baseline=baseline, scale=scale)
    e = 1e-6
    _close(adv, [0.25 / (s0 + e), -0.75 / (s0 + e), -0.25 / (s1 + e), -0.25 / (s1 + e), 0.75 / (s1 + e)])
    assert stats == {"equal_group_frac": 0.0, "num_groups": 2.0}


def test_grpo_pool_baseline_all_equal_and_size_one_pools():
    # Group 3 kept [1, 1] of an all-right pool (mean 1, std 0); group 5 is a pool of one sample (std 0);
    # group 7 kept [1, 1] (all equal in the batch) of a mixed pool [1, 1, 0] (mean 2/3, std sqrt(1/3)).
    # Scale 0 -> A = 0 exactly; a group all-equal in the batch still learns from its pool's baseline.
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
    ids = torch.tensor([3, 3, 5, 7, 7])
    s = math.sqrt(1 / 3)
    baseline = torch.tensor([1.0, 1.0, 0.0, 2 / 3, 2 / 3])
    scale = torch.tensor([0.0, 0.0, 0.0, s, s])
    adv, stats = grpo_advantages(rewards, ids, baseline=baseline, scale=scale)
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    _close(adv[3:], [(1 / 3) / (s + 1e-6)] * 2)
    # The stats describe the batch's own groups: all three are all-equal or singletons.
    assert stats == {"equal_group_frac": 1.0, "num_groups": 3.0}


def test_grpo_pool_baseline_from_group_stats_of_the_whole_batch_is_plain_grpo():
    # When the pool is the batch itself, the pool path gives the plain one's advantages.
    gen = torch.Generator().manual_seed(1)
    ids = _random_groups(gen, num_groups=10)
    rewards = torch.randint(0, 2, ids.shape, generator=gen).float()
    mean, std = group_stats(rewards, ids)
    pooled, _ = grpo_advantages(rewards, ids, baseline=mean, scale=std)
    plain, _ = grpo_advantages(rewards, ids)
    torch.testing.assert_close(pooled, plain, rtol=0, atol=1e-6)


def test_grpo_pool_baseline_validation():
    r, ids = torch.tensor([1.0, 0.0]), torch.tensor([0, 0])
    with pytest.raises(ValueError, match="both"):
        grpo_advantages(r, ids, baseline=torch.zeros(2))
    with pytest.raises(ValueError, match="scale must have the shape"):
        grpo_advantages(r, ids, baseline=torch.zeros(2), scale=torch.zeros(3))
    with pytest.raises(ValueError, match="baseline must be a floating"):
        grpo_advantages(r, ids, baseline=torch.zeros(2, dtype=torch.long), scale=torch.zeros(2))
    with pytest.raises(ValueError, match="scale must be finite.*sample 1"):
        grpo_advantages(r, ids, baseline=torch.zeros(2), scale=torch.tensor([0.5, math.nan]))
    with pytest.raises(ValueError, match="scale must be >= 0"):
        grpo_advantages(r, ids, baseline=torch.zeros(2), scale=torch.tensor([0.5, -0.5]))


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
