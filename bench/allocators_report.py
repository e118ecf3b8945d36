"""The allocator zoo's endpoints (bench/allocators.py writes the cells), built on the GVM study's statistics
(bench/gvm_study_report.py: `crossing`, `auc`, `geo_ratio`, the targets):

- Targets, per algorithm and seed: step-0 accuracy + 50% and + 80% of the `uniform` arm's gain (the mean of
  its last `TAIL` evals); a seed where uniform did not improve defines no target.
- Costs to a target: the smoothed curve's first crossing on an axis (rollouts consumed, probe counted;
  steps; tokens generated, probe counted), censored at the last point when never reached. Tokens only for
  cells that recorded them (the GVM study's cells, reused for `uniform` and `gvm`, did not).
- Per seed, ratio = uniform's cost / the arm's (> 1: the arm needs fewer); pooled as a geometric mean with a
  95% t-interval on the log ratios over the seeds where both reached the target (paired by seed).
- AUC: mean greedy accuracy over rollouts in [0, R], R = uniform's total for the seed (the GVM study's), or
  the arm's total where it spent less (a token-budget arm may): then uniform's AUC is taken over the same
  window, so `auc_minus_uniform` stays paired.
- The ranking, per algorithm, by rollouts to 80% of uniform's gain (the pooled ratio): arms that reached
  the target in fewer than half of their seeds are left unranked. Neighbours in the ranking are compared
  in pairs, seed by seed (the worse's cost / the better's); the ranking is resolved when every such
  interval lies above 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from gvm_study_report import TAIL, allocation_checks, auc, crossing, geo_ratio

AXES = {
    "rollouts": 1,
    "steps": 0,
    "updates": 2,
    "tokens": 4,
}  # curve point [step, rollouts, updates, acc, tokens]
ENDPOINTS = [("rollouts", 0.5), ("rollouts", 0.8), ("steps", 0.8), ("tokens", 0.8)]
RANK_BY = "rollouts_to_80"


def summary(values: list[float], digits: int = 1) -> dict:
    """Mean, 95% t half-width and count of the finite values (None where there are too few)."""
    from dibs.dashboards.efficiency import mean_ci

    x = [v for v in values if v is not None and math.isfinite(v)]
    m = mean_ci(x)
    return {
        "mean": None if not x else round(m["mean"], digits),
        "ci95": None if math.isnan(m["ci95"]) else round(m["ci95"], digits),
        "n": len(x),
    }


def targets(by: dict, algorithm: str, seeds: list[int]) -> dict[int, tuple[float, float, float]]:
    """Per seed with a uniform cell that improved: (step-0 accuracy, uniform's gain, uniform's rollouts)."""
    out = {}
    for s in seeds:
        base = by.get((algorithm, "uniform", s))
        if base is None:
            continue
        start = base["curve"][0][3]
        gain = float(np.mean([p[3] for p in base["curve"][-TAIL:]])) - start
        if gain > 1e-9:  # a flat curve's float noise is no gain
            out[s] = (start, gain, float(base["curve"][-1][1]))
    return out


def has_axis(cell: dict, axis: str) -> bool:
    col = AXES[axis]
    return all(len(p) > col and p[col] is not None for p in cell["curve"])


def costs(by: dict, algorithm: str, arm: str, tg: dict, axis: str, fraction: float) -> dict[int, tuple]:
    """Per seed (with a target, a cell and that axis): (cost to the target, reached)."""
    out = {}
    for s, (start, gain, _) in tg.items():
        cell = by.get((algorithm, arm, s))
        if cell is not None and has_axis(cell, axis):
            out[s] = crossing(cell["curve"], start + fraction * gain, AXES[axis])
    return out


def paired(num: dict, den: dict) -> dict[int, float | None]:
    """Per seed of `den`: num's cost / den's cost (> 1: den needs fewer), None unless both reached and
    den's cost is positive (and num has that seed)."""
    return {
        s: (round(num[s][0] / c, 4) if s in num and num[s][1] and ok and c > 0 else None)
        for s, (c, ok) in den.items()
    }


def endpoint(mine: dict, base: dict) -> dict:
    ratios = paired(base, mine)
    return {
        **summary([c for c, _ in mine.values()], 0),
        "reached": f"{sum(ok for _, ok in mine.values())}/{len(mine)}",
        "ratio_vs_uniform": geo_ratio([r for r in ratios.values() if r is not None]),
        "per_seed": [[s, round(c, 1), bool(ok)] for s, (c, ok) in sorted(mine.items())],
        "per_seed_ratio": [[s, r] for s, r in sorted(ratios.items())],
    }


