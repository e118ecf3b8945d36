"""The GVM study's endpoints, fixed before the runs (bench/gvm_study.py writes the cells):

- Targets, per algorithm and seed: step-0 accuracy + 50% and + 80% of the uniform arm's gain (its final
  level: the mean of its last `TAIL` evals). All arms of a seed share step 0 (same warm start).
- A crossing: the first eval at which the accuracy curve, smoothed by a centred moving average of 3 evals
  (15 steps), reaches the target, interpolated linearly between that eval and the one before, on each
  x-axis: rollouts consumed (probe counted), steps (probe not counted, as the paper reports), and
  optimizer updates. An arm that never reaches it is censored at its last point (a lower bound).
- AUC: the mean greedy accuracy over rollouts consumed in [0, R], R = the uniform arm's total (the
  cheapest arm's budget, so every arm is judged on the same budget), trapezoid on the raw evals.
- Per seed, ratio = uniform's cost / the arm's cost (> 1: the arm needs fewer); pooled over the seeds
  where both reached the target as a geometric mean with a 95% t-interval on the log ratios.
- From the per-prompt rows and the pre-pass: how often an arm gave no rollout to a prompt the pre-pass
  found solvable, and the realised variance proxy Σ G²/(n p) per step (pre-pass p and G) of the uniform
  arm over the arm's, on the prompts the arm covered (`allocation_checks`).
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np

from dibs.dashboards.efficiency import mean_ci, t95

TAIL = 3
FRACTIONS = (0.5, 0.8)
AXES = {"rollouts": 1, "steps": 0, "updates": 2}  # column of a curve point [step, rollouts, updates, acc]
HONEST = {"gvm_oracle": False}  # arms whose rollouts do not count everything they used


def smoothed(acc: list[float], width: int = 3) -> np.ndarray:
    a = np.asarray(acc, dtype=float)
    h = width // 2
    return np.array([a[max(0, i - h) : i + h + 1].mean() for i in range(len(a))])


def crossing(curve: list[list], target: float, axis: int) -> tuple[float, bool]:
    """x at which the smoothed curve first reaches `target` (linear between evals), and whether it did."""
    acc = smoothed([p[3] for p in curve])
    xs = [float(p[axis]) for p in curve]
    for i, a in enumerate(acc):
        if a >= target - 1e-12:
            if i == 0:
                return xs[0], True
            frac = (target - acc[i - 1]) / (a - acc[i - 1])
            return xs[i - 1] + frac * (xs[i] - xs[i - 1]), True
    return xs[-1], False


def auc(curve: list[list], horizon: float) -> float:
    """Mean accuracy over rollouts in [0, horizon] (trapezoid; the curve is cut at the horizon)."""
    x = np.array([p[1] for p in curve], dtype=float)
    y = np.array([p[3] for p in curve], dtype=float)
    if horizon <= 0 or x[-1] < horizon:
        return math.nan
    keep = x < horizon
    xc, yc = np.append(x[keep], horizon), np.append(y[keep], np.interp(horizon, x, y))
    return float(np.trapezoid(yc, xc) / horizon)


def geo_ratio(ratios: list[float]) -> dict:
    """Geometric mean of per-seed ratios with a 95% t-interval on their logs."""
    r = [x for x in ratios if x > 0 and math.isfinite(x)]
    if not r:
        return {"mean": None, "ci95": None, "n": 0}
    logs = np.log(r)
    half = t95(len(r) - 1) * logs.std(ddof=1) / math.sqrt(len(r)) if len(r) > 1 else math.nan
    lo, hi = (
        (math.exp(logs.mean() - half), math.exp(logs.mean() + half)) if math.isfinite(half) else (None, None)
    )
    return {
        "mean": round(math.exp(logs.mean()), 3),
        "ci95": [round(lo, 3), round(hi, 3)] if lo else None,
        "n": len(r),
    }


def _stat(values: list[float], digits: int = 1) -> dict:
    m = mean_ci(values)
    return {
        "mean": round(m["mean"], digits),
        "ci95": None if math.isnan(m["ci95"]) else round(m["ci95"], digits),
    }


def endpoints(cells: list[dict]) -> dict:
    """Per algorithm, per arm: targets, costs to each target on each axis, ratios, AUC (see the docstring)."""
    by = {(c["algorithm"], c["arm"], c["seed"]): c for c in cells}
    out: dict = {}
    from gvm_study import PLAN

    for algorithm in [al for al in PLAN if any(c["algorithm"] == al for c in cells)]:
        seeds = sorted(s for (al, arm, s) in by if al == algorithm and arm == "uniform")
        base = {s: by[(algorithm, "uniform", s)]["curve"] for s in seeds}
        start = {s: base[s][0][3] for s in seeds}
        gain = {s: float(np.mean([p[3] for p in base[s][-TAIL:]])) - start[s] for s in seeds}
        seeds = [s for s in seeds if gain[s] > 0]  # a seed where uniform did not improve defines no target
        horizon = {s: base[s][-1][1] for s in seeds}
        out[algorithm] = {}
        for arm in sorted({k[1] for k in by if k[0] == algorithm}, key=_arm_order):
            have = [s for s in seeds if (algorithm, arm, s) in by]
            row: dict = {
                "seeds": have,
                "budget_honest": HONEST.get(arm, True),
                "uniform_gain_points": _stat([100 * gain[s] for s in have]),
            }
            for f in FRACTIONS:
                for axis, col in AXES.items():
                    row[f"{axis}_to_{int(100 * f)}"] = _to_target(
                        by, algorithm, arm, have, start, gain, f, col
                    )
            areas = {s: auc(by[(algorithm, arm, s)]["curve"], horizon[s]) for s in have}
            row["auc"] = _stat([100 * areas[s] for s in have], 2)
            base_areas = {s: auc(base[s], horizon[s]) for s in have}
            row["auc_minus_uniform"] = _stat([100 * (areas[s] - base_areas[s]) for s in have], 2)
            row["final_accuracy"] = _stat(
                [100 * np.mean([p[3] for p in by[(algorithm, arm, s)]["curve"][-TAIL:]]) for s in have]
            )
            out[algorithm][arm] = row
    return out


def _costs(by, algorithm, arm, seeds, start, gain, f, col) -> dict[int, tuple[float, bool]]:
    """Per seed: the arm's cost to the seed's target on one axis, and whether it reached it."""
    return {s: crossing(by[(algorithm, arm, s)]["curve"], start[s] + f * gain[s], col) for s in seeds}


def _pair(num: dict, den: dict) -> list:
    """Per seed, num's cost / den's cost (> 1: den needs fewer), None unless both reached."""
    return [
        round(num[s][0] / den[s][0], 4) if num[s][1] and den[s][1] and den[s][0] > 0 else None for s in den
    ]


def _to_target(by, algorithm, arm, seeds, start, gain, f, col) -> dict:
    mine = _costs(by, algorithm, arm, seeds, start, gain, f, col)
    ratios = _pair(_costs(by, algorithm, "uniform", seeds, start, gain, f, col), mine)
    return {
        **_stat([x for x, _ in mine.values()], 0),
        "reached": f"{sum(ok for _, ok in mine.values())}/{len(seeds)}",
        "ratio_vs_uniform": geo_ratio([r for r in ratios if r is not None]),
        "per_seed_ratio": ratios,
    }


# The update-count control, in steps (the paper's axis): (baseline arm, faster arm) pairs.
CONTROL = {
    "paper_setup": ("uniform_u4", "gvm_u32"),
    "updates_alone": ("uniform_u4", "uniform_u32"),
    "allocation_at_32_updates": ("uniform_u32", "gvm_u32"),
    "allocation_at_4_updates": ("uniform_u4", "gvm_u4"),
    "allocation_at_1_update": ("uniform", "gvm"),
}


def control(cells: list[dict], algorithm: str = "raftpp") -> dict:
    """Steps-to-target ratios of the control's pairs, per seed and pooled: how much of a 'GVM at 32
    updates vs uniform at 4' speed-up remains when both make the same number of updates."""
    by = {(c["algorithm"], c["arm"], c["seed"]): c for c in cells}
    seeds = sorted(s for (al, arm, s) in by if al == algorithm and arm == "uniform")
    start = {s: by[(algorithm, "uniform", s)]["curve"][0][3] for s in seeds}
    gain = {
        s: float(np.mean([p[3] for p in by[(algorithm, "uniform", s)]["curve"][-TAIL:]])) - start[s]
        for s in seeds
    }
    out: dict = {}
    for name, (slow, fast) in CONTROL.items():
        have = [s for s in seeds if gain[s] > 0 and (algorithm, slow, s) in by and (algorithm, fast, s) in by]
        for f in FRACTIONS:
            ratios = _pair(
                _costs(by, algorithm, slow, have, start, gain, f, 0),
                _costs(by, algorithm, fast, have, start, gain, f, 0),
            )
            out.setdefault(name, {"pair": f"{slow} steps / {fast} steps"})[f"steps_to_{int(100 * f)}"] = (
                geo_ratio([r for r in ratios if r is not None]) | {"per_seed": ratios}
            )
    return out


