"""The RL loop as named stages (docs/conventions.md, Code style):

    sample_prompts -> allocate -> generate (or dapo's refill) -> score -> advantages -> update
    -> sync_weights -> evaluate -> record

`allocate` may probe the policy first (GVM); the probe's rollouts are charged to the budget before the
step's own rollouts, so `rollouts_consumed` counts them (docs/method.md §3, docs/conventions.md). With
`dapo` the generation stage is its dynamic sampling (allocation/dapo.py): it drops all-equal groups and
refills them with fresh prompts; with `reinforce_ada` it samples in rounds until each prompt's exit rule
(allocation/reinforce_ada.py) and trains on part of each pool; the dropped rollouts are charged too.

Each stage is a small function over typed values; `train` strings them together. The loop sees its
parts only through Protocols: `Runtime` (runtime/base.py) builds a `RolloutEngine` (rollout/base.py), a
`Learner` (learn/base.py) and an `Allocator` (allocation/allocators.py). Where the loop executes (a Ray
worker or the driver itself) is the executor's business (runner.py), not the loop's.
"""

from __future__ import annotations

import copy
import functools
import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from dibs.algorithms.advantages import grpo_advantages, nonzero_groups_mask, raft_advantages
from dibs.platform.allocation.allocators import Allocation, Allocator, AllocContext, StepBudget
from dibs.platform.allocation.batch import Batch, GenerationStage
from dibs.platform.allocation.factory import build_allocator, build_stage
from dibs.platform.core import metrics as M
from dibs.platform.core.config import ExperimentConfig
from dibs.platform.learn import checkpoint
from dibs.platform.learn.base import Learner
from dibs.platform.learn.warm_start import Progress
from dibs.platform.rollout.base import RolloutEngine, Rollouts, SamplingSpec, merge_rollouts
from dibs.platform.runtime.base import Runtime
from dibs.platform.runtime.budget import Budget, account, prompt_stats, prompt_tokens, step_budget
from dibs.platform.runtime.local import LocalRuntime
from dibs.platform.runtime.recording import Recorder
from dibs.platform.tasks.base import Problem, Task, TaskData
from dibs.platform.tasks.evaluate import Evaluation, score_groups
from dibs.platform.tasks.registry import make_task

# Added to the step's generation seed for the probe, so probe and rollouts never share a sample stream.
PROBE_SEED_OFFSET = 2**31


# --- stages ---------------------------------------------------------------------------------------


def sample_prompts(train: list[Problem], batch: int, rng: random.Random, cursor: list[int]) -> list[Problem]:
    """Epochs over a seeded shuffle of the training prompts; `cursor` holds the rest of the epoch."""
    if len(cursor) < batch:
        fresh = list(range(len(train)))
        rng.shuffle(fresh)
        cursor.extend(fresh)
    take, cursor[:] = cursor[:batch], cursor[batch:]
    return [train[i] for i in take]


def allocate(allocator: Allocator, prompts: list[Problem], ctx: AllocContext, budget: Budget) -> Allocation:
    """Rollouts per prompt. A probing allocator's rollouts are spent first, so they are charged to the
    budget here, before the step's own rollouts (docs/method.md §3: budget accounting counts the probe)."""
    alloc = allocator.allocate(prompts, ctx)
    budget.rollouts += alloc.probe_rollouts
    budget.probe_rollouts += alloc.probe_rollouts
    budget.tokens += alloc.probe_tokens
    return alloc


def sampling_spec(cfg: ExperimentConfig) -> SamplingSpec:
    """How the step's rollouts are sampled; the GVM probe uses the same spec (docs/method.md §3)."""
    return SamplingSpec(
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        max_new_tokens=cfg.rollout.max_new_tokens,
    )


