"""Probe statistics for GVM allocation (docs/method.md §3): acceptance rates p̂_i and gradient norms Ĝ_i.

Per-sample gradient norms are batched with torch.func: `vmap(grad(loss))` over the samples, with the
chosen parameter subset swapped in by `functional_call`. One vmapped backward replaces B backwards; the
per-sample gradients only exist for the chosen subset, `chunk_size` samples at a time.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from dibs.platform.rollout.base import Rollouts, position_ids

GradParams = Literal["embedding", "lm_head", "last_layer", "all"]
# Per-sample gradient elements held at once by default (2^28 fp32 = 1 GiB): a whole probe batch for the
# smoke model, one or two samples at a time for the embedding of a 1.5B model (151k x 1536 per sample).
GRAD_ELEMENTS = 2**28


def accept_rates(rewards: torch.Tensor, group_ids: torch.Tensor, num_prompts: int) -> np.ndarray:
    """p̂_i = accepted / samples of prompt i (docs/method.md §3); a sample is accepted when its reward is 1.

    Args:
        rewards: [B] rewards in {0, 1}.  group_ids: [B] int64 prompt index in [0, num_prompts).

    Returns:
        [num_prompts] float64; 0 for a prompt with no samples (nothing seen, nothing accepted).
    """
    accepted, samples = accepted_counts(rewards, group_ids, num_prompts)
    return accepted / np.maximum(samples, 1)


def accepted_counts(
    rewards: torch.Tensor, group_ids: torch.Tensor, num_prompts: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt: how many of its samples were accepted (reward 1) and how many it had, both [num_prompts]
    int64 (0 for a prompt without samples)."""
    gids = _checked_ids(group_ids, num_prompts)
    accepted = np.bincount(gids, weights=(rewards == 1).double().cpu().numpy(), minlength=num_prompts)
    return accepted.astype(np.int64), np.bincount(gids, minlength=num_prompts)


def grad_norm_estimates(
    model: torch.nn.Module,
    rollouts: Rollouts,
    rewards: torch.Tensor,
    num_prompts: int,
    *,
    params: GradParams,
    temperature: float = 1.0,
) -> np.ndarray:
    """Ĝ_i = mean of ‖∇ L‖₂ over the accepted (reward 1) samples of prompt i (docs/method.md §3).

    Only accepted samples are differentiated: G_i is conditioned on acceptance, so the others would be
    wasted backward passes.

    Returns:
        [num_prompts] float64; 0 for a prompt with no accepted sample (its GVM weight is 0 anyway).
    """
    gids = _checked_ids(rollouts.group_ids, num_prompts)
    idx = torch.nonzero(rewards == 1).squeeze(-1).cpu()
    if len(idx) == 0:
        return np.zeros(num_prompts)
    norms = per_sample_grad_norms(model, rollouts.select(idx), params=params, temperature=temperature)
    sums = np.bincount(gids[idx.numpy()], weights=norms.double().cpu().numpy(), minlength=num_prompts)
    counts = np.bincount(gids[idx.numpy()], minlength=num_prompts)
    return sums / np.maximum(counts, 1)


