"""The five-benchmark evaluation (docs/method.md §6): mean@k and pass@k per set and their five-set average.

mean@k is the mean accuracy of k samples per problem at temperature T (the paper's metric, k = 8,
T = 1.0); pass@k is the share of problems with at least one correct sample among those k. The average
is unweighted over sets, as the paper's 5-set average. The same functions serve `dibs eval` on a
checkpoint and the periodic evaluation inside a training run (`eval.suite: math5`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from dibs.platform.core import metrics as M
from dibs.platform.core.config import EvalConfig
from dibs.platform.rollout.base import RolloutEngine, SamplingSpec
from dibs.platform.tasks.math import ScoreStats, score
from dibs.platform.tasks.math_data import MathProblem, load_suite


@dataclass(frozen=True)
class SetResult:
    name: str
    problems: int
    mean_at_k: float
    pass_at_k: float
    tokens: int  # response tokens generated
    seconds: float


@dataclass
class SuiteResult:
    suite: str
    k: int
    temperature: float
    max_new_tokens: int
    sets: list[SetResult]
    stats: ScoreStats = field(default_factory=ScoreStats)

    @property
    def mean_at_k(self) -> float:
        return sum(s.mean_at_k for s in self.sets) / len(self.sets)

    @property
    def pass_at_k(self) -> float:
        return sum(s.pass_at_k for s in self.sets) / len(self.sets)

    def to_json(self) -> dict:
        return {
            "suite": self.suite,
            "k": self.k,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
            "sets": [asdict(s) for s in self.sets],
            "avg": {"mean_at_k": self.mean_at_k, "pass_at_k": self.pass_at_k},
            "scoring": self.stats.as_dict(),
        }


def evaluate_set(
    engine: RolloutEngine,
    name: str,
    problems: list[MathProblem],
    *,
    k: int,
    spec: SamplingSpec,
    seed: int,
    stats: ScoreStats,
    batch_problems: int = 64,
) -> SetResult:
    """k samples of every problem, generated `batch_problems` problems at a time (bounded memory)."""
    t0 = time.perf_counter()
    correct = [0] * len(problems)  # correct samples per problem
    tokens = 0
    for start in range(0, len(problems), batch_problems):
        batch = problems[start : start + batch_problems]
        ro = engine.generate([p.prompt for p in batch], [k] * len(batch), spec, seed=seed + start)
        tokens += ro.num_tokens
        for text, g in zip(ro.texts, ro.group_ids.tolist(), strict=True):
            correct[start + g] += int(score(text, batch[g].answer, stats=stats))
    n = max(len(problems), 1)
    return SetResult(
        name,
        len(problems),
        sum(c / k for c in correct) / n,
        sum(c > 0 for c in correct) / n,
        tokens,
        time.perf_counter() - t0,
    )


def evaluate_suite(
    engine: RolloutEngine,
    suite: str,
    sets: dict[str, list[MathProblem]],
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_problems: int = 64,
    on_set=None,
) -> SuiteResult:
    """Every set of the suite with the same sampling spec; `on_set(SetResult)` after each (progress)."""
    spec = SamplingSpec(temperature=temperature, max_new_tokens=max_new_tokens)
    result = SuiteResult(suite, k, temperature, max_new_tokens, [])
    for i, (name, problems) in enumerate(sets.items()):
        res = evaluate_set(
            engine,
            name,
            problems,
            k=k,
            spec=spec,
            seed=seed + 1_000_003 * i,
            stats=result.stats,
            batch_problems=batch_problems,
        )
        result.sets.append(res)
        if on_set is not None:
            on_set(res)
    return result


class SuiteEvaluation:
    """`eval.suite` inside a training run (tasks/evaluate.py, `Evaluation`): the sets loaded once, then
    mean@k / pass@k at eval.k and eval.temperature at every evaluation, as `dibs eval` records them."""

    def __init__(self, cfg: EvalConfig, *, template: str):
        self.cfg = cfg
        self.sets = load_suite(cfg.suite, cfg.data_dir, template=template, limit=cfg.limit)

    def __call__(self, engine: RolloutEngine, *, seed: int) -> dict[str, float]:
        e = self.cfg
        return suite_metrics(
            evaluate_suite(
                engine,
                e.suite,
                self.sets,
                k=e.k,
                temperature=e.temperature,
                max_new_tokens=e.max_new_tokens,
                seed=seed,
            )
        )


def suite_metrics(result: SuiteResult) -> dict[str, float]:
    """{metric name: value}: per set and `avg` mean@k / pass@k, problems per set, and k and T themselves
    (rows of their own, so that a reader never pools evaluations of different k or T)."""
    out: dict[str, float] = {}
    for s in result.sets:
        out[M.eval_suite_metric(result.suite, s.name, M.MEAN_AT_K)] = s.mean_at_k
        out[M.eval_suite_metric(result.suite, s.name, M.PASS_AT_K)] = s.pass_at_k
        out[M.eval_suite_metric(result.suite, s.name, M.PROBLEMS)] = float(s.problems)
    out[M.eval_suite_metric(result.suite, M.SUITE_AVG, M.MEAN_AT_K)] = result.mean_at_k
    out[M.eval_suite_metric(result.suite, M.SUITE_AVG, M.PASS_AT_K)] = result.pass_at_k
    out[M.eval_suite_setting(result.suite, "k")] = float(result.k)
    out[M.eval_suite_setting(result.suite, "temperature")] = result.temperature
    return out


def format_table(result: SuiteResult) -> str:
    """The printed report: one line per set and the average, with k and T in the header."""
    head = (
        f"{result.suite}: mean@{result.k} / pass@{result.k} at T={result.temperature:g}, "
        f"max {result.max_new_tokens} new tokens"
    )
    lines = [head, f"  {'set':<16}{'problems':>9}{'mean@k':>9}{'pass@k':>9}{'tokens/s':>10}"]
    for s in result.sets:
        rate = s.tokens / s.seconds if s.seconds > 0 else 0.0
        lines.append(
            f"  {s.name:<16}{s.problems:>9}{100 * s.mean_at_k:>8.2f}%{100 * s.pass_at_k:>8.2f}%{rate:>10.0f}"
        )
    lines.append(f"  {'average':<16}{'':>9}{100 * result.mean_at_k:>8.2f}%{100 * result.pass_at_k:>8.2f}%")
    st = result.stats.as_dict()
    lines.append(
        f"  scoring: {st['calls']} checks, {st['no_answer']} without an answer, "
        f"{st['errors']} errors, {st['timeouts']} timeouts"
    )
    return "\n".join(lines)
