"""Scoring and the held-out evaluation, for any task (tasks/base.py):

- `score_groups(task, rollouts, problems)`: the reward of every sample of a grouped batch: the loop's
  `score` stage, and the allocators' probes through `AllocContext.score`;
- `evaluate`: greedy accuracy, mean@k at temperature T, format rate and accuracy per level on a split;
- `Evaluation`: what the loop runs at each evaluation: `evaluate` on the held-out split and, with
  `eval.suite: math5`, the paper's five benchmarks (tasks/math_eval.py), their sets loaded once per run.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from dibs.platform.core import metrics as M
from dibs.platform.core.config import EvalConfig, ExperimentConfig
from dibs.platform.rollout.base import RolloutEngine, Rollouts, SamplingSpec
from dibs.platform.tasks.base import Problem, Task


def score_groups(task: Task, rollouts: Rollouts, problems: list[Problem]) -> torch.Tensor:
    """[B] reward of each sample of a grouped batch: sample b answers problems[group_ids[b]]. Prompts with
    no samples (count 0) simply have no rows."""
    samples = zip(rollouts.texts, rollouts.stopped.tolist(), rollouts.group_ids.tolist(), strict=True)
    return torch.tensor([float(task.reward(text, problems[g], stopped=bool(s))) for text, s, g in samples])


def evaluate(
    engine: RolloutEngine, task: Task, problems: list[Problem], cfg: EvalConfig, *, seed: int
) -> dict[str, float]:
    """One evaluation of the current policy on `problems`; returns {metric name: value}."""
    prompts = [p.prompt for p in problems]
    greedy = engine.generate(
        prompts, [1] * len(prompts), SamplingSpec(max_new_tokens=cfg.max_new_tokens, greedy=True), seed=seed
    )
    correct = score_groups(task, greedy, problems)
    formed = [
        task.well_formed(t, p, stopped=bool(s))
        for t, s, p in zip(greedy.texts, greedy.stopped.tolist(), problems, strict=True)
    ]
    out = {
        M.EVAL_ACCURACY: float(correct.mean()),
        M.EVAL_FORMAT_RATE: sum(formed) / len(formed),
        M.EVAL_RESPONSE_LEN: greedy.num_tokens / len(problems),
    }
    by_level: dict[int, list[float]] = defaultdict(list)
    for p, c in zip(problems, correct.tolist(), strict=True):
        level = task.level(p)
        if level is not None:
            by_level[level].append(c)
    for level, vals in sorted(by_level.items()):
        out[M.eval_accuracy_at(level)] = sum(vals) / len(vals)
    sampled = engine.generate(
        prompts,
        [cfg.k] * len(prompts),
        SamplingSpec(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens),
        seed=seed + 1,
    )
    out[M.EVAL_MEAN_AT_K] = float(score_groups(task, sampled, problems).mean())
    return out


class Evaluation:
    """A run's evaluation: the task on its held-out `test` split, plus `eval.suite`'s sets when set."""

    def __init__(self, task: Task, test: list[Problem], cfg: ExperimentConfig):
        self.task, self.test, self.cfg = task, test, cfg.eval
        self.suite = None
        if cfg.eval.suite != "none":
            from dibs.platform.tasks.math_eval import SuiteEvaluation

            self.suite = SuiteEvaluation(cfg.eval, template=cfg.task.template)

    def __call__(self, engine: RolloutEngine, *, seed: int) -> dict[str, float]:
        values = evaluate(engine, self.task, self.test, self.cfg, seed=seed)
        if self.suite is not None:
            values |= self.suite(engine, seed=seed)
        return values
