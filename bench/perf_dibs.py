"""dibs' side of `make bench` (bench/performance.py): the machine's matmul peak, rollout throughput,
whole RL steps through the real loop (`loop.train`) with where their time goes, and learner efficiency."""

from __future__ import annotations

import copy
import dataclasses
import statistics
import tempfile
import time
from collections import defaultdict

import torch

from dibs.algorithms.advantages import grpo_advantages
from dibs.platform.core import metrics as M
from dibs.platform.core.config import ExperimentConfig
from dibs.platform.core.flops import FORMULA, matmul_params, training_flops
from dibs.platform.learn.learner import TorchLearner, length_micro_batches
from dibs.platform.rollout.base import SamplingSpec
from dibs.platform.runtime.local import LocalRuntime, learner_kwargs
from dibs.platform.runtime.loop import sampling_spec, train
from dibs.platform.runtime.recording import NullProgress, StoreRecorder
from dibs.platform.store import open_store
from dibs.platform.tasks.base import Problem, TaskData
from dibs.platform.tasks.evaluate import score_groups
from dibs.platform.tasks.registry import make_task


def gemm_peak(sizes: tuple[int, ...] = (512, 1024, 2048), reps: int = 7) -> dict:
    """fp32 `torch.mm` of square matrices into a preallocated output (the multiply alone, not the
    allocator), best of `reps` per size; the peak is the best size's rate (this machine's clock and
    neighbours vary, so the best, not the mean, is the peak)."""
    rates = {}
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(a, b, out=c)  # warm-up: thread pool, caches
        best = min(_timed(lambda a=a, b=b, c=c: torch.mm(a, b, out=c)) for _ in range(reps))
        rates[str(n)] = 2.0 * n**3 / best
    return {"gemm_peak_flops_per_s": max(rates.values()), "by_size": rates, "dtype": "float32"}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def rollout_throughput(engine, prompts: list[str], n: int, spec: SamplingSpec, reps: int) -> dict:
    """Generated tokens (EOS included) per second of `engine.generate`, one warm-up call then `reps`."""
    engine.generate(prompts, [n] * len(prompts), spec, seed=10_000)
    tokens, seconds = 0, 0.0
    for rep in range(reps):
        t = time.perf_counter()
        ro = engine.generate(prompts, [n] * len(prompts), spec, seed=rep)
        seconds += time.perf_counter() - t
        tokens += ro.num_tokens
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "calls": reps}


def learner_efficiency(
    cfgs: dict[str, ExperimentConfig],
    policy,
    engine,
    prompts: list[str],
    answers: list,
    rounds: int,
    peak_sizes: tuple[int, ...] = (512, 1024, 2048),
    peak_seconds: float = 0.15,
) -> dict:
    """Achieved training FLOP/s of one GRPO update (forward, backward, AdamW) on a demo-sized batch, for each
    learner setting in `cfgs` (train.compile, train.micro_batch_size), against the fp32 matmul peak
    measured in the same rounds: every round runs each square size's `torch.mm` for `peak_seconds`, then
    one update per setting. This machine's speed swings up to 2x within seconds, so a peak read a minute
    apart from the update (or the best single product of a fast moment) says more about the moment than
    about the learner; alternating both over the same minute compares like with like. The peak is the
    best size's total FLOPs over its total time; each learner's rate is its total FLOPs over its time."""
    cfg = next(iter(cfgs.values()))  # every setting samples the same batch
    batch = engine.generate(prompts, [cfg.allocation.n_per_prompt] * len(prompts), sampling_spec(cfg), seed=0)
    problems = [Problem(p, a) for p, a in zip(prompts, answers, strict=True)]
    adv, _ = grpo_advantages(score_groups(make_task(cfg.task), batch, problems), batch.group_ids)
    learners, first = {}, {}
    for name, cfg in cfgs.items():
        learners[name] = TorchLearner(copy.deepcopy(policy), **learner_kwargs(cfg, None))
        first[name] = _timed(lambda lr=learners[name]: lr.update(batch, adv, seed=0))  # compiles, if on
        learners[name].update(batch, adv, seed=0)
    mats = {n: (torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)) for n in peak_sizes}
    peak_work = {n: [0.0, 0.0] for n in peak_sizes}  # FLOPs, seconds
    times: dict[str, list[float]] = {name: [] for name in cfgs}
    round_peaks = []
    for _ in range(rounds):
        rates = {}
        for n, (a, b, c) in mats.items():
            count, t = 0, time.perf_counter()
            while time.perf_counter() - t < peak_seconds:
                torch.mm(a, b, out=c)  # the multiply alone: no allocation (and no page faults) in the peak
                count += 1
            seconds = time.perf_counter() - t
            peak_work[n][0] += 2.0 * n**3 * count
            peak_work[n][1] += seconds
            rates[str(n)] = 2.0 * n**3 * count / seconds
        round_peaks.append(max(rates.values()))
        for name, learner in learners.items():
            times[name].append(_timed(lambda lr=learner: lr.update(batch, adv, seed=1)))
    by_size = {str(n): f / s for n, (f, s) in peak_work.items()}
    peak = max(by_size.values())
    params, tokens = matmul_params(policy), int(batch.attention_mask.sum())
    flops = training_flops(params, tokens)
    out = {
        "gemm_peak_flops_per_s": peak,
        "gemm_peak_by_size": by_size,
        "peak_seconds_per_size_and_round": peak_seconds,
        "rounds": rounds,
        "round_peaks": round_peaks,
    }
    for name, cfg in cfgs.items():
        ts = times[name]
        rate = flops * len(ts) / sum(ts)
        out[name] = {
            "learner_flops_per_s": rate,
            "peak_fraction": rate / peak,
            "update_seconds": sum(ts) / len(ts),
            "round_seconds": ts,
            "round_peak_fractions": [flops / t / p for t, p in zip(ts, round_peaks, strict=True)],
            "formula": FORMULA,
            "matmul_params": params,
            "non_padding_tokens": tokens,
            **_computed_tokens(batch.attention_mask, cfg.train.micro_batch_size),
            "samples": len(batch.texts),
            "first_update_seconds": first[name],
            "compile": cfg.train.compile,
            "micro_batch_size": cfg.train.micro_batch_size,
        }
    return out


