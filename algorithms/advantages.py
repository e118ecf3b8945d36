"""Per-sample advantages for RAFT, RAFT++ and GRPO (docs/method.md §5).

Pure functions over tensors: one reward per sample (`rewards[B]`) and, for GRPO, one group id per
sample (`group_ids[B]`, int64, arbitrary values). Groups may be ragged: under GVM each prompt gets its
own number of samples (docs/method.md §2), so nothing here assumes B = m * n or contiguous groups.
Every function returns `(advantages[B], stats)`; stats hold detached Python floats.
"""

from typing import NamedTuple

import torch
from torch import Tensor


class _Groups(NamedTuple):
    """Dense group indices derived from arbitrary ids (internal)."""

    # [B] int64 in [0, G): position of each sample's group in `counts` (not `index`, which would shadow
    # tuple.index)
    group_of: Tensor
    counts: Tensor  # [G] int64, samples per group
    all_equal: Tensor  # [G] bool, True when every reward in the group is the same


def _as_float(rewards: Tensor) -> Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must have shape [B], got {tuple(rewards.shape)}")
    return rewards if rewards.is_floating_point() else rewards.to(torch.get_default_dtype())


def _groups(rewards: Tensor, group_ids: Tensor) -> _Groups:
    """Map ids to dense indices and compute per-group size and all-equal flags, without a group loop."""
    if group_ids.shape != rewards.shape:
        raise ValueError(
            f"group_ids must have the shape of rewards {tuple(rewards.shape)}, got {tuple(group_ids.shape)}"
        )
    if group_ids.is_floating_point() or group_ids.is_complex() or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    _, index = torch.unique(group_ids, return_inverse=True)
    num_groups = int(index.max()) + 1 if index.numel() else 0
    counts = torch.bincount(index, minlength=num_groups)
    # A group is all-equal when its min equals its max; comparing extremes is exact, whereas
    # r - mean can leave rounding noise (e.g. three rewards of 0.1 have mean 0.10000000000000002).
    lo = rewards.new_full((num_groups,), float("inf")).scatter_reduce(0, index, rewards, "amin")
    hi = rewards.new_full((num_groups,), float("-inf")).scatter_reduce(0, index, rewards, "amax")
    return _Groups(group_of=index, counts=counts, all_equal=lo == hi)


def raft_advantages(rewards: Tensor) -> tuple[Tensor, dict[str, float]]:
    """RAFT / RAFT++ advantage: A = r (docs/method.md §5; r ∈ {0, 1} from the verifier).

    Args:
        rewards: [B] rewards; an integer tensor is cast to the default float dtype.

    Returns:
        advantages: [B], a detached copy of the rewards (so later in-place edits cannot alias them).
        stats: "reward_mean" (0.0 for an empty batch).
    """
    rewards = _as_float(rewards).detach()
    mean = float(rewards.mean()) if rewards.numel() else 0.0
    return rewards.clone(), {"reward_mean": mean}


def _mean_std(rewards: Tensor, groups: _Groups) -> tuple[Tensor, Tensor]:
    """Per group: the mean reward and the Bessel-corrected std (a size-1 group's std is 0 / 1 = 0)."""
    counts = groups.counts.to(rewards.dtype)
    num_groups = counts.numel()
    sums = rewards.new_zeros(num_groups).index_add_(0, groups.group_of, rewards)
    mean = sums / counts.clamp(min=1)
    centred = rewards - mean[groups.group_of]  # [B]
    sq_sums = rewards.new_zeros(num_groups).index_add_(0, groups.group_of, centred * centred)
    return mean, torch.sqrt(sq_sums / (counts - 1).clamp(min=1))  # Bessel correction