def _arm_order(arm: str) -> int:
    from gvm_study import ARMS

    return list(ARMS).index(arm) if arm in ARMS else 99


def allocation_checks(prepasses: list[dict], prompts_file: Path, settings: str) -> dict:
    """Per algorithm and arm, against the pre-pass truth (p, G of the warm start, 32 samples a prompt):
    - `solvable_given_zero_frac`: the share of (step, prompt) rows with no rollout among the prompts the
      pre-pass found solvable;
    - `variance_gain_on_covered`: per step, the variance proxy Σ G²/(n p) of the uniform arm over that of
      the arm, both summed over the prompts the arm gave rollouts to (same seed and step: the same
      prompts), pooled as a geometric mean over steps and seeds. A prompt given nothing has no gradient
      estimate at all (a bias, counted above), so it cannot enter a variance sum."""
    truth = {pp["seed"]: (np.asarray(pp["p"]), np.asarray(pp["g"])) for pp in prepasses}
    rows: dict = {}
    if prompts_file.exists():
        with gzip.open(prompts_file, "rt") as f:
            for line in f:
                r = json.loads(line)
                if r["settings"] == settings and r["seed"] in truth:
                    rows[(r["algorithm"], r["arm"], r["seed"])] = r["rows"]  # the last copy of a cell wins
    out: dict = {}
    for (algorithm, arm, seed), rs in sorted(rows.items()):
        p, g = truth[seed]
        slot = out.setdefault(algorithm, {}).setdefault(arm, {"zero": 0, "solvable": 0, "ratios": []})
        mine, base = _by_step(rs, p), _by_step(rows.get((algorithm, "uniform", seed), []), p)
        for step, given in mine.items():
            slot["solvable"] += len(given)
            slot["zero"] += sum(n == 0 for n in given.values())
            covered = [i for i, n in given.items() if n > 0 and base.get(step, {}).get(i, 0) > 0]
            if covered:
                v_arm = sum(g[i] ** 2 / (given[i] * p[i]) for i in covered)
                slot["ratios"].append(sum(g[i] ** 2 / (base[step][i] * p[i]) for i in covered) / v_arm)
    return {
        al: {
            arm: {
                "solvable_given_zero_frac": round(s["zero"] / max(s["solvable"], 1), 4),
                "variance_gain_on_covered": geo_ratio(s["ratios"])["mean"],
            }
            for arm, s in arms.items()
        }
        for al, arms in out.items()
    }


