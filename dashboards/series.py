"""Metric curves for comparison views: one metric of one run against a chosen x-axis.

The x-axes are the budget keys every metric row carries (conventions.md), so a curve can be drawn
against steps or against what was spent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

X_AXES = ("step", "rollouts_consumed", "tokens_generated", "wall_seconds")


def series(rows: Iterable[Mapping], name: str, *, x: str = "step") -> list[tuple[float, float]]:
    """(x, value) points of metric `name`, ordered by step; rows are `dibs export` metric dicts."""
    if x not in X_AXES:
        raise ValueError(f"x-axis must be one of {', '.join(X_AXES)}, got {x!r}")
    picked = sorted((r for r in rows if r["name"] == name and r["value"] is not None), key=lambda r: r["step"])
    return [(r[x], r["value"]) for r in picked]