def _computed_tokens(attention_mask: torch.Tensor, micro_batch_size: int) -> dict:
    """The token-slots the learner computes on (each micro-batch cut to its longest row): the real tokens
    plus the padding its micro-batch partition leaves, and how many micro-batches that is."""
    lengths = attention_mask.sum(1)
    runs = length_micro_batches(attention_mask, micro_batch_size)
    return {"padded_tokens": sum(len(r) * int(lengths[r].max()) for r in runs), "micro_batches": len(runs)}


class TimedRecorder:
    """Forwards to the results store and times every write, per step (the loop's recording cost)."""

    def __init__(self, inner: StoreRecorder):
        self.inner, self.seconds, self.values = inner, defaultdict(float), defaultdict(dict)

    def record(self, step, values, **kw) -> None:
        t = time.perf_counter()
        self.inner.record(step, values, **kw)
        self.seconds[step] += time.perf_counter() - t
        self.values[step] |= values

    def record_prompts(self, step, rows) -> None:
        t = time.perf_counter()
        self.inner.record_prompts(step, rows)
        self.seconds[step] += time.perf_counter() - t

    def checkpoint(self, step, path) -> None:
        self.inner.checkpoint(step, path)


class _FixedLength:
    """An engine whose responses all run to max_new_tokens (scaling in response length needs exact
    lengths)."""

    def __init__(self, engine):
        self.engine = engine

    def generate(self, prompts, counts, spec, *, seed):
        return self.engine.generate(prompts, counts, dataclasses.replace(spec, ignore_eos=True), seed=seed)

    def __getattr__(self, name):
        return getattr(self.engine, name)


class _Prepared(LocalRuntime):
    """The loop's local runtime on an already warm-started policy (the cached warm start is keyed by the
    full task data; the bench trims the held-out set, which would miss that cache)."""

    def __init__(self, data: TaskData, policy, tokenizer, fixed_length: bool):
        self.data, self.policy, self.tok, self.fixed_length = data, policy, tokenizer, fixed_length

    def prepare(self, cfg, progress, data, resume_from):
        return self.data, copy.deepcopy(self.policy), self.tok, 0.0, float("nan")

    def engine(self, cfg, policy, tokenizer):
        engine = super().engine(cfg, policy, tokenizer)
        return _FixedLength(engine) if self.fixed_length else engine


def rl_steps(
    cfg: ExperimentConfig,
    data: TaskData,
    policy,
    tokenizer,
    *,
    warmup: int,
    steps: int,
    fixed_length: bool = False,
) -> dict:
    """`warmup` + `steps` RL steps of `cfg` through `loop.train`, recording into a SQLite store; the
    timed steps' stage seconds (from the loop's own time/ metrics) plus the recording time."""
    total = warmup + steps
    cfg = cfg.model_copy(
        update={
            "train": cfg.train.model_copy(update={"steps": total}),
            "eval": cfg.eval.model_copy(update={"every": total, "k": 1}),
        }
    )
    small = dataclasses.replace(data, test=data.test[:8])  # the step-0 and final evals are not timed
    with tempfile.TemporaryDirectory() as work:
        store = open_store(f"sqlite:///{work}/bench.db", upgrade=True)
        run = store.create_run(
            name="bench", experiment="bench", config={}, git_commit=None, versions={}, seed=cfg.seed
        )
        rec = TimedRecorder(StoreRecorder(store, run))
        train(
            cfg,
            rec,
            NullProgress(),
            checkpoint_dir=f"{work}/ckpt",
            data=small,
            runtime=_Prepared(small, policy, tokenizer, fixed_length),
        )
    timed = range(warmup + 1, total + 1)

    def v(step: int, name: str) -> float:
        return rec.values[step].get(name, 0.0)

    stages = defaultdict(list)
    for s in timed:
        gen, upd, sync, whole = (
            v(s, M.TIME_GENERATE) + v(s, M.TIME_ALLOCATE),
            v(s, M.TIME_UPDATE),
            v(s, M.TIME_SYNC),
            v(s, M.TIME_STEP),
        )
        for name, x in (
            ("generate", gen),
            ("update", upd),
            ("sync", sync),
            ("score_and_rest", whole - gen - upd - sync),
            ("record", rec.seconds[s]),
        ):
            stages[name].append(x)
        stages["step"].append(whole + rec.seconds[s])
    tokens = [v(s, M.BUDGET_TOKENS) - v(s - 1, M.BUDGET_TOKENS) for s in timed]
    prompts = cfg.train.prompts_per_step
    seconds = sum(stages["step"])
    return {
        "step_seconds": stages["step"],
        "stage_seconds_mean": {k: statistics.mean(x) for k, x in stages.items()},
        "completion_tokens": tokens,
        "prompts_per_step": prompts,
        "n": cfg.allocation.n_per_prompt,
        "prompts_per_s": prompts * steps / seconds,
        "tokens_per_s": sum(tokens) / seconds,
    }
