"""Warm start: supervised fine-tuning on the task's worked solutions, before any RL.

It leaves a policy whose answers are well formed (boxed answer then EOS) but only partly correct, and
more so on short chains than on long ones: the regime where RL, and per-prompt budgets, matter.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerFast

from dibs.platform.core.config import ExperimentConfig
from dibs.platform.learn.learner import TorchLearner
from dibs.platform.learn.model import build_base_model, load, resolve_device
from dibs.platform.rollout.base import Rollouts
from dibs.platform.tasks.base import Problem, Task, TaskData
from dibs.platform.tasks.registry import make_task


class Progress(Protocol):
    """Where the loop reports what it is doing (a live display, a queue, nothing); loop.py re-exports it."""

    def update(self, stage: str, done: int, total: int, info: dict[str, float]) -> None: ...


def encode_solutions(
    tokenizer: PreTrainedTokenizerFast, task: Task, problems: list[Problem]
) -> list[tuple[list[int], int]]:
    """Token ids of BOS + prompt + the task's worked solution + EOS, and the number of response tokens
    (solution + EOS)."""
    out = []
    for p in problems:
        prompt = tokenizer.encode(tokenizer.bos_token + p.prompt, add_special_tokens=False)
        resp = tokenizer.encode(task.solution(p), add_special_tokens=False) + [tokenizer.eos_token_id]
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
        seq[i, width - len(ids) :] = torch.tensor(ids)
        attn[i, width - len(ids) :] = 1
        mask[i, width - 1 - n_resp :] = 1.0
    return Rollouts(
        seq, attn, mask, torch.zeros(B, width - 1), torch.arange(B), [""] * B, torch.ones(B, dtype=torch.bool)
    )


def warm_start(
    learner,
    tokenizer: PreTrainedTokenizerFast,
    task: Task,
    problems: list[Problem],
    *,
    steps: int,
    batch_size: int,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Run `steps` SFT steps on shuffled epochs of `problems` (the task's worked solutions); returns the
    final loss."""
    data = encode_solutions(tokenizer, task, problems)
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


def prepare(
    cfg: ExperimentConfig,
    progress: Progress,
    data: TaskData | None = None,
    *,
    resume_from: str | None = None,
    device: torch.device | None = None,
) -> tuple[TaskData, torch.nn.Module, PreTrainedTokenizerFast, float, float]:
    """Task data, base model, warm start: the warm-started policy (on `device`, by default
    `runtime.device`), its tokenizer, SFT seconds and loss.

    `data` overrides the task built from `cfg.task` (tests and offline machines pass prebuilt splits);
    `resume_from` (a checkpoint) replaces the warm start by the checkpoint's policy."""
    torch.manual_seed(cfg.seed)
    device = device or resolve_device(cfg.runtime.device)
    task = make_task(cfg.task)
    data = data if data is not None else task.splits(cfg.seed)
    if resume_from is not None:
        policy, tokenizer = load(Path(resume_from))
        return data, policy.to(device), tokenizer, 0.0, float("nan")
    base = Path(cfg.model.path) if cfg.model.path else build_base_model(cfg.model, cfg.seed, task.alphabet)
    w = cfg.warm_start
    cached = warm_start_cache(cfg, base, data)
    if w.reuse and (cached / "config.json").is_file():
        policy, tokenizer = load(cached)
        progress.update("warm start", w.steps, w.steps, {"loss": float("nan")})
        return data, policy.to(device), tokenizer, 0.0, float("nan")
    policy, tokenizer = load(base)
    policy.to(device)
    sft = TorchLearner(
        policy,
        lr=w.lr,
        weight_decay=0.0,
        grad_clip=1.0,
        micro_batch_size=w.batch_size,
        total_steps=w.steps,
        warmup_steps=w.warmup_steps,
        schedule=w.lr_schedule,
    )
    t0 = time.perf_counter()
    loss = warm_start(
        sft,
        tokenizer,
        task,
        data.sft,
        steps=w.steps,
        batch_size=w.batch_size,
        seed=cfg.seed,
        on_step=lambda s, lv: progress.update("warm start", s, w.steps, {"loss": lv}),
    )
    seconds = time.perf_counter() - t0
    if w.reuse:
        policy.save_pretrained(cached)
        tokenizer.save_pretrained(cached)
    return data, policy, tokenizer, seconds, loss


def warm_start_cache(cfg: ExperimentConfig, base: Path, data: TaskData) -> Path:
    """Where a reusable warm start lives: keyed by the SFT data itself (its fingerprint), not only the task
    config, so a change in how problems are generated never reuses a stale warm start."""
    key = json.dumps([data.fingerprint(), cfg.warm_start.model_dump(exclude={"reuse"}), cfg.seed])
    return base.with_name(base.name + "-sft-" + hashlib.sha256(key.encode()).hexdigest()[:12])
