"""Parameter importance of a sweep, by Optuna's PED-ANOVA over the finished trials.

PED-ANOVA (Watanabe et al., 2023) needs no scikit-learn, which fANOVA, Optuna's default, would add to
dibs' dependencies. The trials are loaded into an in-memory Optuna study; each parameter's distribution
is inferred from the values seen: ints and floats span their observed range (log scale when it covers
more than two decades of positive values), anything else is categorical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

MIN_TRIALS = 4  # fewer finished trials than this: no importance (PED-ANOVA compares quantiles of them)


def param_importance(trials: Sequence[Mapping[str, Any]], mode: str) -> dict[str, float]:
    """``{param: importance}`` summing to 1 over parameters that vary; ``{}`` with fewer than
    ``MIN_TRIALS`` trials that have an objective, or when no parameter varies."""
    done = [t for t in trials if t["objective"] is not None]
    if len(done) < MIN_TRIALS:
        return {}
    distributions = _distributions(done)
    if not distributions:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # optuna logs every trial added otherwise
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for t in done:
        params = {name: _value(t["params"][name], dist) for name, dist in distributions.items()}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, value=t["objective"])
        )
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    found = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    return {name: float(value) for name, value in found.items()}


def _distributions(trials: Sequence[Mapping[str, Any]]) -> dict[str, BaseDistribution]:
    names = sorted({k for t in trials for k in t["params"] if all(k in u["params"] for u in trials)})
    out: dict[str, BaseDistribution] = {}
    for name in names:
        values = [t["params"][name] for t in trials]
        if len({repr(v) for v in values}) < 2:
            continue  # a constant explains nothing
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric and all(isinstance(v, int) for v in values):
            out[name] = IntDistribution(min(values), max(values))
        elif numeric:
            low, high = float(min(values)), float(max(values))
            out[name] = FloatDistribution(low, high, log=low > 0 and high / low > 100)
        else:
            out[name] = CategoricalDistribution(sorted({str(v) for v in values}))
    return out


def _value(raw: Any, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return str(raw)
    return float(raw) if isinstance(dist, FloatDistribution) else int(raw)
