"""Policy losses for RAFT, RAFT++ and GRPO (docs/method.md §5).

Shapes: token tensors are [B, T] (B samples, T response positions, right-padded), `mask` is [B, T]
(bool or float, 1 on response tokens), advantages are per sample, [B].
Every loss is a "token-mean": the sum over valid tokens divided by a token count. Passing the FULL
batch's token count to each micro-batch makes the micro-batch losses (and their gradients) sum
exactly to the full-batch loss, which is what gradient accumulation needs. Instead of a token count a
loss may take per-sample `weights` (sum_b w_b * sum_t loss_bt): `prompt_mean_weights` gives the
per-prompt estimator's, and weights computed over the whole batch sum over micro-batches the same way.
Losses return `(loss, stats)`; stats hold detached Python floats.
"""

import torch
from torch import Tensor

TokenCount = int | float | Tensor

# Bound on |log-ratio| before exp(): exp(20) ~ 5e8 stays finite in fp32/bf16 (verl clamps the same way).
_LOG_RATIO_CLAMP = 20.0


def _check_like(name: str, tensor: Tensor, like: Tensor, like_name: str = "logp") -> None:
    if tensor.shape != like.shape:
        raise ValueError(
            f"{name} must have the shape of {like_name} {tuple(like.shape)}, got {tuple(tensor.shape)}"
        )


def _check_shapes(logp: Tensor, mask: Tensor, advantages: Tensor) -> None:
    if logp.dim() != 2:
        raise ValueError(f"logp must have shape [B, T], got {tuple(logp.shape)}")
    _check_like("mask", mask, logp)
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must have shape [B] = [{logp.shape[0]}], got {tuple(advantages.shape)}")


def token_mean(values: Tensor, mask: Tensor, *, token_count: TokenCount | None = None) -> Tensor:
    """sum(values * mask) / token_count: the token-mean of docs/method.md §5.

    Args:
        values: [B, T].
        mask: [B, T] bool or float.
        token_count: the denominator. Default mask.sum() (this call's valid tokens). For micro-batching,
            pass the whole batch's count so that the micro-batch results sum to the full-batch result.

    Returns:
        0-dim tensor. With the default count and an empty mask the result is 0 (the count is clamped to
        1), keeping the graph intact. An explicit count must be positive (ValueError otherwise).
    """
    _check_like("mask", mask, values, "values")
    mask = mask.to(values.dtype)
    total = (values * mask).sum()
    if token_count is None:
        return total / mask.sum().clamp(min=1.0)
    if not isinstance(token_count, Tensor) and token_count <= 0:
        raise ValueError(f"token_count must be positive, got {token_count}")
    return total / token_count


def prompt_mean_weights(group_ids: Tensor, advantages: Tensor, token_lengths: Tensor) -> Tensor:
    """Per-sample weights of the per-prompt token-mean: each prompt's contributing samples (advantage
    != 0) are token-averaged together, then the prompts that have one are averaged with equal weight.

    w_b = 1 / (P * T_g) for a contributing sample b of group g, where T_g is the response tokens of g's
    contributing samples and P the number of groups with T_g > 0; w_b = 0 for the rest, which carry no
    policy gradient (a group whose contributing samples hold no token has nothing to average and is not
    counted). With ragged groups a prompt's sample count then changes its variance, not its weight.
    Compute them over the whole optimizer batch: a micro-batch's weights are a slice of these.

    Args:
        group_ids: [B] int, the prompt group of each sample (any ids; groups need not be contiguous).
        advantages: [B] per-sample advantages.
        token_lengths: [B] response tokens of each sample.

    Returns:
        [B] float64 weights; they sum to 1 over the samples with tokens (all 0 when no group contributes).
    """
    if not group_ids.shape == advantages.shape == token_lengths.shape or group_ids.dim() != 1:
        raise ValueError(
            f"group_ids, advantages and token_lengths must share one shape [B], got "
            f"{tuple(group_ids.shape)}, {tuple(advantages.shape)}, {tuple(token_lengths.shape)}"
        )
    _, group = torch.unique(group_ids, return_inverse=True)
    contributing = advantages != 0
    tokens = torch.where(contributing, token_lengths.double(), 0.0)
    group_tokens = torch.zeros(int(group.max()) + 1 if len(group) else 0, dtype=torch.float64)
    group_tokens.index_add_(0, group, tokens)
    prompts = int((group_tokens > 0).sum())
    t_g = group_tokens[group]
    return torch.where(contributing & (t_g > 0), 1.0 / (max(prompts, 1) * t_g.clamp(min=1.0)), 0.0)


