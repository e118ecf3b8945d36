"""Sample efficiency at a fixed target: rollouts-to-target and steps-to-target over seeds, with 95%
confidence intervals and the ratio to the `uniform` baseline (docs/conventions.md, "Budget comparisons").

A curve is a list of (step, rollouts_consumed, accuracy) eval points. The target is fixed before the
runs by a rule on the uniform baseline's own curve, per seed (a seed fixes the data split and the warm
start, so all allocators of a seed share step 0, and seeds start far apart): step-0 accuracy plus
`fraction` of uniform's final gain, the final level being the mean of its last `TAIL` evals. A seed
that never reaches the target is censored, not dropped: its value is replaced by what it
spent in all (a lower bound), the cell reports `reached: k/n`, and every mean or ratio it enters is
marked as a bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

# Two-sided 95% Student t quantiles by degrees of freedom (1..10); 1.96 beyond 30 (normal).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}

Curve = Sequence[tuple[int, int, float]]
TAIL = 3  # evals averaged for the final level: one eval of 300 problems has a standard error of ~2.8 points
# Allocators whose rollouts_consumed leaves out what deciding the split cost (gvm_oracle's probe): a
# ceiling for studies, so every table that compares rollouts marks their rows and says why.
NOT_BUDGET_HONEST = frozenset({"gvm_oracle"})
DAGGER = "†"
DAGGER_NOTE = (
    f"{DAGGER} not budget-honest: its probe is not in the rollouts "
    "(alloc/oracle_rollouts has it); an upper bound, for studies only."
)


def dagger(allocator: object) -> str:
    """What follows an allocator's name or a run label: " †" when its rollouts are not budget-honest."""
    return f" {DAGGER}" if allocator in NOT_BUDGET_HONEST else ""


def t95(df: int) -> float:
    if df < 1:
        return math.nan
    return _T95.get(df, 2.09 if df <= 20 else 2.04 if df <= 30 else 1.96)


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95% half-width (t interval; NaN with one value)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return {"mean": math.nan, "ci95": math.nan}
    half = t95(len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else math.nan
    return {"mean": float(x.mean()), "ci95": float(half)}


def target_accuracy(uniform_curve: Curve, fraction: float) -> float:
    """Step 0 + fraction x (final level - step 0) of one uniform curve; final level = mean of the last
    TAIL evals."""
    start = uniform_curve[0][2]
    final = float(np.mean([p[2] for p in uniform_curve[-TAIL:]]))
    return float(start + fraction * (final - start))


def first_reach(curve: Curve, target: float) -> tuple[int, int, bool]:
    """(steps, rollouts) at the first eval at or above `target`, and whether it was reached; when it was
    not, the last point's (steps, rollouts): a lower bound on the true cost."""
    for step, rollouts, acc in curve:
        if acc >= target - 1e-12:
            return step, rollouts, True
    return curve[-1][0], curve[-1][1], False


def summarize(cells: Sequence[Mapping], *, fraction: float = 0.8) -> list[dict]:
    """One row per (algorithm, allocator) from per-seed cells {algorithm, allocator, seed, curve}."""
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for c in cells:
        groups.setdefault((c["algorithm"], c["allocator"]), []).append(c)
    rows = []
    for algorithm in sorted({a for a, _ in groups}):
        if (algorithm, "uniform") not in groups:
            raise ValueError(f"{algorithm}: no uniform cells, so no target and no ratio")
        targets = {c["seed"]: target_accuracy(c["curve"], fraction) for c in groups[(algorithm, "uniform")]}
        made = {
            alloc: _row(algorithm, alloc, cs, targets) for (a, alloc), cs in groups.items() if a == algorithm
        }
        base = made["uniform"]
        for alloc in sorted(made, key=lambda a: (a != "uniform", a)):
            row = made[alloc]
            for key in ("rollouts_to_target", "steps_to_target"):
                row[f"{key}_ratio_vs_uniform"] = _ratio(base[key], row[key])
            rows.append(row)
    return rows


def _row(algorithm: str, allocator: str, cells: Sequence[Mapping], targets: Mapping[int, float]) -> dict:
    cells = sorted(cells, key=lambda c: c["seed"])
    missing = [c["seed"] for c in cells if c["seed"] not in targets]
    if missing:
        raise ValueError(f"{algorithm}/{allocator}: no uniform cell for seeds {missing}, so no target")
    hits = [first_reach(c["curve"], targets[c["seed"]]) for c in cells]
    reached = sum(h[2] for h in hits)
    censored = reached < len(cells)
    return {
        "algorithm": algorithm,
        "allocator": allocator,
        "seeds": [c["seed"] for c in cells],
        "target_accuracy": round(float(np.mean([targets[c["seed"]] for c in cells])), 4),
        "targets_by_seed": {str(c["seed"]): round(targets[c["seed"]], 4) for c in cells},
        "reached": f"{reached}/{len(cells)}",
        "rollouts_to_target": mean_ci([h[1] for h in hits]) | {"censored": censored},
        "steps_to_target": mean_ci([h[0] for h in hits]) | {"censored": censored},
        "final_accuracy": mean_ci([c["curve"][-1][2] for c in cells]),
        # Paired with its own step 0: seeds start far apart, so the gain's interval is the telling one.
        "final_gain": mean_ci([c["curve"][-1][2] - c["curve"][0][2] for c in cells]),
    }


def _ratio(base: Mapping, other: Mapping) -> dict:
    """uniform's mean / this allocator's mean (> 1: fewer needed). Censoring makes it a bound: a censored
    baseline mean is a lower bound, so the ratio is at least (>=); a censored allocator, at most (<=)."""
    value = base["mean"] / other["mean"] if other["mean"] else math.nan
    if base["censored"] and other["censored"]:
        kind = "unknown"
    elif base["censored"]:
        kind = ">="
    elif other["censored"]:
        kind = "<="
    else:
        kind = "="
    return {"value": round(value, 3), "kind": kind}


def markdown_table(rows: Sequence[Mapping]) -> str:
    """The sample-efficiency table of docs/results.md: one line per algorithm x allocator (not
    budget-honest ones marked, with a note)."""

    def fmt(d: Mapping, scale: float = 1.0, digits: int = 0) -> str:
        prefix = ">=" if d.get("censored") else ""
        ci = "" if math.isnan(d["ci95"]) else f" ± {d['ci95'] * scale:.{digits}f}"
        return f"{prefix}{d['mean'] * scale:.{digits}f}{ci}"

    def ratio(d: Mapping) -> str:
        return {"=": "", ">=": "≥ ", "<=": "≤ ", "unknown": "? "}[d["kind"]] + f"{d['value']:.2f}x"

    header = (
        "| algorithm | allocator | target acc. | reached | rollouts to target | vs uniform | steps to target "
        "| vs uniform | final acc. % | gain, points |"
    )
    lines = [
        header,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # target: mean of the per-seed targets
    for r in rows:
        lines.append(
            f"| {r['algorithm']} | {r['allocator']}{dagger(r['allocator'])} "
            f"| {100 * r['target_accuracy']:.1f}% | {r['reached']} "
            f"| {fmt(r['rollouts_to_target'])} | {ratio(r['rollouts_to_target_ratio_vs_uniform'])} "
            f"| {fmt(r['steps_to_target'])} | {ratio(r['steps_to_target_ratio_vs_uniform'])} "
            f"| {fmt(r['final_accuracy'], 100, 1)} | {fmt(r['final_gain'], 100, 1)} |"
        )
    if any(r["allocator"] in NOT_BUDGET_HONEST for r in rows):
        lines += ["", DAGGER_NOTE]
    return "\n".join(lines) + "\n"