def per_sample_grad_norms(
    model: torch.nn.Module,
    rollouts: Rollouts,
    *,
    params: GradParams,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """‖∇_θ L_b‖₂ for every sample b, L_b = −Σ_t log π(y_t | x, y_<t) over its response tokens.

    The loss is summed, not length-normalised, as the reference (docs/method.md §3); θ is the subset named by
    `params` (`grad_param_names`). Log-probs follow `learner.token_logprobs`: logits / temperature,
    masks aligned to target positions.

    Args:
        rollouts: B samples; response_mask [B, L-1] selects the summed tokens.
        chunk_size: samples per vmapped pass, which hold chunk_size x |θ| gradient elements at once.
            None: as many as fit in `GRAD_ELEMENTS` (1 GiB of fp32), at least 1.

    Returns:
        [B] float32 norms (0 for a sample with no response token); an empty batch gives shape [0].
    """
    if len(rollouts.texts) == 0:
        return torch.zeros(0)
    names = grad_param_names(model, params)
    named = dict(model.named_parameters())
    theta = {n: named[n].detach() for n in names}
    ro = _trim_padding(rollouts).to(next(iter(theta.values())).device)
    if chunk_size is None:
        chunk_size = max(1, GRAD_ELEMENTS // sum(t.numel() for t in theta.values()))

    def summed_nll(
        theta: dict, seq: torch.Tensor, mask4d: torch.Tensor, pos: torch.Tensor, resp: torch.Tensor
    ) -> torch.Tensor:
        # One unbatched sample [L]; the model sees a batch of 1.
        inputs = {"input_ids": seq[None], "attention_mask": mask4d[None], "position_ids": pos[None]}
        logits = functional_call(model, theta, args=(), kwargs=inputs).logits[0, :-1].float()
        logp = torch.log_softmax(logits / temperature, -1).gather(-1, seq[1:, None]).squeeze(-1)  # [L-1]
        return -(logp * resp).sum()

    per_sample = vmap(grad(summed_nll), in_dims=(None, 0, 0, 0, 0), chunk_size=chunk_size)
    # no_grad: the parameters outside θ still require grad, and without it autograd would also record a
    # graph of the whole per-sample backward on them; torch.func.grad ignores an outer no_grad.
    with torch.no_grad(), _vmappable_attention(model):
        mask4d = _additive_causal_mask(ro.attention_mask, next(iter(theta.values())).dtype)
        grads = per_sample(theta, ro.sequences, mask4d, position_ids(ro.attention_mask), ro.response_mask)
    squares = sum(g.flatten(1).double().pow(2).sum(1) for g in grads.values())  # [B]
    return squares.sqrt().float()


def grad_param_names(model: torch.nn.Module, params: GradParams) -> list[str]:
    """Names (as in `named_parameters`) of the subset `params`, each tensor once.

    Tied embeddings (the demo model): `embedding` and `lm_head` are one tensor, listed once under its
    first name; its gradient then mixes both roles, as in the reference (docs/method.md §3). `is_tied`
    says so.
    """
    first_name = {}
    for name, p in model.named_parameters():  # dedups tied tensors: one name per tensor
        first_name.setdefault(id(p), name)
    match params:
        case "embedding":
            tensors = [model.get_input_embeddings().weight]
        case "lm_head":
            tensors = [model.get_output_embeddings().weight]
        case "last_layer":
            tensors = list(model.get_decoder().layers[-1].parameters())
        case "all":
            tensors = list(model.parameters())
        case _:
            raise ValueError(f"allocation.grad_params: unknown parameter subset {params!r}")
    return list(dict.fromkeys(first_name[id(t)] for t in tensors))


def is_tied(model: torch.nn.Module) -> bool:
    """True when the input embedding is also the output layer (one tensor, two roles)."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


# --- helpers --------------------------------------------------------------------------------------


def _checked_ids(group_ids: torch.Tensor, num_prompts: int) -> np.ndarray:
    gids = group_ids.cpu().numpy().astype(np.int64)
    if gids.size and (gids.min() < 0 or gids.max() >= num_prompts):
        raise ValueError(f"group_ids must lie in [0, {num_prompts}), got [{gids.min()}, {gids.max()}]")
    return gids


def _trim_padding(ro: Rollouts) -> Rollouts:
    """Drop columns that are padding in every sample: accepted probe samples are short, while the probe
    batch is as wide as its longest (often truncated) failure. Padding is masked, so norms are unchanged."""
    real = torch.nonzero(ro.attention_mask.any(0)).squeeze(-1)
    lo, hi = int(real[0]), int(real[-1]) + 1
    return Rollouts(
        ro.sequences[:, lo:hi],
        ro.attention_mask[:, lo:hi],
        ro.response_mask[:, lo : hi - 1],
        ro.old_logp[:, lo : hi - 1],
        ro.group_ids,
        ro.texts,
        ro.stopped,
    )


def _additive_causal_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, L, L] mask in the model's dtype (0 = attend, finfo.min = blocked), built outside vmap.

    transformers builds its mask from the 2-D one with data-dependent branches, which vmap rejects; a
    4-D mask is used as given. finfo.min rather than -inf keeps fully padded query rows finite (NaN-free
    gradients); those rows are never read.
    """
    L = attention_mask.shape[-1]
    causal = torch.ones(L, L, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None] & attention_mask[:, None, :].bool()  # [B, L(query), L(key)]
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )
    return blocked[:, None]


@contextmanager
def _vmappable_attention(model: torch.nn.Module):
    """Eager attention while vmapping: sdpa has no vmap batching rule, so torch would fall back to a
    per-sample loop (measured ~10x slower on the smoke model); eager attention is plain batched matmuls.
    The previous implementation is restored, so the learner's forward passes are untouched."""
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if before is None or before == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)