def group_stats(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample, its group's mean reward and Bessel-corrected std: the baseline and the scale GRPO
    uses, for callers that take them from a larger set of samples than the batch they train on
    (reinforce_ada: a prompt's whole pool, docs/method.md §8).

    The std is exactly 0 for a group whose rewards are all equal (whatever the rounding of the mean) and
    for a group of size 1, so `scale == 0` marks a group without signal; `grpo_advantages` gives such
    samples A = 0, as it does its own all-equal groups and singletons.

    Returns:
        mean: [B], std: [B], both detached, dtype of `rewards` (an integer tensor is cast to the default
        float dtype).
    """
    rewards = _as_float(rewards).detach()
    groups = _groups(rewards, group_ids)
    mean, std = _mean_std(rewards, groups)
    no_signal = groups.all_equal | (groups.counts < 2)
    std = torch.where(no_signal, torch.zeros_like(std), std)
    return mean[groups.group_of], std[groups.group_of]


def _checked_baseline(rewards: Tensor, baseline: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    out = []
    for name, x in (("baseline", baseline), ("scale", scale)):
        if x.shape != rewards.shape:
            raise ValueError(
                f"{name} must have the shape of rewards {tuple(rewards.shape)}, got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"{name} must be finite, got a NaN or inf at sample {int((~torch.isfinite(x)).nonzero()[0])}"
            )
        out.append(x.detach().to(rewards.dtype))
    if bool((out[1] < 0).any()):
        raise ValueError(f"scale must be >= 0, got {float(out[1].min())}")
    return out[0], out[1]


def grpo_advantages(
    rewards: Tensor,
    group_ids: Tensor,
    *,
    eps: float = 1e-6,
    baseline: Tensor | None = None,
    scale: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """GRPO advantage A = (r - mean_g) / (std_g + eps) per group (docs/method.md §5).

    std_g is the Bessel-corrected (unbiased) standard deviation, as `torch.std` and the reference.
    Groups are given by `group_ids`, so ragged group sizes work (under GVM each prompt has its own n_i).

    With `baseline` and `scale` (per sample, e.g. from `group_stats` over a larger pool of samples than the
    batch), A = (r - baseline) / (scale + eps) instead, and A = 0 exactly where scale == 0 (a pool without
    signal: all equal, or a single sample); the batch's own groups then only feed the stats.

    Edge cases:
        * Group of size 1: A = 0. There is no baseline to compare a lone sample against; the reference
          code gives A = r there (mean 0, std 1), which pushes a lone sample up whatever its quality.
        * Group whose rewards are all equal (all correct, all wrong): A = 0 exactly, not rounding noise.
        * Empty batch: empty advantages; stats are 0.

    Args:
        rewards: [B] rewards; an integer tensor is cast to the default float dtype.
        group_ids: [B] integer ids, one per sample; any values, not necessarily sorted or contiguous.
        eps: added to the std in the denominator.
        baseline, scale: [B] finite floats (scale >= 0), both or neither; None: each group's own.

    Returns:
        advantages: [B] detached, dtype of `rewards`.
        stats: "equal_group_frac" (fraction of samples in groups of the batch whose rewards are all equal,
            size-1 groups included), "num_groups".
    """
    rewards = _as_float(rewards).detach()
    groups = _groups(rewards, group_ids)
    if (baseline is None) != (scale is None):
        raise ValueError("baseline and scale come together: pass both (per sample) or neither")
    if baseline is None or scale is None:
        mean, std = _mean_std(rewards, groups)
        centred = rewards - mean[groups.group_of]  # [B]
        adv = centred / (std[groups.group_of] + eps)
        no_signal = groups.all_equal | (groups.counts < 2)  # [G]: all-equal groups and singletons
        adv = torch.where(no_signal[groups.group_of], torch.zeros_like(adv), adv)
    else:
        baseline, scale = _checked_baseline(rewards, baseline, scale)
        adv = (rewards - baseline) / (scale + eps)
        adv = torch.where(scale == 0, torch.zeros_like(adv), adv)
    num_groups = groups.counts.numel()
    num_equal = int(groups.all_equal[groups.group_of].sum())
    equal_frac = num_equal / rewards.numel() if rewards.numel() else 0.0
    return adv, {"equal_group_frac": equal_frac, "num_groups": float(num_groups)}


def nonzero_groups_mask(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """True for samples whose group holds at least two distinct rewards (DAPO-style group filter).

    Samples in all-equal groups (size-1 groups included) carry zero GRPO advantage, so a learner may
    drop them rather than spend compute on them.

    Args:
        rewards: [B] rewards.
        group_ids: [B] integer ids, any values.

    Returns:
        [B] bool tensor.
    """
    rewards = _as_float(rewards).detach()
    groups = _groups(rewards, group_ids)
    return ~groups.all_equal[groups.group_of]