def generate(
    engine: RolloutEngine, cfg: ExperimentConfig, prompts: list[Problem], alloc: Allocation, *, seed: int
) -> Batch:
    """counts[i] samples of prompts[i], after the rollouts the allocator already made for training
    (probe_trains); a prompt with count 0 has no rows, and group ids stay indices into the prompts (so
    `score` and GRPO groups need no remapping)."""
    if alloc.trained is not None and not alloc.counts.any():  # the allocator made the whole batch
        return Batch(prompts, alloc.trained)
    ro = engine.generate([p.prompt for p in prompts], alloc.counts.tolist(), sampling_spec(cfg), seed=seed)
    if alloc.trained is not None:
        # Pad id 0: padded positions have attention and response masks 0, so the token is never read.
        ro = merge_rollouts([alloc.trained, ro], torch.cat([alloc.trained.group_ids, ro.group_ids]), pad_id=0)
    return Batch(prompts, ro)


def score(task: Task, rollouts: Rollouts, prompts: list[Problem]) -> torch.Tensor:
    return score_groups(task, rollouts, prompts)


def advantages(
    cfg: ExperimentConfig,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    baseline: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
):
    """Per-sample advantages and the samples the update keeps (all, or DAPO-style non-equal groups).
    `baseline`/`scale`: GRPO's per-sample mean and std when the batch has them from more rollouts than it
    keeps (reinforce_ada's pools, docs/method.md §8); a group is then all-equal when its pool is (scale 0)."""
    if cfg.algorithm == "grpo":
        adv, stats = grpo_advantages(rewards, group_ids, baseline=baseline, scale=scale)
    else:
        adv, stats = raft_advantages(rewards)
    if not cfg.train.drop_equal_groups:
        keep = torch.ones_like(rewards, dtype=torch.bool)
    elif scale is not None:
        keep = scale > 0
    else:
        keep = nonzero_groups_mask(rewards, group_ids)
    return adv, keep, stats


def update(
    learner: Learner, rollouts: Rollouts, adv: torch.Tensor, keep: torch.Tensor, *, seed: int
) -> dict[str, float]:
    idx = torch.nonzero(keep).squeeze(-1)
    if len(idx) == 0:  # nothing to learn from this batch: record it, skip the optimizer step
        return {"samples_used": 0.0}
    stats = learner.update(rollouts.select(idx), adv[idx], seed=seed)
    return stats | {"samples_used": float(len(idx))}


def sync_weights(learner: Learner, engine: RolloutEngine) -> float:
    """Learner -> rollout engine weight transfer, timed (a copy here; a broadcast across actors). The
    engine slept through the update (vLLM on a shared GPU) and wakes before the weights arrive."""
    t = time.perf_counter()
    engine.wake_up()
    engine.load_weights(learner.state_dict())
    return time.perf_counter() - t


def step_metrics(
    rewards: torch.Tensor,
    rollouts: Rollouts,
    adv_stats: dict,
    upd: dict,
    times: dict,
    spent: dict[str, float],
    stats: dict[str, float],
) -> dict[str, float]:
    """The step's metric rows; `stats`: what the allocator and the generation stage report."""
    n = len(rollouts.texts)  # 0 when dapo kept no group: the step trains on nothing and says so
    out = {
        M.ROLLOUT_REWARD: float(rewards.mean()) if n else float("nan"),
        M.ROLLOUT_RESPONSE_LEN: rollouts.num_tokens / n if n else float("nan"),
        M.ROLLOUT_STOP_RATE: float(rollouts.stopped.float().mean()) if n else float("nan"),
        M.ROLLOUT_EQUAL_GROUP_FRAC: float(adv_stats.get("equal_group_frac", 0.0)),
        M.TRAIN_SAMPLES: upd.get("samples_used", 0.0),
        M.TRAIN_UPDATES: upd.get("optimizer_steps", 0.0),
    }
    names = {
        "loss": M.TRAIN_LOSS,
        "pg_loss": M.TRAIN_PG_LOSS,
        "kl": M.TRAIN_KL,
        "clip_frac": M.TRAIN_CLIP_FRAC,
        "ratio_mean": M.TRAIN_RATIO,
        "grad_norm": M.TRAIN_GRAD_NORM,
        "lr": M.TRAIN_LR,
    }
    out |= {name: float(upd[k]) for k, name in names.items() if k in upd}
    return out | {k: float(v) for k, v in spent.items()} | stats | times


