"""Held-out evaluation: greedy accuracy, mean@k at temperature T, format rate, accuracy per level.

With `eval.suite: math5` the loop also runs the paper's five-benchmark evaluation (tasks/math_eval.py)."""

from __future__ import annotations

from collections import defaultdict

import torch

from dibs.platform.core import metrics as M
from dibs.platform.core.config import EvalConfig
from dibs.platform.rollout.base import RolloutEngine, Rollouts, SamplingSpec
from dibs.platform.tasks.math import extract_answer
from dibs.platform.tasks.math import score as math_score
from dibs.platform.tasks.task import Problem, score, well_formed


def reward(text: str, answer: int | str, *, stopped: bool) -> float:
    """0/1 reward of one response. `chain_sum` gold answers are integers, scored strictly (task.score);
    `math` gold answers are text, verified with Math-Verify (tasks/math.score) as the paper's reward,
    whether or not the response stopped (a truncated one rarely holds a final answer)."""
    if isinstance(answer, str):
        return math_score(text, answer)
    return score(text, answer, stopped=stopped)


def _formed(text: str, answer: int | str, *, stopped: bool) -> bool:
    """eval/format_rate: chain_sum's strict format, or (math) a final answer that can be extracted."""
    if isinstance(answer, str):
        return stopped and extract_answer(text) is not None
    return well_formed(text, stopped=stopped)


def score_rollouts(texts: list[str], stopped: torch.Tensor, answers: list[int | str]) -> torch.Tensor:
    """0/1 reward per sample (see `reward`)."""
    return torch.tensor([reward(t, a, stopped=bool(s)) for t, s, a in zip(texts, stopped.tolist(), answers)])


def score_groups(rollouts: Rollouts, answers: list[int | str]) -> torch.Tensor:
    """[B] reward of each sample of a grouped batch: sample b answers prompt group_ids[b], whose gold
    answer is answers[group_ids[b]]. Prompts with no samples (count 0) simply have no rows."""
    return score_rollouts(rollouts.texts, rollouts.stopped, [answers[i] for i in rollouts.group_ids.tolist()])


def evaluate(engine: RolloutEngine, problems: list[Problem], cfg: EvalConfig, *, seed: int) -> dict[str, float]:
    """One evaluation of the current policy on `problems`; returns {metric name: value}."""
    prompts = [p.prompt for p in problems]
    answers = [p.answer for p in problems]
    greedy = engine.generate(prompts, [1] * len(prompts), SamplingSpec(max_new_tokens=cfg.max_new_tokens,
                                                                       greedy=True), seed=seed)
    correct = score_groups(greedy, answers)
    formed = [_formed(t, a, stopped=bool(s)) for t, s, a in zip(greedy.texts, greedy.stopped.tolist(), answers)]
    out = {
        M.EVAL_ACCURACY: float(correct.mean()),
        M.EVAL_FORMAT_RATE: sum(formed) / len(formed),
        M.EVAL_RESPONSE_LEN: greedy.num_tokens / len(problems),
    }
    by_level: dict[int, list[float]] = defaultdict(list)
    for p, c in zip(problems, correct.tolist()):
        if isinstance(p, Problem):  # chain_sum's difficulty levels; math problems have none
            by_level[p.num_terms].append(c)
    for level, vals in sorted(by_level.items()):
        out[M.eval_accuracy_at(level)] = sum(vals) / len(vals)
    sampled = engine.generate(prompts, [cfg.k] * len(prompts),
                              SamplingSpec(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens),
                              seed=seed + 1)
    out[M.EVAL_MEAN_AT_K] = float(score_groups(sampled, answers).mean())
    return out
