"""GRESO's pre-rollout skip rule and the split of a step's budget over the prompts it keeps
(docs/method.md §8, greso). Pure numpy; every input is an explicit argument.

A prompt whose last z visits all gave a group with zero reward variance is kept with probability
max(floor, explore^z): z = 0 always keeps it, and the floor keeps some exploration of long streaks.
"""

import math

import numpy as np
from numpy.typing import ArrayLike


def keep_probability(streak: ArrayLike, explore: ArrayLike, floor: float) -> np.ndarray:
    """[m] max(floor, explore_i ^ streak_i); 1 where the streak is 0.

    Args:
        streak: [m] integers >= 0, the zero-variance visits in a row.
        explore: [m] (or a scalar) exploration probabilities in (0, 1].
        floor: the least keep probability, in [0, 1].
    """
    z = np.asarray(streak)
    e = np.broadcast_to(np.asarray(explore, dtype=np.float64), z.shape)
    if z.ndim != 1 or not np.issubdtype(z.dtype, np.integer) or (z < 0).any():
        raise ValueError(f"streak must be [m] integers >= 0, got {z.tolist()}")
    bad = np.flatnonzero(~((e > 0) & (e <= 1)))
    if bad.size:
        raise ValueError(f"explore[{bad[0]}] = {e[bad[0]]} must be in (0, 1]")
    if not 0 <= floor <= 1:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    return np.where(z == 0, 1.0, np.maximum(floor, e ** z.astype(np.float64)))


def kept_split(
    kept: ArrayLike,
    priority: ArrayLike,
    total: int,
    *,
    min_per_prompt: int = 0,
    max_per_prompt: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`total` rollouts: `min_per_prompt` each, the rest evenly over the kept prompts (the first kept ones
    take the remainder).

    The budget is always spent: when fewer prompts are kept than it needs (at least one while anything is
    left above the floors, and enough that none exceeds `max_per_prompt`), skipped prompts are kept back
    by `priority`, highest first (ties to the lower index).

    Returns:
        (counts [m] int64 summing to total, kept [m] bool: the prompts that shared the rest). ValueError
        for bounds that cannot hold (min x m > total or max x m < total).
    """
    keep = np.asarray(kept, dtype=bool).copy()
    prio = np.asarray(priority, dtype=np.float64)
    m = keep.size
    if keep.ndim != 1 or prio.shape != keep.shape:
        raise ValueError(f"kept and priority must both have shape [m], got {keep.shape} and {prio.shape}")
    lo, hi = min_per_prompt, max_per_prompt
    if total < 0 or int(total) != total:
        raise ValueError(f"total must be an integer >= 0, got {total}")
    if lo < 0 or lo * m > total:
        raise ValueError(f"min_per_prompt={lo} cannot be met: {m} prompts x {lo} > total={total}")
    if hi is not None and (hi < lo or hi * m < total):
        raise ValueError(f"max_per_prompt={hi} cannot be met: {m} prompts x {hi} < total={total}")
    rest = int(total) - lo * m
    counts = np.full(m, lo, dtype=np.int64)
    if rest == 0:
        return counts, keep
    need = 1 if hi is None else max(1, math.ceil(rest / (hi - lo)))
    if keep.sum() < need:
        back = [i for i in np.argsort(-prio, kind="stable") if not keep[i]]
        keep[back[: need - int(keep.sum())]] = True
    idx = np.flatnonzero(keep)
    counts[idx] += rest // idx.size
    counts[idx[: rest % idx.size]] += 1
    return counts, keep