def planned_metrics(planned: StepBudget) -> dict[str, float]:
    """The step's planned training budget as metric rows (the token rows in tokens mode only)."""
    out = {M.ALLOC_BUDGET_ROLLOUTS: float(planned.rollouts)}
    if planned.tokens is not None:
        out |= {
            M.ALLOC_BUDGET_TOKENS: float(planned.tokens),
            M.ALLOC_TOKENS_PER_ROLLOUT: planned.tokens_per_rollout,
        }
    return out


# --- the loop -------------------------------------------------------------------------------------


@dataclass
class Parts:
    """What every step works with, built once per run: the task (rewards), the policy (the probe
    differentiates it), the engine, the learner, the allocator and, for dapo and reinforce_ada, their
    generation stage."""

    task: Task
    policy: torch.nn.Module
    engine: RolloutEngine
    learner: Learner
    allocator: Allocator
    stage: GenerationStage | None
    spec: SamplingSpec


def rl_step(
    cfg: ExperimentConfig,
    parts: Parts,
    train_set: list[Problem],
    step: int,
    rng: random.Random,
    cursor: list[int],
    budget: Budget,
) -> tuple[dict[str, float], list[M.PromptStat]]:
    """One RL step through the stages: its metric rows and its per-prompt rows."""

    def draw(k: int) -> list[Problem]:  # the next k prompts of the run's epoch stream
        return sample_prompts(train_set, k, rng, cursor)

    t0 = time.perf_counter()
    prompts = draw(cfg.train.prompts_per_step)
    gen_seed = cfg.seed * 100003 + step
    planned = step_budget(cfg, budget)
    ctx = AllocContext(
        parts.engine,
        parts.policy,
        parts.spec,
        gen_seed + PROBE_SEED_OFFSET,
        step,
        score=functools.partial(score_groups, parts.task),
        budget=planned,
    )
    alloc = allocate(parts.allocator, prompts, ctx, budget)
    t_alloc = time.perf_counter() - t0
    if parts.stage is None:
        batch = generate(parts.engine, cfg, prompts, alloc, seed=gen_seed)
    else:  # dapo, reinforce_ada: their rounds sample on the allocation seeds (ctx)
        batch = parts.stage.sample(prompts, ctx, draw)
    t_gen = time.perf_counter() - t0 - t_alloc
    rewards = score(parts.task, batch.rollouts, batch.prompts)
    adv, keep, adv_stats = advantages(cfg, rewards, batch.rollouts.group_ids, batch.baseline, batch.scale)
    t1 = time.perf_counter()
    parts.engine.sleep()  # the learner gets the device memory generation held (vLLM on GPU)
    upd = update(parts.learner, batch.rollouts, adv, keep, seed=cfg.seed * 31 + step)
    budget.updates += int(upd.get("optimizer_steps", 0))
    t_upd = time.perf_counter() - t1
    t_sync = sync_weights(parts.learner, parts.engine)
    spent = account(budget, alloc, batch.rollouts, rewards, adv, keep, batch.dropped)
    telemetry = prompt_stats(batch.prompts, alloc, batch.rollouts, rewards, batch.dropped)
    trained = telemetry[: len(batch.prompts)]
    parts.allocator.observe(
        batch.prompts,
        np.array([r.n_alloc for r in trained], dtype=np.int64),
        np.array([r.accepted for r in trained], dtype=np.int64),
        prompt_tokens(batch.rollouts, len(batch.prompts), batch.dropped),
    )
    times = {
        M.TIME_GENERATE: t_gen,
        M.TIME_UPDATE: t_upd,
        M.TIME_SYNC: t_sync,
        M.TIME_STEP: time.perf_counter() - t0,
    }
    if alloc.probe_rollouts or alloc.trained is not None:  # an allocator that generated (a probe)
        times[M.TIME_ALLOCATE] = t_alloc
    stats = alloc.stats | batch.stats | planned_metrics(planned)
    values = step_metrics(rewards, batch.rollouts, adv_stats, upd, times, spent, stats)
    return values, telemetry


