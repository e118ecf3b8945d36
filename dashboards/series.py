"""Metric curves for comparison views: one metric of one run against a chosen x-axis.

The x-axes are the budget keys every metric row carries (docs/conventions.md), so a curve can be drawn
against steps or against what was spent; and `updates`, the optimizer steps so far, which rows do not
carry: it is read from the run's `budget/updates` row at the same step (0 at step 0, NaN at a step
without one, as in runs recorded before the metric existed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dibs.platform.core import metrics as M

UPDATES = "updates"
X_AXES = ("step", "rollouts_consumed", "tokens_generated", "wall_seconds", UPDATES)
# Axes read from another metric's rows rather than from a column: the metric each needs.
X_METRICS = {UPDATES: M.BUDGET_UPDATES}


def series(rows: Iterable[Mapping], name: str, *, x: str = "step") -> list[tuple[float, float]]:
    """(x, value) points of metric `name`, ordered by step; rows are `dibs export` metric dicts (with
    x = updates they must include the run's `budget/updates` rows)."""
    if x not in X_AXES:
        raise ValueError(f"x-axis must be one of {', '.join(X_AXES)}, got {x!r}")
    rows = list(rows)
    picked = sorted(
        (r for r in rows if r["name"] == name and r["value"] is not None), key=lambda r: r["step"]
    )
    if x == UPDATES:
        counts = (r for r in rows if r["name"] == X_METRICS[UPDATES] and r["value"] is not None)
        at = {0: 0.0} | {r["step"]: r["value"] for r in counts}
        return [(at.get(r["step"], float("nan")), r["value"]) for r in picked]
    return [(r[x], r["value"]) for r in picked]
