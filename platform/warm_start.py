"""Warm start: supervised fine-tuning on the task's worked solutions, before any RL.

It leaves a policy whose answers are well formed (boxed answer then EOS) but only partly correct, and
more so on short chains than on long ones: the regime where RL, and per-prompt budgets, matter.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from transformers import PreTrainedTokenizerFast

from dibs.platform.rollout import Rollouts
from dibs.platform.task import Problem, solution


def encode_solutions(tokenizer: PreTrainedTokenizerFast, problems: list[Problem]) -> list[tuple[list[int], int]]:
    """Token ids of BOS + prompt + solution + EOS, and the number of response tokens (solution + EOS)."""
    out = []
    for p in problems:
        prompt = tokenizer.encode(tokenizer.bos_token + p.prompt, add_special_tokens=False)
        resp = tokenizer.encode(solution(p), add_special_tokens=False) + [tokenizer.eos_token_id]
        out.append((prompt + resp, len(resp)))
    return out


def collate(examples: list[tuple[list[int], int]], pad_id: int) -> Rollouts:
    """Left-pad into a Rollouts batch whose response_mask covers each solution (targets layout)."""
    width = max(len(ids) for ids, _ in examples)
    B = len(examples)
    seq = torch.full((B, width), pad_id, dtype=torch.long)
    attn = torch.zeros(B, width, dtype=torch.long)
    mask = torch.zeros(B, width - 1)
    for i, (ids, n_resp) in enumerate(examples):
        seq[i, width - len(ids):] = torch.tensor(ids)
        attn[i, width - len(ids):] = 1
        mask[i, width - 1 - n_resp:] = 1.0
    return Rollouts(seq, attn, mask, torch.zeros(B, width - 1), torch.arange(B), [""] * B,
                    torch.ones(B, dtype=torch.bool))


def warm_start(learner, tokenizer: PreTrainedTokenizerFast, problems: list[Problem], *, steps: int,
               batch_size: int, seed: int, on_step: Callable[[int, float], None] | None = None) -> float:
    """Run `steps` SFT steps on shuffled epochs of `problems`; returns the final loss."""
    data = encode_solutions(tokenizer, problems)
    rng = random.Random(seed)
    order: list[int] = []
    loss = float("nan")
    torch.manual_seed(seed)
    for step in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(data)))
            rng.shuffle(fresh)
            order.extend(fresh)
        batch, order = order[:batch_size], order[batch_size:]
        loss = learner.sft_step(collate([data[i] for i in batch], tokenizer.pad_token_id))
        if on_step is not None:
            on_step(step + 1, loss)
    return loss
