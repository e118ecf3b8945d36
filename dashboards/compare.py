"""Comparing runs: which runs differ only by seed, their mean curve with a 95% interval, and the
budget each needed to reach a target accuracy.

Runs are pooled only when their resolved configs are equal once the seed, the run name and `runtime`
(where and how it executed, not what it computed) are set aside, so runs whose eval k or temperature
differ are never pooled (docs/conventions.md); the legend shows k and T. Rows are the store's metric dicts
(``StoreReader.metrics`` / `dibs export`). Pre-pass runs (store/prepass.py) are left out of every group.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dibs.platform.store.prepass import is_prepass

from .efficiency import dagger, first_reach, mean_ci
from .series import series

# What varies between seeds of one setting without changing what was computed.
UNPOOLED_KEYS = ("seed", "name", "runtime")


@dataclass
class Group:
    """Runs with the same setting (all but ``UNPOOLED_KEYS``), in the order they were given."""

    key: str
    label: str
    runs: list[dict[str, Any]] = field(default_factory=list)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-5}}`` -> ``{"train.lr": 1e-5}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def run_facts(config: Mapping[str, Any]) -> dict[str, Any]:
    """The few config values the runs table filters on and the legend shows (None when absent)."""
    flat = flatten(config)
    return {
        "algorithm": flat.get("algorithm"),
        "allocator": flat.get("allocation.allocator"),
        "eval_k": flat.get("eval.k"),
        "eval_temperature": flat.get("eval.temperature"),
    }


def setting(config: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened config without the keys that seeds of one setting may differ in."""
    return {k: v for k, v in flatten(config).items() if k.split(".")[0] not in UNPOOLED_KEYS}


def group_runs(runs: Sequence[Mapping[str, Any]]) -> list[Group]:
    """Runs (dicts with ``config``) grouped by setting, groups in order of first appearance. A pre-pass
    (store/prepass.py: no curve, a reference for the budget panel) is in no group.

    A label reads ``grpo/gvm k=8 T=1.0``, plus up to three ``key=value`` pairs where settings with the
    same algorithm and allocator differ, so that two groups never share a label.
    """
    groups: dict[str, Group] = {}
    settings: dict[str, dict[str, Any]] = {}
    for run in runs:
        if is_prepass(run):
            continue
        flat = setting(run["config"])
        key = json.dumps(flat, sort_keys=True, default=str)
        if key not in groups:
            groups[key] = Group(key=key, label="")
            settings[key] = flat
        groups[key].runs.append(dict(run))
    for key, group in groups.items():
        group.label = _label(
            settings[key], [s for k, s in settings.items() if k != key], group.runs[0]["config"]
        )
    return list(groups.values())


def _label(flat: Mapping[str, Any], others: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> str:
    facts = run_facts(config)
    label = f"{facts['algorithm']}/{facts['allocator']} k={facts['eval_k']} T={facts['eval_temperature']}"
    base = {"algorithm", "allocation.allocator", "eval.k", "eval.temperature"}
    differing = sorted({k for other in others for k in flat.keys() | other.keys()
                        if k not in base and other.get(k) != flat.get(k)})  # fmt: skip
    extra = [f"{k}={flat.get(k)}" for k in differing[:3]] + (["..."] if len(differing) > 3 else [])
    return " ".join([label, *extra])


@dataclass(frozen=True)
class Curve:
    """One line to draw: x and y by step, and for a pooled group the 95% band (NaN: no interval)."""

    label: str
    runs: list[str]
    steps: list[int]
    x: list[float]
    y: list[float]
    lower: list[float] | None = None
    upper: list[float] | None = None


def group_curve(group: Group, rows: Mapping[str, Sequence[Mapping]], name: str, x: str) -> Curve:
    """Metric ``name`` of a group against axis ``x``, at every step any of its runs recorded.

    One run: its own points. Several: at each step, the mean over the runs that have it and a t interval
    (NaN half-width from one run); the x of a step is the mean of the runs' x there, since budget axes
    differ between seeds (a gvm probe spends what the data asks for).
    """
    ids = [run["id"] for run in group.runs]
    by_step: dict[int, list[tuple[float, float]]] = {}
    for run_id in ids:
        run_rows = rows.get(run_id, [])
        for (step, value), (xv, _) in zip(series(run_rows, name), series(run_rows, name, x=x), strict=True):
            by_step.setdefault(int(step), []).append((float(xv), float(value)))
    steps = sorted(by_step)
    xs = [float(np.mean([p[0] for p in by_step[s]])) for s in steps]
    if len(ids) == 1:
        return Curve(group.label, ids, steps, xs, [by_step[s][0][1] for s in steps])
    stats = [mean_ci([p[1] for p in by_step[s]]) for s in steps]
    means = [st["mean"] for st in stats]
    half = [st["ci95"] for st in stats]
    lower = [m - h if math.isfinite(h) else m for m, h in zip(means, half, strict=True)]
    upper = [m + h if math.isfinite(h) else m for m, h in zip(means, half, strict=True)]
    return Curve(f"{group.label} (mean of {len(ids)} seeds, 95% CI)", ids, steps, xs, means, lower, upper)


def budget_to_target(
    groups: Sequence[Group], rows: Mapping[str, Sequence[Mapping]], name: str, target: float
) -> list[dict[str, Any]]:
    """Per group: rollouts (probe included) and steps to the first point of ``name`` at or above
    ``target``, mean and 95% half-width over seeds. A seed that never gets there counts with what it
    spent in all and makes the mean a lower bound (``censored``), as in efficiency.summarize. A group whose
    allocator is not budget-honest (efficiency.NOT_BUDGET_HONEST) has a dagger after its label."""
    table = []
    for group in groups:
        hits = []
        for run in group.runs:
            points = [(int(r["step"]), int(r["rollouts_consumed"]), float(r["value"]))
                      for r in sorted(rows.get(run["id"], []), key=lambda r: r["step"])
                      if r["name"] == name and r["value"] is not None]  # fmt: skip
            if points:
                hits.append(first_reach(points, target))
        reached = sum(h[2] for h in hits)
        # A not budget-honest allocator (gvm_oracle) gets its dagger; the label keeps the rest unchanged.
        table.append({
            "group": group.label + dagger(run_facts(group.runs[0]["config"])["allocator"]),
            "runs": len(group.runs),
            "reached": f"{reached}/{len(hits)}",
            "censored": reached < len(hits),
            "rollouts": mean_ci([h[1] for h in hits]),
            "steps": mean_ci([h[0] for h in hits]),
        })  # fmt: skip
    return table


def format_mean_ci(stats: Mapping[str, float], censored: bool) -> str:
    """``"≥ 1234 ± 56"``: the bound sign when censored, no ± with a single seed, "-" without data."""
    if not math.isfinite(stats["mean"]):
        return "-"
    ci = f" ± {stats['ci95']:.0f}" if math.isfinite(stats["ci95"]) else ""
    return f"{'≥ ' if censored else ''}{stats['mean']:.0f}{ci}"