def arm_row(by: dict, algorithm: str, arm: str, tg: dict, reference: str | None) -> dict:
    have = [s for s in tg if (algorithm, arm, s) in by]
    row: dict = {"seeds": have, "n_seeds": len(have)}
    row["reused_seeds"] = [s for s in have if by[(algorithm, arm, s)].get("reused_from")]
    for axis, f in ENDPOINTS:
        mine = costs(by, algorithm, arm, tg, axis, f)
        row[f"{axis}_to_{int(100 * f)}"] = endpoint(mine, costs(by, algorithm, "uniform", tg, axis, f))
        if axis == "tokens" and len(mine) < len(have):
            row["tokens_note"] = "seeds without token counts (cells reused from the GVM study) left out"
    window = {s: min(tg[s][2], float(by[(algorithm, arm, s)]["curve"][-1][1])) for s in have}
    areas = {s: auc(by[(algorithm, arm, s)]["curve"], window[s]) for s in have}
    base = {s: auc(by[(algorithm, "uniform", s)]["curve"], window[s]) for s in have}
    row["auc"] = summary([100 * areas[s] for s in have], 2)
    row["auc_minus_uniform"] = summary([100 * (areas[s] - base[s]) for s in have], 2)
    row["final_accuracy"] = summary(
        [100 * float(np.mean([p[3] for p in by[(algorithm, arm, s)]["curve"][-TAIL:]])) for s in have]
    )
    if reference is not None:  # e.g. a tokens-mode arm against uniform in tokens mode, same axes
        row["vs_reference"] = {"arm": reference} | {
            f"{axis}_to_80": geo_ratio(
                [
                    r
                    for r in paired(
                        costs(by, algorithm, reference, tg, axis, 0.8),
                        costs(by, algorithm, arm, tg, axis, 0.8),
                    ).values()
                    if r is not None
                ]
            )
            for axis in ("rollouts", "tokens")
        }
    return row


def endpoints(cells: list[dict], plan: dict[str, list[str]], seeds: list[int], references: dict) -> dict:
    """Per algorithm of `plan`: the arms with at least one cell on a seed with a target, their rows."""
    by = {(c["algorithm"], c["arm"], c["seed"]): c for c in cells}
    out: dict = {}
    for algorithm, arms in plan.items():
        tg = targets(by, algorithm, seeds)
        rows = {
            arm: arm_row(by, algorithm, arm, tg, references.get(arm))
            for arm in arms
            if any((algorithm, arm, s) in by for s in tg)
        }
        if rows:
            out[algorithm] = rows
    return out


def missing(cells: list[dict], plan: dict[str, list[str]], seeds: list[int]) -> dict:
    """Per algorithm: the planned (arm, seed) cells not in `cells` ({} when nothing is missing), and the
    seeds that define no target (uniform missing, or it did not improve)."""
    by = {(c["algorithm"], c["arm"], c["seed"]): c for c in cells}
    out: dict = {}
    for algorithm, arms in plan.items():
        gaps = {arm: [s for s in seeds if (algorithm, arm, s) not in by] for arm in arms}
        gaps = {arm: ss for arm, ss in gaps.items() if ss}
        tg = targets(by, algorithm, seeds)
        no_target = [s for s in seeds if s not in tg]
        if gaps or no_target:
            out[algorithm] = {"cells": gaps, "seeds_without_target": no_target}
    return out


def ranking(rows: dict[str, dict], key: str = RANK_BY) -> dict:
    """Arms ordered by their pooled ratio to uniform on `key` (best first), with neighbours compared
    seed by seed, and a sentence saying whether the order is resolved (see the module docstring)."""
    ranked, unranked = [], {}
    for arm, r in rows.items():
        e = r[key]
        k, n = map(int, e["reached"].split("/"))
        if e["ratio_vs_uniform"]["mean"] is None:
            unranked[arm] = "no seed where it and uniform both reached the target"
        elif 2 * k < n:
            unranked[arm] = f"reached the target in {k} of {n} seeds"
        else:
            ranked.append(arm)
    ranked.sort(key=lambda a: -rows[a][key]["ratio_vs_uniform"]["mean"])
    pairs = []
    for better, worse in zip(ranked, ranked[1:], strict=False):
        cost = {arm: {s: (c, ok) for s, c, ok in rows[arm][key]["per_seed"]} for arm in (better, worse)}
        g = geo_ratio([r for r in paired(cost[worse], cost[better]).values() if r is not None])
        pairs.append({"better": better, "worse": worse, "ratio": g, "resolved": _above(g)})
    vs_uniform = {arm: _side(rows[arm][key]["ratio_vs_uniform"]) for arm in ranked if arm != "uniform"}
    out = {
        "by": key,
        "order": ranked,
        "unranked": unranked,
        "neighbours": pairs,
        "resolved": bool(pairs) and all(p["resolved"] for p in pairs),
        "first_resolved": bool(pairs) and pairs[0]["resolved"],
        "vs_uniform": vs_uniform,
    }
    return out | {"statement": statement(out, rows, key)}


