"""The RL loop as named stages (style.md habit 5):

    sample_prompts -> allocate -> generate -> score -> advantages -> update -> sync_weights
    -> evaluate -> record

Each stage is a small function over typed values; `train` strings them together. Where the loop
executes (a Ray worker or the driver itself) is the executor's business (runner.py), not the loop's.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from dibs.algorithms.advantages import grpo_advantages, nonzero_groups_mask, raft_advantages
from dibs.algorithms.allocation import uniform_allocation
from dibs.platform import metrics as M
from dibs.platform.config import ExperimentConfig
from dibs.platform.evaluate import evaluate, score_rollouts
from dibs.platform.learner import TorchLearner
from dibs.platform.model import build_base_model, load
from dibs.platform.rollout import HFEngine, Rollouts, SamplingSpec
from dibs.platform.task import Problem, TaskData, build_task
from dibs.platform.warm_start import warm_start


class Recorder(Protocol):
    def record(self, step: int, values: dict[str, float], *, rollouts_consumed: int, tokens_generated: int,
               wall_seconds: float) -> None: ...

    def checkpoint(self, step: int, path: str) -> None: ...


class Progress(Protocol):
    def update(self, stage: str, done: int, total: int, info: dict[str, float]) -> None: ...


class NullProgress:
    def update(self, stage: str, done: int, total: int, info: dict[str, float]) -> None:
        pass


@dataclass
class Budget:
    """What the run has spent so far; every metric row carries it (conventions.md)."""

    rollouts: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def wall(self) -> float:
        return time.perf_counter() - self.started


# --- stages ---------------------------------------------------------------------------------------

def sample_prompts(train: list[Problem], batch: int, rng: random.Random, cursor: list[int]) -> list[Problem]:
    """Epochs over a seeded shuffle of the training prompts; `cursor` holds the rest of the epoch."""
    if len(cursor) < batch:
        fresh = list(range(len(train)))
        rng.shuffle(fresh)
        cursor.extend(fresh)
    take, cursor[:] = cursor[:batch], cursor[batch:]
    return [train[i] for i in take]


def allocate(cfg: ExperimentConfig, prompts: list[Problem]) -> np.ndarray:
    """Rollouts per prompt: a per-prompt vector, so GVM allocators slot in here (issue 3)."""
    match cfg.allocation.allocator:
        case "uniform":
            return uniform_allocation(len(prompts), cfg.allocation.n_per_prompt)
    raise ValueError(f"allocation.allocator: unknown allocator {cfg.allocation.allocator!r}")


def generate(engine: HFEngine, cfg: ExperimentConfig, prompts: list[Problem], counts: np.ndarray,
             *, seed: int) -> Rollouts:
    spec = SamplingSpec(temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                        max_new_tokens=cfg.rollout.max_new_tokens)
    return engine.generate([p.prompt for p in prompts], counts.tolist(), spec, seed=seed)


def score(rollouts: Rollouts, prompts: list[Problem]) -> torch.Tensor:
    return score_rollouts(rollouts.texts, rollouts.stopped, [prompts[i].answer for i in rollouts.group_ids])


def advantages(cfg: ExperimentConfig, rewards: torch.Tensor, group_ids: torch.Tensor):
    """Per-sample advantages and the samples the update keeps (all, or DAPO-style non-equal groups)."""
    if cfg.algorithm == "grpo":
        adv, stats = grpo_advantages(rewards, group_ids)
    else:
        adv, stats = raft_advantages(rewards)
    keep = nonzero_groups_mask(rewards, group_ids) if cfg.train.drop_equal_groups else \
        torch.ones_like(rewards, dtype=torch.bool)
    return adv, keep, stats


def update(learner: TorchLearner, rollouts: Rollouts, adv: torch.Tensor, keep: torch.Tensor, *,
           seed: int) -> dict[str, float]:
    idx = torch.nonzero(keep).squeeze(-1)
    if len(idx) == 0:  # nothing to learn from this batch: record it, skip the optimizer step
        return {"samples_used": 0.0}
    stats = learner.update(rollouts.select(idx), adv[idx], seed=seed)
    return stats | {"samples_used": float(len(idx))}


def sync_weights(learner: TorchLearner, engine: HFEngine) -> float:
    """Learner -> rollout engine weight transfer, timed (a copy here; a broadcast across actors)."""
    t = time.perf_counter()
    engine.load_weights(learner.state_dict())
    return time.perf_counter() - t


def step_metrics(rewards: torch.Tensor, rollouts: Rollouts, adv_stats: dict, upd: dict, times: dict,
                 budget: Budget) -> dict[str, float]:
    out = {
        M.ROLLOUT_REWARD: float(rewards.mean()),
        M.ROLLOUT_RESPONSE_LEN: rollouts.num_tokens / len(rollouts.texts),
        M.ROLLOUT_STOP_RATE: float(rollouts.stopped.float().mean()),
        M.ROLLOUT_EQUAL_GROUP_FRAC: float(adv_stats.get("equal_group_frac", 0.0)),
        M.TRAIN_SAMPLES: upd.get("samples_used", 0.0),
        M.BUDGET_ROLLOUTS: float(budget.rollouts),
        M.BUDGET_TOKENS: float(budget.tokens),
    }
    names = {"loss": M.TRAIN_LOSS, "pg_loss": M.TRAIN_PG_LOSS, "kl": M.TRAIN_KL, "clip_frac": M.TRAIN_CLIP_FRAC,
             "ratio_mean": M.TRAIN_RATIO, "grad_norm": M.TRAIN_GRAD_NORM, "lr": M.TRAIN_LR}
    out |= {name: float(upd[k]) for k, name in names.items() if k in upd}
    return out | times


# --- the loop -------------------------------------------------------------------------------------

def build_learner(cfg: ExperimentConfig, model: torch.nn.Module, ref: torch.nn.Module | None) -> TorchLearner:
    t = cfg.train
    steps = t.steps * t.epochs_per_batch * t.minibatches
    return TorchLearner(model, lr=t.lr, weight_decay=t.weight_decay, grad_clip=t.grad_clip,
                        micro_batch_size=t.micro_batch_size, total_steps=steps,
                        warmup_steps=t.warmup_steps, adam_eps=t.adam_eps, schedule=t.lr_schedule, algorithm=cfg.algorithm,
                        clip_eps=t.clip_eps, kl_coef=t.kl_coef, epochs=t.epochs_per_batch,
                        minibatches=t.minibatches, temperature=cfg.rollout.temperature, ref_model=ref)


def prepare(cfg: ExperimentConfig, progress: Progress,
            data: TaskData | None = None) -> tuple[TaskData, torch.nn.Module, HFEngine, float, float]:
    """Task data, base model, warm start: the warm-started policy, a rollout engine, SFT seconds and loss.

    `data` overrides the task built from `cfg.task` (tests and offline machines pass prebuilt splits)."""
    torch.manual_seed(cfg.seed)
    data = data if data is not None else build_task(cfg.task, cfg.seed)
    base = build_base_model(cfg.model, cfg.seed)
    w = cfg.warm_start
    cached = warm_start_cache(cfg, base)
    if w.reuse and (cached / "config.json").is_file():
        policy, tokenizer = load(cached)
        progress.update("warm start", w.steps, w.steps, {"loss": float("nan")})
        return data, policy, HFEngine(copy.deepcopy(policy), tokenizer), 0.0, float("nan")
    policy, tokenizer = load(base)
    sft = TorchLearner(policy, lr=w.lr, weight_decay=0.0, grad_clip=1.0, micro_batch_size=w.batch_size,
                       total_steps=w.steps, warmup_steps=w.warmup_steps, schedule=w.lr_schedule)
    t0 = time.perf_counter()
    loss = warm_start(sft, tokenizer, data.sft, steps=w.steps, batch_size=w.batch_size, seed=cfg.seed,
                      on_step=lambda s, lv: progress.update("warm start", s, w.steps, {"loss": lv}))
    seconds = time.perf_counter() - t0
    if w.reuse:
        policy.save_pretrained(cached)
        tokenizer.save_pretrained(cached)
    engine = HFEngine(copy.deepcopy(policy), tokenizer)
    return data, policy, engine, seconds, loss


def warm_start_cache(cfg: ExperimentConfig, base: Path) -> Path:
    key = json.dumps([cfg.task.model_dump(), cfg.warm_start.model_dump(exclude={"reuse"}), cfg.seed])
    return base.with_name(base.name + "-sft-" + hashlib.sha256(key.encode()).hexdigest()[:12])


def train(cfg: ExperimentConfig, recorder: Recorder, progress: Progress, *, checkpoint_dir: str,
          data: TaskData | None = None) -> dict:
    """Warm start, then `train.steps` RL steps; returns the summary (step-0 and final eval)."""
    budget = Budget()  # wall clock from the start: the warm start is part of the run
    data, policy, engine, sft_seconds, sft_loss = prepare(cfg, progress, data)
    ref = copy.deepcopy(policy).requires_grad_(False) if cfg.train.kl_coef > 0 else None
    learner = build_learner(cfg, policy, ref)
    rng, cursor = random.Random(cfg.seed), []

    def run_eval(step: int) -> dict[str, float]:
        t = time.perf_counter()
        values = evaluate(engine, data.test, cfg.eval, seed=cfg.seed * 7919 + step)
        values[M.TIME_EVAL] = time.perf_counter() - t
        recorder.record(step, values, rollouts_consumed=budget.rollouts, tokens_generated=budget.tokens,
                        wall_seconds=budget.wall)
        progress.update("eval", step, cfg.train.steps, values)
        return values

    first = run_eval(0) | {M.WARM_START_LOSS: sft_loss, M.WARM_START_SECONDS: sft_seconds}
    recorder.record(0, {M.WARM_START_LOSS: sft_loss, M.WARM_START_SECONDS: sft_seconds},
                    rollouts_consumed=0, tokens_generated=0, wall_seconds=budget.wall)
    last = first
    for step in range(1, cfg.train.steps + 1):
        t0 = time.perf_counter()
        prompts = sample_prompts(data.train, cfg.train.prompts_per_step, rng, cursor)
        counts = allocate(cfg, prompts)
        rollouts = generate(engine, cfg, prompts, counts, seed=cfg.seed * 100003 + step)
        t_gen = time.perf_counter() - t0
        budget.rollouts += len(rollouts.texts)
        budget.tokens += rollouts.num_tokens
        rewards = score(rollouts, prompts)
        adv, keep, adv_stats = advantages(cfg, rewards, rollouts.group_ids)
        t1 = time.perf_counter()
        upd = update(learner, rollouts, adv, keep, seed=cfg.seed * 31 + step)
        t_upd = time.perf_counter() - t1
        t_sync = sync_weights(learner, engine)
        times = {M.TIME_GENERATE: t_gen, M.TIME_UPDATE: t_upd, M.TIME_SYNC: t_sync,
                 M.TIME_STEP: time.perf_counter() - t0}
        values = step_metrics(rewards, rollouts, adv_stats, upd, times, budget)
        recorder.record(step, values, rollouts_consumed=budget.rollouts, tokens_generated=budget.tokens,
                        wall_seconds=budget.wall)
        progress.update("rl", step, cfg.train.steps, {"reward": values[M.ROLLOUT_REWARD]})
        if step % cfg.eval.every == 0 or step == cfg.train.steps:
            last = run_eval(step)
        if cfg.runtime.checkpoint_every and step % cfg.runtime.checkpoint_every == 0:
            recorder.checkpoint(step, save_checkpoint(policy, engine, checkpoint_dir, step))
    recorder.checkpoint(cfg.train.steps, save_checkpoint(policy, engine, checkpoint_dir, cfg.train.steps))
    return {"step0": first, "final": last, "rollouts_consumed": budget.rollouts,
            "tokens_generated": budget.tokens, "wall_seconds": budget.wall,
            "data_fingerprint": data.fingerprint()}


def save_checkpoint(policy: torch.nn.Module, engine: HFEngine, root: str, step: int) -> str:
    """The policy in Hugging Face format (loadable by transformers and vLLM)."""
    path = f"{root}/step-{step}"
    policy.save_pretrained(path)
    engine.tok.save_pretrained(path)
    return path
