"""The learner: torch AdamW, gradient clipping, mini-batches and micro-batches with accumulation.

Micro-batching is exact: every micro-batch's loss is divided by the token count of its whole
mini-batch (`token_count`), so the accumulated gradient equals the one-shot gradient. Data parallelism
is exact the same way: every rank holds the whole batch (the sharded engine gathers it), trains on its
share of the prompt groups, divides by the whole mini-batch's token count, and the gradients are summed
over ranks (DataParallel), so W ranks compute the one-process gradient. With `loss_agg="prompt_mean"`
per-sample weights (algorithms.losses.prompt_mean_weights) take the token count's place, computed over
the whole mini-batch before it is sharded and cut, which keeps both exact.

A learner is composed of two parts: `PolicyUpdate` (the RL update above: epochs, mini- and micro-batches,
the loss) and a `LearnerBackend` (backward, reduction over ranks, optimizer step; backend.py). `TorchLearner`
pairs it with `TorchBackend` (backend.py); `DeepSpeedLearner` (platform/learn/deepspeed_learner.py) with a
DeepSpeed engine.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from dibs.algorithms.batching import padding_partition
from dibs.algorithms.losses import policy_loss, prompt_mean_weights, raft_loss
from dibs.platform.core.parallel import DataParallel
from dibs.platform.learn.backend import LearnerBackend, TorchBackend
from dibs.platform.rollout import qwen_forward as Q
from dibs.platform.rollout.base import Rollouts, module_device, position_ids


def token_logprobs(
    model: torch.nn.Module, rollouts: Rollouts, *, temperature: float = 1.0, logits_fn=None
) -> torch.Tensor:
    """log pi(token_{t+1} | tokens_<=t) for every target position: [B, L-1], on the model's device.
    `logits_fn` replaces `qwen_forward.causal_logits` (the learner's, with a compiled decoder)."""
    rollouts = rollouts.to(module_device(model))
    if Q.supported(model):
        packed = _packed_logprobs(model, rollouts, temperature, logits_fn or Q.causal_logits)
        if packed is not None:
            return packed
    logits = (
        model(
            input_ids=rollouts.sequences,
            attention_mask=rollouts.attention_mask,
            position_ids=position_ids(rollouts.attention_mask),
        )
        .logits[:, :-1]
        .float()
    )
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, -1).gather(-1, rollouts.sequences[:, 1:].unsqueeze(-1)).squeeze(-1)


def _packed_logprobs(
    model: torch.nn.Module, ro: Rollouts, temperature: float, logits_fn
) -> torch.Tensor | None:
    """`token_logprobs` with every row's real tokens moved to column 0 and the width cut to the longest
    row: causal attention then needs no mask (the fast fused kernel) and no column is pure padding.
    Results go back to the batch's own layout. None when a row's real tokens are not one contiguous run
    (every engine's layout is: left-padded prompt, response, right padding)."""
    mask = ro.attention_mask.bool()
    B, L = mask.shape
    lengths = mask.sum(1)
    start = mask.long().argmax(1)
    if not bool(
        (
            mask.long().cumsum(1).gather(1, (start + lengths - 1).clamp(min=0)[:, None]).squeeze(1) == lengths
        ).all()
    ):
        return None
    W = int(lengths.max())
    j = torch.arange(W, device=mask.device)[None]
    valid = j < lengths[:, None]
    ids = ro.sequences.gather(1, (start[:, None] + j).clamp(max=L - 1)).masked_fill(~valid, 0)
    logits = logits_fn(model, ids)[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, W-1]
    # Packed target j sits at column start + j of the batch; invalid ones go to a spare column L-1.
    target = torch.where(valid[:, 1:], start[:, None] + j[:, :-1], L - 1)
    return lp.new_zeros(B, L).scatter(1, target, lp * valid[:, 1:])[:, :-1]


# policy_loss's stats: "pg_loss"/"kl" are token-means over the whole mini-batch's token count (or weighted
# sums with weights of the whole mini-batch, prompt_mean), so they add up over micro-batches and ranks;
# "clip_frac"/"ratio_mean" are means over one call's tokens, weighted.
SUMMED, WEIGHTED = ("pg_loss", "kl"), ("clip_frac", "ratio_mean")


def micro_batches(n: int, size: int) -> list[torch.Tensor]:
    return [torch.arange(i, min(n, i + size)) for i in range(0, n, size)]


# One micro-batch's fixed cost in token-slots: on the demo model a compiled micro-batch costs ~6-12 ms
# beyond ~0.05 ms a token (guards, launches, packing, the loss), so ~120-240 tokens of padding are worth
# one more call. Measured on the 2-core CPU; 100-300 give the same partition of the demo batch, and an
# A/B of 128 against 256 (with a cap of 64 or 128) showed no difference beyond noise.
MICRO_BATCH_OVERHEAD = 128


