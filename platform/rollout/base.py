"""What every rollout engine shares: the `RolloutEngine` Protocol, the `Rollouts` batch and its helpers.

Shapes: B sequences, L = prompt length (left-padded) + response length (right-padded after EOS).
Per-token tensors are aligned to *target* positions, i.e. index t of a [B, L-1] tensor describes token
t+1 of `sequences`, the one predicted from the logits at position t. This is the layout the learner's
log-probs come out in, so no shifting happens anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerFast


@dataclass(frozen=True)
class SamplingSpec:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    greedy: bool = False
    # Benchmarks only: every response runs to max_new_tokens (EOS is not sampled), so lengths are exact.
    ignore_eos: bool = False


@dataclass
class Rollouts:
    """One batch of generated responses, ragged over prompts via `group_ids`."""

    sequences: torch.Tensor  # [B, L] int64, left-padded prompt + response, pad after EOS
    attention_mask: torch.Tensor  # [B, L] int64, 1 on real prompt and response tokens
    response_mask: torch.Tensor  # [B, L-1] float, 1 where the target token is a response token
    old_logp: torch.Tensor  # [B, L-1] float, behaviour log-prob of each target token (0 off-mask)
    group_ids: torch.Tensor  # [B] int64, index of the prompt each sample answers
    texts: list[str]  # decoded responses (no EOS)
    stopped: torch.Tensor  # [B] bool, the response ended with EOS within max_new_tokens

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum().item())

    def select(self, idx: torch.Tensor) -> Rollouts:
        """The sub-batch at sample indices `idx` (used to split into mini- and micro-batches)."""
        return Rollouts(
            self.sequences[idx],
            self.attention_mask[idx],
            self.response_mask[idx],
            self.old_logp[idx],
            self.group_ids[idx],
            [self.texts[i] for i in idx.tolist()],
            self.stopped[idx],
        )

    def to(self, device: torch.device | str) -> Rollouts:
        """The batch's tensors on `device` (the learner's); a no-op where they already are."""
        if self.sequences.device == torch.device(device):
            return self
        return Rollouts(
            self.sequences.to(device),
            self.attention_mask.to(device),
            self.response_mask.to(device),
            self.old_logp.to(device),
            self.group_ids.to(device),
            self.texts,
            self.stopped.to(device),
        )


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's parameters live (a DeepSpeed engine included: under ZeRO-3 its partitions)."""
    return next(module.parameters()).device


class RolloutEngine(Protocol):
    def generate(self, prompts: list[str], counts: list[int], spec: SamplingSpec, *, seed: int) -> Rollouts:
        """Generate counts[i] responses to prompts[i]; group_ids of those samples are i."""
        ...

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Take the learner's new weights in place (no engine restart)."""
        ...

    def sleep(self) -> None:
        """Free what generation holds on a shared device while the learner updates (vLLM on GPU)."""
        ...

    def wake_up(self) -> None:
        """Take it back before the weights arrive and generation resumes."""
        ...


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as `generate` does for left-padded batches."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp_(min=0)


def encode_samples(tok: PreTrainedTokenizerFast, prompts: list[str], counts: list[int]):
    """counts[i] copies of prompts[i], BOS-prefixed and left-padded to one width P (so that chunks of them
    differ only in response length and concatenate by right-padding), and their group ids. Tokenizers
    without a BOS token (Qwen2.5's) get the prompt alone."""
    flat = [p for p, c in zip(prompts, counts, strict=True) for _ in range(c)]
    if not flat:
        raise ValueError("generate: every prompt has a count of 0")
    gids = torch.tensor([i for i, c in enumerate(counts) for _ in range(c)], dtype=torch.long)
    enc = tok(
        [(tok.bos_token or "") + p for p in flat], return_tensors="pt", padding=True, add_special_tokens=False
    )
    return enc, gids


def chunk_rollouts(
    tok: PreTrainedTokenizerFast,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    resp: torch.Tensor,
    resp_mask: torch.Tensor,
    logp: torch.Tensor,
    stopped: torch.Tensor,
) -> Rollouts:
    """One generated chunk in the `Rollouts` layout, on the CPU: prompts [b, P] (left-padded), responses
    [b, R] with `resp_mask` on their tokens (EOS included) and the behaviour log-prob of each. Per-token
    tensors move to target positions (index t describes token t+1); texts leave out EOS and padding."""
    b, P = input_ids.shape
    input_ids, attention_mask = input_ids.cpu(), attention_mask.cpu()
    full_mask = torch.cat([torch.zeros(b, P - 1), resp_mask.float()], dim=1)
    full_logp = torch.cat([torch.zeros(b, P - 1), logp * resp_mask], dim=1)
    attn = torch.cat([attention_mask, resp_mask.long()], dim=1)
    texts = tok.batch_decode(
        resp.masked_fill(~resp_mask | (resp == tok.eos_token_id), tok.pad_token_id), skip_special_tokens=True
    )
    return Rollouts(
        torch.cat([input_ids, resp], dim=1),
        attn,
        full_mask,
        full_logp,
        torch.zeros(b, dtype=torch.long),
        texts,
        stopped,
    )


def _pad_right(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def _concat(parts: list[Rollouts], group_ids: torch.Tensor, *, pad_id: int, pad=_pad_right) -> Rollouts:
    """Stack batches padded to a common width (`pad`: on the right for chunks that share the prompt
    width, on the left for whole batches, see `merge_rollouts`)."""
    width = max(p.sequences.shape[1] for p in parts)
    return Rollouts(
        torch.cat([pad(p.sequences, width, pad_id) for p in parts]),
        torch.cat([pad(p.attention_mask, width, 0) for p in parts]),
        torch.cat([pad(p.response_mask, width - 1, 0.0) for p in parts]),
        torch.cat([pad(p.old_logp, width - 1, 0.0) for p in parts]),
        group_ids,
        [t for p in parts for t in p.texts],
        torch.cat([p.stopped for p in parts]),
    )


def _pad_left(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)


def merge_rollouts(parts: list[Rollouts], group_ids: torch.Tensor, *, pad_id: int) -> Rollouts:
    """Concatenate batches generated separately (their prompt widths may differ) by left-padding whole
    rows to a common width: positions come from the attention mask, so extra left padding changes no
    log-prob. `group_ids` replaces the parts' own ids (they index each part's prompts)."""
    if not parts:
        raise ValueError("merge_rollouts: no batches to merge")
    return _concat(parts, group_ids, pad_id=pad_id, pad=_pad_left)