def _above(g: dict) -> bool:
    return g["ci95"] is not None and g["ci95"][0] > 1


def _side(g: dict) -> str:
    if g["ci95"] is None:
        return "unresolved (fewer than 2 paired seeds)"
    if g["ci95"][0] > 1:
        return "fewer than uniform"
    if g["ci95"][1] < 1:
        return "more than uniform"
    return "not distinguishable from uniform"


def _ratio(g: dict) -> str:
    if g["mean"] is None:
        return "n/a"
    ci = f" [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]" if g["ci95"] else ""
    return f"{g['mean']:.2f}x{ci} ({g['n']} seeds)"


def statement(r: dict, rows: dict, key: str) -> str:
    if not r["order"]:
        return f"no arm can be ranked by {key} yet"
    order = ", ".join(f"{a} {_ratio(rows[a][key]['ratio_vs_uniform'])}" for a in r["order"])
    text = [f"by {key}, uniform's cost / the arm's: {order}."]
    if not r["neighbours"]:
        text.append("One ranked arm: nothing to resolve.")
    elif r["resolved"]:
        text.append("Resolved: every neighbour's paired interval lies above 1.")
    else:
        ties = [p for p in r["neighbours"] if not p["resolved"]]
        text.append(
            "Not resolved: "
            + "; ".join(f"{p['better']} over {p['worse']} {_ratio(p['ratio'])}" for p in ties)
            + " (paired intervals that reach 1 or need more seeds)."
        )
        first = r["neighbours"][0]
        text.append(
            f"First place {'resolved' if r['first_resolved'] else 'not resolved'}: {first['better']} over "
            f"{first['worse']} {_ratio(first['ratio'])}."
        )
    groups: dict[str, list[str]] = {}
    for arm, side in r["vs_uniform"].items():
        groups.setdefault(side, []).append(arm)
    if groups:
        text.append(
            "Cost against uniform's (paired intervals): "
            + "; ".join(f"{side}: {', '.join(arms)}" for side, arms in groups.items())
            + "."
        )
    if r["unranked"]:
        text.append("Unranked: " + "; ".join(f"{a} ({why})" for a, why in r["unranked"].items()) + ".")
    return " ".join(text)


def build(cells: list[dict], plan: dict[str, list[str]], seeds: list[int], references: dict) -> dict:
    """The report's results: endpoints, a ranking per algorithm, what is missing."""
    results = endpoints(cells, plan, seeds, references)
    return {
        "results": results,
        "ranking": {al: ranking(rows) for al, rows in results.items()},
        "missing": missing(cells, plan, seeds),
    }


def write_report(out: Path, head: dict, cells: list[dict], prepasses: list[dict], prompts_file: Path) -> dict:
    """allocators.json (`head` + the results), allocators.md and, with any cell, allocators.png."""
    from allocators_figure import figure, markdown

    doc = head | build(cells, head["plan"], head["seeds_planned"], head["references"])
    doc["allocation_checks"] = allocation_checks(prepasses, prompts_file, head["settings"])
    # what step_tokens stands for, from the uniform cells that counted tokens (not the reused ones)
    doc["uniform_step1_tokens"] = {
        f"{c['algorithm']} seed {c['seed']}": c["steps"][0][4]
        for c in cells
        if c["arm"] == "uniform" and c.get("steps") and len(c["steps"][0]) > 4
    }
    doc["wall_seconds"] = round(sum(c["wall_seconds"] for c in cells if not c.get("reused_from")))
    (out / "allocators.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "allocators.md").write_text(markdown(doc))
    if cells:
        figure(cells, doc, out / "allocators.png")
    print(markdown(doc))
    return doc