def weighted_token_sum(values: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
    """sum_b weights[b] * sum_t values[b, t] * mask[b, t]: the loss with per-sample weights.

    Args:
        values: [B, T].
        mask: [B, T] bool or float.
        weights: [B] per-sample weights (constants: detached, cast to values' dtype).

    Returns:
        0-dim tensor (0 for an empty batch, with the graph intact).
    """
    _check_like("mask", mask, values, "values")
    if weights.shape != values.shape[:1]:
        raise ValueError(f"weights must have shape [B] = [{values.shape[0]}], got {tuple(weights.shape)}")
    mask = mask.to(values.dtype)
    return ((values * mask).sum(1) * weights.detach().to(values.dtype)).sum()


def _aggregate(
    values: Tensor, mask: Tensor, token_count: TokenCount | None, weights: Tensor | None
) -> Tensor:
    """The token-mean (the default, unchanged), or the weighted sum when `weights` are given."""
    if weights is None:
        return token_mean(values, mask, token_count=token_count)
    if token_count is not None:
        raise ValueError("pass token_count or weights, not both: they are alternative denominators")
    return weighted_token_sum(values, mask, weights)


def low_var_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Low-variance KL estimator k3 = exp(ref - logp) - (ref - logp) - 1, per token (docs/method.md §5).

    k3 >= 0, is 0 where logp == ref_logp, and its expectation under the policy is KL(pi || pi_ref).
    The log-ratio is clamped to [-20, 20] so exp() stays finite (no gradient beyond the clamp).

    Args:
        logp: [B, T] policy log-probs of the sampled tokens.
        ref_logp: [B, T] reference-policy log-probs of the same tokens.

    Returns:
        [B, T] per-token k3 (padding positions are not masked here; token_mean does that).
    """
    _check_like("ref_logp", ref_logp, logp)
    log_ratio = (ref_logp - logp).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    return torch.exp(log_ratio) - log_ratio - 1.0


def raft_loss(
    logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    token_count: TokenCount | None = None,
    weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Vanilla RAFT: loss = -token_mean(A * logp) with A = r (docs/method.md §5), i.e. SFT on accepted
    samples.

    Args:
        logp: [B, T] policy log-probs of the sampled tokens (with grad).
        advantages: [B] per-sample advantages (RAFT: the 0/1 reward).
        mask: [B, T] response-token mask.
        token_count: token-mean denominator; see `token_mean`.
        weights: [B] per-sample weights instead of a token count; see `weighted_token_sum`.

    Returns:
        loss: 0-dim tensor.
        stats: "pg_loss" (the loss value; with an explicit token_count it is this micro-batch's share).
    """
    _check_shapes(logp, mask, advantages)
    adv = advantages.detach().to(logp.dtype)[:, None]  # [B, 1], broadcast over tokens
    loss = -_aggregate(adv * logp, mask, token_count, weights)
    return loss, {"pg_loss": float(loss.detach())}


def _check_clip_args(clip_eps: float, kl_coef: float, ref_logp: Tensor | None) -> None:
    if not 0.0 < clip_eps < 1.0:
        raise ValueError(f"clip_eps must be in (0, 1), got {clip_eps}")
    if kl_coef < 0.0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    if kl_coef > 0.0 and ref_logp is None:
        raise ValueError(f"kl_coef = {kl_coef} > 0 needs ref_logp, got None")


def _valid_token_means(mask: Tensor, **values: Tensor) -> dict[str, float]:
    """Detached mean of each [B, T] tensor over this call's valid tokens (0.0 when there are none)."""
    with torch.no_grad():
        valid = mask.to(torch.bool)
        n_valid = int(valid.sum())
        return {k: float(v[valid].double().sum()) / n_valid if n_valid else 0.0 for k, v in values.items()}


def clipped_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    kl_coef: float = 0.0,
    ref_logp: Tensor | None = None,
    token_count: TokenCount | None = None,
    weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO-style clipped surrogate used by RAFT++ and GRPO (docs/method.md §5), plus an optional k3 KL
    penalty.

        rho  = exp(logp - old_logp)
        pg   = -token_mean(min(rho * A, clip(rho, 1 - eps, 1 + eps) * A))
        loss = pg + kl_coef * token_mean(low_var_kl(logp, ref_logp))

    Where the clipped branch is the minimum (A > 0 and rho > 1 + eps, or A < 0 and rho < 1 - eps) the
    token's gradient is zero. old_logp and ref_logp are treated as constants (detached).

    Args:
        logp: [B, T] current policy log-probs (with grad).
        old_logp: [B, T] behaviour-policy log-probs (the policy that generated the samples).
        advantages: [B] per-sample advantages.
        mask: [B, T] response-token mask.
        clip_eps: clip range, in (0, 1).
        kl_coef: KL penalty weight, >= 0. kl_coef > 0 needs ref_logp (ValueError otherwise).
        ref_logp: [B, T] reference-policy log-probs, or None. When given, "kl" is reported even if
            kl_coef == 0 (for monitoring) but only added to the loss when kl_coef > 0.
        token_count: token-mean denominator; see `token_mean`.
        weights: [B] per-sample weights instead of a token count; see `weighted_token_sum`. The KL
            term is weighted the same way, so a sample with weight 0 adds no KL either.

    Returns:
        loss: 0-dim tensor.
        stats: "pg_loss" and "kl" (token-means with the given token_count, so with the full count they
            sum over micro-batches; "kl" is 0.0 without ref_logp), "clip_frac" (fraction of this call's
            valid tokens where the clipped branch was taken) and "ratio_mean" (mean rho over this
            call's valid tokens); both are 0.0 when there are no valid tokens.
    """
    _check_shapes(logp, mask, advantages)
    _check_like("old_logp", old_logp, logp)
    _check_clip_args(clip_eps, kl_coef, ref_logp)

    adv = advantages.detach().to(logp.dtype)[:, None]  # [B, 1]
    log_ratio = (logp - old_logp.detach()).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)  # [B, T]
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    pg_loss = -_aggregate(torch.minimum(unclipped, clipped), mask, token_count, weights)

    kl = logp.new_zeros(())
    if ref_logp is not None:
        kl = _aggregate(low_var_kl(logp, ref_logp.detach()), mask, token_count, weights)
    loss = pg_loss + kl_coef * kl if kl_coef > 0.0 else pg_loss

    # The clipped branch is taken where it is strictly below the unclipped one (zero gradient there).
    stats = _valid_token_means(mask, clip_frac=clipped < unclipped, ratio_mean=ratio)
    return loss, {"pg_loss": float(pg_loss.detach()), "kl": float(kl.detach()), **stats}


def policy_loss(
    algorithm: str,
    logp: Tensor,
    old_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    kl_coef: float = 0.0,
    ref_logp: Tensor | None = None,
    token_count: TokenCount | None = None,
    weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Dispatch to the loss of `algorithm` (docs/method.md §5): "raft" | "raftpp" | "grpo".

    "raft" is vanilla RAFT (`raft_loss`): it ignores old_logp, clip_eps and ref_logp, and has no KL
    term, so kl_coef > 0 with "raft" is a ValueError rather than a silently dropped penalty.
    "raftpp" and "grpo" share `clipped_policy_loss`; they differ only in their advantages.

    `weights` (per-sample, e.g. `prompt_mean_weights`) replace `token_count` as the aggregation.
    Shapes and stats: see `raft_loss` and `clipped_policy_loss`. Unknown names raise ValueError.
    """
    match algorithm:
        case "raft":
            if kl_coef > 0.0:
                raise ValueError(f"algorithm 'raft' has no KL penalty, got kl_coef = {kl_coef}; use 'raftpp'")
            return raft_loss(logp, advantages, mask, token_count=token_count, weights=weights)
        case "raftpp" | "grpo":
            if old_logp is None:
                raise ValueError(f"algorithm {algorithm!r} needs old_logp, got None")
            return clipped_policy_loss(
                logp,
                old_logp,
                advantages,
                mask,
                clip_eps=clip_eps,
                kl_coef=kl_coef,
                ref_logp=ref_logp,
                token_count=token_count,
                weights=weights,
            )
        case _:
            raise ValueError(f"unknown algorithm {algorithm!r}; expected 'raft', 'raftpp' or 'grpo'")