def train(
    cfg: ExperimentConfig,
    recorder: Recorder,
    progress: Progress,
    *,
    checkpoint_dir: str,
    data: TaskData | None = None,
    resume_from: str | None = None,
    runtime: Runtime | None = None,
) -> dict:
    """Warm start (or a checkpoint), then RL steps up to `train.steps`; returns the summary (step-0 and
    final eval). Resuming from a checkpoint of step N continues with step N+1 exactly as the
    uninterrupted run would (checkpoint.py). With several ranks every rank runs this same loop on the
    same data; the runtime's engine and learner split the work (platform/runtime/distributed.py)."""
    runtime = runtime or LocalRuntime()
    task = make_task(cfg.task)
    budget = Budget()  # wall clock from the start: the warm start is part of the run
    data, policy, tokenizer, sft_seconds, sft_loss = runtime.prepare(cfg, progress, data, resume_from)
    ref = copy.deepcopy(policy).requires_grad_(False) if cfg.train.kl_coef > 0 else None
    engine = runtime.engine(cfg, policy, tokenizer)
    parts = Parts(
        task,
        policy,
        engine,
        runtime.learner(cfg, policy, ref),
        build_allocator(cfg.allocation),
        build_stage(cfg.allocation),
        sampling_spec(cfg),
    )
    evaluation = Evaluation(task, data.test, cfg)  # eval.suite's sets are loaded here, once

    def run_eval(step: int) -> dict[str, float]:
        t = time.perf_counter()
        values = evaluation(engine, seed=cfg.seed * 7919 + step)
        values[M.TIME_EVAL] = time.perf_counter() - t
        recorder.record(
            step,
            values,
            rollouts_consumed=budget.rollouts,
            tokens_generated=budget.tokens,
            wall_seconds=budget.wall,
        )
        # The budget rides along: a sweep trial reports it with the evaluation (ASHA's time attribute).
        progress.update(
            "eval",
            step,
            cfg.train.steps,
            values | {M.BUDGET_ROLLOUTS: budget.rollouts, M.BUDGET_TOKENS: budget.tokens},
        )
        return values

    if resume_from is not None:
        state = checkpoint.load(resume_from, learner=parts.learner, allocator=parts.allocator, ref_model=ref)
        rng, cursor, start = checkpoint.restore_rng(state), state.cursor, state.step + 1
        budget.restore(state.budget)
        first, last = state.first_eval, state.last_eval or state.first_eval
    else:
        rng, cursor, start = random.Random(cfg.seed), [], 1
        first = run_eval(0) | {M.WARM_START_LOSS: sft_loss, M.WARM_START_SECONDS: sft_seconds}
        recorder.record(
            0,
            {M.WARM_START_LOSS: sft_loss, M.WARM_START_SECONDS: sft_seconds},
            rollouts_consumed=0,
            tokens_generated=0,
            wall_seconds=budget.wall,
        )
        last = first

    def save(step: int) -> None:
        state = checkpoint.LoopState(step, rng.getstate(), list(cursor), budget.snapshot(), first, last)
        path = checkpoint.save(
            checkpoint_dir,
            step,
            policy=policy,
            tokenizer=tokenizer,
            learner=parts.learner,
            allocator=parts.allocator,
            state=state,
            ref_model=ref,
            dp=runtime.dp,
        )
        recorder.checkpoint(step, path)

    for step in range(start, cfg.train.steps + 1):
        values, telemetry = rl_step(cfg, parts, data.train, step, rng, cursor, budget)
        recorder.record(
            step,
            values,
            rollouts_consumed=budget.rollouts,
            tokens_generated=budget.tokens,
            wall_seconds=budget.wall,
        )
        recorder.record_prompts(step, telemetry)
        progress.update("rl", step, cfg.train.steps, {"reward": values[M.ROLLOUT_REWARD]})
        if step % cfg.eval.every == 0 or step == cfg.train.steps:
            last = run_eval(step)
        if step == cfg.train.steps or (
            cfg.runtime.checkpoint_every and step % cfg.runtime.checkpoint_every == 0
        ):
            save(step)
    return {
        "step0": first,
        "final": last,
        "rollouts_consumed": budget.rollouts,
        "tokens_generated": budget.tokens,
        "wall_seconds": budget.wall,
        "data_fingerprint": data.fingerprint(),
    }
