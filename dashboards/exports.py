"""`dibs export --table compare|targets`: the numbers of the compare page as CSV or JSON.

``compare``: the seed-pooled curve of one metric against one x-axis, one line per (setting, step):
mean and 95% band (empty for a setting with one run); against ``updates`` the rows must hold each run's
``budget/updates`` (`dibs export` reads every metric). ``targets``: the budget-to-target table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from dibs.platform.store.export import rows_to_csv, to_json

from .compare import budget_to_target, group_curve, group_runs

CURVE_COLUMNS = ("group", "runs", "step", "x", "mean", "ci_low", "ci_high")
TARGET_COLUMNS = ("group", "runs", "reached", "censored", "rollouts_mean", "rollouts_ci95", "steps_mean",
                  "steps_ci95")  # fmt: skip


Runs = Sequence[Mapping[str, Any]]  # dicts with "id" and "config"
Rows = Mapping[str, Sequence[Mapping]]  # run id -> its metric rows


def compare_export(runs: Runs, rows: Rows, *, metric: str, x: str, fmt: str) -> str:
    """Curves of ``metric`` against ``x`` for ``runs`` (dicts with ``id`` and ``config``)."""
    curves = [group_curve(group, rows, metric, x) for group in group_runs(runs)]
    if fmt == "json":
        return to_json({"metric": metric, "x": x, "curves": [dataclasses.asdict(c) for c in curves]})
    lines = []
    for c in curves:
        for i, step in enumerate(c.steps):
            lines.append({
                "group": c.label, "runs": " ".join(c.runs), "step": step, "x": c.x[i], "mean": c.y[i],
                "ci_low": None if c.lower is None else c.lower[i],
                "ci_high": None if c.upper is None else c.upper[i],
            })  # fmt: skip
    return rows_to_csv(CURVE_COLUMNS, lines)


def targets_export(runs: Runs, rows: Rows, *, metric: str, target: float, fmt: str) -> str:
    """Rollouts and steps to reach ``target`` on ``metric``, per setting (``compare.budget_to_target``)."""
    table = budget_to_target(group_runs(runs), rows, metric, target)
    if fmt == "json":
        return to_json({"metric": metric, "target": target, "settings": table})
    flat = [{
        "group": r["group"], "runs": r["runs"], "reached": r["reached"], "censored": r["censored"],
        "rollouts_mean": r["rollouts"]["mean"], "rollouts_ci95": r["rollouts"]["ci95"],
        "steps_mean": r["steps"]["mean"], "steps_ci95": r["steps"]["ci95"],
    } for r in table]  # fmt: skip
    return rows_to_csv(TARGET_COLUMNS, flat)
