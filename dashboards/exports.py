"""`dibs export --table compare|targets|budget`: the numbers of the compare page as CSV or JSON.

``compare``: the seed-pooled curve of one metric against one x-axis, one line per (setting, step):
mean and 95% band (empty for a setting with one run); against ``updates`` the rows must hold each run's
``budget/updates`` (`dibs export` reads every metric). ``targets``: the budget-to-target table.
``budget``: where the budget went (budget.py), one line per (setting, pass-rate bin): its points (run,
prompt pairs), their visits and rollouts, the mean of their rollouts per visit, and the reference used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from dibs.platform.store.export import rows_to_csv, to_json

from .budget import Reference, Spread
from .compare import budget_to_target, group_curve, group_runs

CURVE_COLUMNS = ("group", "runs", "step", "x", "mean", "ci_low", "ci_high")
TARGET_COLUMNS = ("group", "runs", "reached", "censored", "rollouts_mean", "rollouts_ci95", "steps_mean",
                  "steps_ci95")  # fmt: skip
BUDGET_COLUMNS = ("group", "runs", "reference", "bin_low", "bin_high", "points", "visits", "rollouts",
                  "rollouts_per_visit")  # fmt: skip


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


def budget_export(ref: Reference, spreads: Sequence[Spread], *, fmt: str) -> str:
    """Mean rollouts per visit by reference pass-rate bin, per setting (``budget.where_budget_went``)."""
    if fmt == "json":
        settings = [{"group": sp.label, "runs": sp.runs, "unreferenced": sp.unreferenced,
                     "bins": [dataclasses.asdict(b) for b in sp.bins]} for sp in spreads]  # fmt: skip
        reference = {"kind": ref.kind, "label": ref.label, "prepasses": ref.prepasses}
        return to_json({"reference": reference, "settings": settings})
    lines = [{
        "group": sp.label, "runs": " ".join(sp.runs), "reference": ref.kind, "bin_low": b.low,
        "bin_high": b.high, "points": b.points, "visits": b.visits, "rollouts": b.rollouts,
        "rollouts_per_visit": b.mean,
    } for sp in spreads for b in sp.bins]  # fmt: skip
    return rows_to_csv(BUDGET_COLUMNS, lines)
