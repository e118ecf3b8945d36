"""The learner: torch AdamW, gradient clipping, mini-batches and micro-batches with accumulation.

Micro-batching is exact: every micro-batch's loss is divided by the token count of its whole
mini-batch (`token_count`), so the accumulated gradient equals the one-shot gradient.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from dibs.algorithms.losses import policy_loss, raft_loss
from dibs.platform.rollout import Rollouts, position_ids


class Learner(Protocol):
    def update(self, rollouts: Rollouts, advantages: torch.Tensor, *, seed: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...


def lr_lambda(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based): linear warm-up, then constant
    or cosine decay to 10% at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine" and total > warmup:
        frac = min(1.0, (step - warmup) / (total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
    return 1.0


def token_logprobs(model: torch.nn.Module, rollouts: Rollouts, *, temperature: float = 1.0) -> torch.Tensor:
    """log pi(token_{t+1} | tokens_<=t) for every target position: [B, L-1]."""
    logits = model(input_ids=rollouts.sequences, attention_mask=rollouts.attention_mask,
                   position_ids=position_ids(rollouts.attention_mask)).logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, -1).gather(-1, rollouts.sequences[:, 1:].unsqueeze(-1)).squeeze(-1)


def micro_batches(n: int, size: int) -> list[torch.Tensor]:
    return [torch.arange(i, min(n, i + size)) for i in range(0, n, size)]


class TorchLearner:
    """Owns the trainable policy and its optimizer; `update` runs the clipped epochs of one RL step."""

    def __init__(self, model: torch.nn.Module, *, lr: float, weight_decay: float, grad_clip: float,
                 micro_batch_size: int, total_steps: int, warmup_steps: int = 0, adam_eps: float = 1e-8,
                 schedule: str = "constant", algorithm: str = "grpo", clip_eps: float = 0.2,
                 kl_coef: float = 0.0, epochs: int = 1, minibatches: int = 1,
                 temperature: float = 1.0, ref_model: torch.nn.Module | None = None):
        self.model = model.train()
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, eps=adam_eps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_lambda(s, warmup=warmup_steps, total=total_steps, schedule=schedule))
        self.grad_clip = grad_clip
        self.micro = micro_batch_size
        self.algorithm, self.clip_eps, self.kl_coef = algorithm, clip_eps, kl_coef
        self.epochs, self.minibatches, self.temperature = epochs, minibatches, temperature
        self.ref_model = ref_model.eval() if ref_model is not None else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def training_state(self) -> dict:
        """Optimizer and scheduler state, for checkpoints (the weights are saved with the model)."""
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()}

    def load_training_state(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])

    def _step(self, batch: Rollouts, advantages: torch.Tensor, ref_logp: torch.Tensor | None) -> dict:
        """One optimizer step over `batch`, accumulated over micro-batches."""
        self.opt.zero_grad(set_to_none=True)
        token_count = max(batch.num_tokens, 1)
        totals: dict[str, float] = {}
        for idx in micro_batches(len(batch.texts), self.micro):
            mb = batch.select(idx)
            logp = token_logprobs(self.model, mb, temperature=self.temperature)
            loss, stats = policy_loss(
                self.algorithm, logp, mb.old_logp, advantages[idx], mb.response_mask,
                clip_eps=self.clip_eps, kl_coef=self.kl_coef,
                ref_logp=None if ref_logp is None else ref_logp[idx], token_count=token_count)
            loss.backward()
            w = mb.num_tokens / token_count  # stats are token-means of their micro-batch
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + w * float(v)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.sched.step()
        totals["grad_norm"] = float(grad_norm)
        return totals

    def update(self, rollouts: Rollouts, advantages: torch.Tensor, *, seed: int) -> dict[str, float]:
        """`epochs` passes over the batch, each split by prompt into `minibatches` optimizer steps."""
        ref_logp = None
        if self.kl_coef > 0 and self.ref_model is not None:
            with torch.no_grad():
                ref_logp = token_logprobs(self.ref_model, rollouts, temperature=self.temperature)
        gen = torch.Generator().manual_seed(seed)
        groups = torch.unique(rollouts.group_ids)
        history: list[dict] = []
        for _ in range(self.epochs):
            order = groups[torch.randperm(len(groups), generator=gen)]
            for chunk in order.chunk(self.minibatches):
                idx = torch.nonzero(torch.isin(rollouts.group_ids, chunk)).squeeze(-1)
                if len(idx) == 0:
                    continue
                history.append(self._step(rollouts.select(idx), advantages[idx],
                                          None if ref_logp is None else ref_logp[idx]))
        out = {k: sum(h[k] for h in history) / len(history) for k in history[0]} if history else {}
        out["lr"] = self.sched.get_last_lr()[0]
        out["optimizer_steps"] = float(len(history))
        return out

    def sft_step(self, batch: Rollouts) -> float:
        """One supervised step: token-mean NLL of the response (= RAFT with every advantage 1)."""
        self.opt.zero_grad(set_to_none=True)
        token_count = max(batch.num_tokens, 1)
        total = 0.0
        for idx in micro_batches(len(batch.texts), self.micro):
            mb = batch.select(idx)
            logp = token_logprobs(self.model, mb)
            loss, _ = raft_loss(logp, torch.ones(len(idx)), mb.response_mask, token_count=token_count)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.sched.step()
        return total