def length_micro_batches(attention_mask: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Micro-batches of at most `size` samples of similar length, chosen to minimise padding plus a
    fixed cost per call (each is cut to its longest row); the accumulated gradient does not depend on
    how samples are grouped. On the demo's batches: 5 micro-batches and 7,344 padded tokens for 7,089
    real ones, against 4 and 7,744 for fixed chunks of the length-sorted batch. No micro-batch holds a
    single sample where two can be had: the compiled decoder specialises a batch of one and would
    compile a second graph (20-60 s) the first time one turned up."""
    return padding_partition(attention_mask.sum(1), size, MICRO_BATCH_OVERHEAD, min_size=min(2, size))


class PolicyUpdate:
    """The RL update of one step on any `LearnerBackend`: `epochs` passes over the batch, each cut into
    optimizer steps (`mini_batches`), each accumulated over length-grouped micro-batches."""

    def __init__(
        self,
        *,
        micro_batch_size: int,
        algorithm: str,
        clip_eps: float,
        kl_coef: float,
        epochs: int,
        minibatches: int,
        temperature: float,
        ref_model: torch.nn.Module | None,
        dp: DataParallel,
        compile: bool,
        loss_agg: str,
        mini_batch_samples: int | None,
    ):
        if loss_agg not in ("token_mean", "prompt_mean"):
            raise ValueError(f"loss_agg must be 'token_mean' or 'prompt_mean', got {loss_agg!r}")
        if mini_batch_samples is not None and (mini_batch_samples < 1 or minibatches != 1):
            raise ValueError(
                f"mini_batch_samples ({mini_batch_samples}) must be >= 1 and replaces "
                f"minibatches (got {minibatches}, need 1)"
            )
        self.micro, self.dp = micro_batch_size, dp
        self.algorithm, self.clip_eps, self.kl_coef = algorithm, clip_eps, kl_coef
        self.epochs, self.minibatches, self.temperature = epochs, minibatches, temperature
        self.loss_agg, self.mini_batch_samples = loss_agg, mini_batch_samples
        self.ref_model = ref_model.eval() if ref_model is not None else None
        # Compiled once per learner with symbolic shapes: micro-batches differ in size and width.
        self.logits_fn = (
            functools.partial(Q.causal_logits, decoder=torch.compile(Q.decoder_logits, dynamic=True))
            if compile
            else None
        )

    def _step(
        self,
        backend: LearnerBackend,
        batch: Rollouts,
        advantages: torch.Tensor,
        ref_logp: torch.Tensor | None,
    ) -> dict:
        """One optimizer step over `batch` (this rank's share of it), accumulated over micro-batches."""
        backend.zero_grad()
        token_count = max(batch.num_tokens, 1)  # the whole mini-batch's, on every rank
        # prompt_mean: the whole mini-batch's weights, before sharding and micro-batching (both slice them).
        weights = (
            prompt_mean_weights(batch.group_ids, advantages, batch.response_mask.sum(1))
            if self.loss_agg == "prompt_mean"
            else None
        )
        mine = self.dp.shard(batch.group_ids)
        batch, advantages = batch.select(mine), advantages[mine]
        ref_logp = None if ref_logp is None else ref_logp[mine]
        weights = None if weights is None else weights[mine]
        totals: dict[str, float] = {}
        chunks = length_micro_batches(batch.attention_mask, self.micro)
        # Ranks hold ragged shares; DeepSpeed's backward is collective, so every rank runs as many
        # backward passes as the busiest one (zero-loss passes where it has no micro-batch left).
        passes = self.dp.max_int(len(chunks))
        for j in range(passes):
            if j >= len(chunks):
                backend.empty_backward(last=j == passes - 1)
                continue
            idx = chunks[j]
            mb = batch.select(idx).to(backend.device)
            logp = token_logprobs(
                backend.forward_module, mb, temperature=self.temperature, logits_fn=self.logits_fn
            )
            agg = (
                {"token_count": token_count}
                if weights is None
                else {"weights": weights[idx].to(backend.device)}
            )
            loss, stats = policy_loss(
                self.algorithm,
                logp,
                mb.old_logp,
                advantages[idx].to(backend.device),
                mb.response_mask,
                clip_eps=self.clip_eps,
                kl_coef=self.kl_coef,
                ref_logp=None if ref_logp is None else ref_logp[idx].to(backend.device),
                **agg,
            )
            backend.backward(loss, last=j == passes - 1)
            w = mb.num_tokens / token_count
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + (float(v) if k in SUMMED else w * float(v))
        keys = ("pg_loss",) if self.algorithm == "raft" else SUMMED + WEIGHTED
        totals = self.dp.sum_stats({k: totals.get(k, 0.0) for k in keys})
        totals["grad_norm"] = backend.step()
        return totals

    def mini_batches(self, group_ids: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        """One epoch's optimizer steps, as sample indices: the prompt groups shuffled and split into
        `minibatches` chunks, or with `mini_batch_samples` = S the samples shuffled and cut into
        ceil(B / S) runs of S (the last one shorter; a group may straddle two, which is fine since its
        advantages were computed before)."""
        if self.mini_batch_samples is not None:
            perm = torch.randperm(len(group_ids), generator=gen)
            return [chunk.sort().values for chunk in perm.split(self.mini_batch_samples)]
        groups = torch.unique(group_ids)
        order = groups[torch.randperm(len(groups), generator=gen)]
        out = [
            torch.nonzero(torch.isin(group_ids, chunk)).squeeze(-1) for chunk in order.chunk(self.minibatches)
        ]
        return [idx for idx in out if len(idx)]

    def update(
        self, backend: LearnerBackend, rollouts: Rollouts, advantages: torch.Tensor, *, seed: int
    ) -> dict[str, float]:
        """`epochs` passes over the batch, each cut into optimizer steps by `mini_batches`."""
        ref_logp = None
        if self.kl_coef > 0 and self.ref_model is not None:
            with torch.no_grad():
                ref_logp = token_logprobs(self.ref_model, rollouts, temperature=self.temperature).cpu()
        gen = torch.Generator().manual_seed(seed)
        history: list[dict] = []
        for _ in range(self.epochs):
            for idx in self.mini_batches(rollouts.group_ids, gen):
                history.append(
                    self._step(
                        backend,
                        rollouts.select(idx),
                        advantages[idx],
                        None if ref_logp is None else ref_logp[idx],
                    )
                )
        out = {k: sum(h[k] for h in history) / len(history) for k in history[0]} if history else {}
        out["lr"] = backend.lr()
        out["optimizer_steps"] = float(len(history))
        return out


def learner_parts(
    model: torch.nn.Module,
    *,
    lr: float,
    weight_decay: float,
    grad_clip: float,
    micro_batch_size: int,
    total_steps: int,
    warmup_steps: int = 0,
    adam_eps: float = 1e-8,
    schedule: str = "constant",
    algorithm: str = "grpo",
    clip_eps: float = 0.2,
    kl_coef: float = 0.0,
    epochs: int = 1,
    minibatches: int = 1,
    temperature: float = 1.0,
    ref_model: torch.nn.Module | None = None,
    dp: DataParallel | None = None,
    compile: bool = False,
    loss_agg: str = "token_mean",
    mini_batch_samples: int | None = None,
) -> tuple[TorchBackend, PolicyUpdate]:
    """A learner's two parts from its settings (the keywords of `TorchLearner` and `DeepSpeedLearner`,
    `loop.learner_kwargs` builds them from a config): the torch optimizer side and the RL update."""
    dp = dp or DataParallel()
    update = PolicyUpdate(
        micro_batch_size=micro_batch_size,
        algorithm=algorithm,
        clip_eps=clip_eps,
        kl_coef=kl_coef,
        epochs=epochs,
        minibatches=minibatches,
        temperature=temperature,
        ref_model=ref_model,
        dp=dp,
        compile=compile,
        loss_agg=loss_agg,
        mini_batch_samples=mini_batch_samples,
    )
    backend = TorchBackend(
        model,
        lr=lr,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        adam_eps=adam_eps,
        schedule=schedule,
        dp=dp,
    )
    return backend, update


class TorchLearner:
    """The `Learner` (learn/base.py) on torch: `PolicyUpdate` over a `TorchBackend`, and `sft_step` for the
    warm start. Keywords: `learner_parts`."""

    def __init__(self, model: torch.nn.Module, **settings):
        self.backend, self.rl = learner_parts(model, **settings)

    def update(self, rollouts: Rollouts, advantages: torch.Tensor, *, seed: int) -> dict[str, float]:
        return self.rl.update(self.backend, rollouts, advantages, seed=seed)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.backend.weights()

    def save_training_state(self, directory: Path) -> None:
        self.backend.save(directory)

    def load_training_state(self, directory: Path) -> None:
        self.backend.load(directory)

    def sft_step(self, batch: Rollouts) -> float:
        """One supervised step: token-mean NLL of the response (= RAFT with every advantage 1)."""
        b = self.backend
        b.opt.zero_grad(set_to_none=True)
        token_count = max(batch.num_tokens, 1)
        total = 0.0
        for idx in micro_batches(len(batch.texts), self.rl.micro):
            mb = batch.select(idx).to(b.device)
            logp = token_logprobs(b.model, mb)
            loss, _ = raft_loss(
                logp, torch.ones(len(idx), device=b.device), mb.response_mask, token_count=token_count
            )
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(b.model.parameters(), b.grad_clip)
        b.opt.step()
        b.sched.step()
        return total