def _by_step(rows: list[list], p: np.ndarray) -> dict[int, dict[int, int]]:
    """{step: {pool index: rollouts given}} over the prompts the pre-pass found solvable."""
    out: dict[int, dict[int, int]] = {}
    for step, idx, _, _, n, _, _ in rows:
        if idx >= 0 and p[idx] > 0:
            out.setdefault(step, {})[idx] = out.get(step, {}).get(idx, 0) + n
    return out


def write_report(
    out: Path,
    prepasses: list[dict],
    cells: list[dict],
    prompts_file: Path,
    settings: str,
    overrides: list[str],
) -> dict:
    from gvm_study import ARMS, go_no_go
    from gvm_study_figure import figure, markdown

    doc = {
        "question": "does GVM allocation save rollouts (probe counted) or steps (probe not counted), and "
        "how much of the paper's speed-up does the update-count control reproduce?",
        "settings": settings,
        "overrides": overrides,
        "arms": {k: v[0] for k, v in ARMS.items()},
        "go_no_go": go_no_go(prepasses) if prepasses else None,
        "results": endpoints(cells) if cells else {},
        "update_count_control": control(cells) if cells else {},
        "allocation_checks": allocation_checks(prepasses, prompts_file, settings),
        "wall_seconds": round(
            sum(c["wall_seconds"] for c in cells) + sum(p["wall_seconds"] for p in prepasses)
        ),
    }
    (out / "gvm_study.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "gvm_study.md").write_text(markdown(doc))
    if cells:
        figure(cells, doc, out / "gvm_study.png")
    print(markdown(doc))
    return doc
