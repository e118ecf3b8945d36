"""The GVM study's figure (accuracy gain against rollouts and steps, seed means with 95% bands, and a
forest plot of the per-seed ratios) and its markdown table; bench/gvm_study_report.py calls both."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dibs.dashboards.efficiency import t95

PANELS = [
    ("raftpp", ["uniform", "uniform16", "gvm", "gvm_reuse", "gvm_oracle"], 1, "RAFT++: allocation"),
    (
        "raftpp",
        ["uniform", "uniform_u4", "gvm_u32", "uniform_u32", "gvm_u4", "gvm"],
        0,
        "RAFT++: update-count control",
    ),
    ("grpo", ["uniform", "gvm", "gvm_oracle"], 1, "GRPO: allocation"),
]
XLABEL = {0: "RL steps (probe not counted)", 1: "rollouts consumed (probe counted; oracle's probe free)"}


def band(cells: list[dict], axis: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seed mean and 95% half-width of the accuracy gain over step 0 (points), on a common x grid."""
    ys = []
    for c in cells:
        x = np.array([p[axis] for p in c["curve"]], dtype=float)
        y = 100 * (np.array([p[3] for p in c["curve"]]) - c["curve"][0][3])
        ys.append(np.where(grid <= x[-1], np.interp(grid, x, y), np.nan))
    ys = np.array(ys)
    n = np.sum(~np.isnan(ys), axis=0)
    mean = np.nanmean(ys, axis=0)
    sd = np.nanstd(ys, axis=0, ddof=1) if len(ys) > 1 else np.zeros_like(mean)
    half = np.array([t95(k - 1) if k > 1 else 0.0 for k in n]) * sd / np.sqrt(np.maximum(n, 1))
    return mean, half


def figure(cells: list[dict], doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid_axes = plt.subplots(2, 2, figsize=(15, 11))
    axes = grid_axes.ravel()
    for ax, (algorithm, arms, axis, title) in zip(axes, PANELS, strict=True):
        for arm in arms:
            mine = [c for c in cells if c["algorithm"] == algorithm and c["arm"] == arm]
            if not mine:
                continue
            end = min(c["curve"][-1][axis] for c in mine)
            grid = np.linspace(0, end, 60)
            mean, half = band(mine, axis, grid)
            label = f"{arm} ({len(mine)} seeds)" + (" †" if arm == "gvm_oracle" else "")
            (line,) = ax.plot(grid, mean, label=label)
            ax.fill_between(grid, mean - half, mean + half, alpha=0.15, color=line.get_color())
        ax.set(title=title, xlabel=XLABEL[axis], ylabel="greedy accuracy gain over step 0 (points)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    forest(axes[3], doc)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def forest(ax, doc: dict) -> None:
    """Per-seed ratios (uniform's cost / the arm's) to 80% of uniform's gain; rollouts, and steps for the
    update-count arms; the pooled geometric mean with its 95% interval."""
    rows = []
    for algorithm, arms in doc["results"].items():
        for arm, r in arms.items():
            if arm == "uniform":
                continue
            for axis in ("rollouts", "steps"):
                e = r[f"{axis}_to_80"]
                rows.append((f"{algorithm} {arm} ({axis})", e["per_seed_ratio"], e["ratio_vs_uniform"]))
    for y, (_label, per_seed, pooled) in enumerate(reversed(rows)):
        pts = [v for v in per_seed if v]
        ax.scatter(pts, [y] * len(pts), s=10, color="grey")
        if pooled["mean"]:
            lo, hi = pooled["ci95"] or (pooled["mean"], pooled["mean"])
            ax.errorbar(
                pooled["mean"],
                y,
                xerr=[[pooled["mean"] - lo], [hi - pooled["mean"]]],
                fmt="o",
                color="black",
                capsize=3,
            )
    ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)], fontsize=6)
    ax.axvline(1.0, color="red", lw=0.8)
    ax.set_xscale("log")
    ax.set(
        title="to 80% of uniform's gain: uniform cost / arm cost", xlabel="ratio (> 1: the arm needs fewer)"
    )


def _fmt(e: dict) -> str:
    r = e["ratio_vs_uniform"]
    ratio = (
        "n/a"
        if r["mean"] is None
        else f"{r['mean']:.2f}x" + (f" [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" if r["ci95"] else "")
    )
    return f"{e['mean']:.0f} ({e['reached']}) {ratio}"


def _pooled(e: dict) -> str:
    ci = f" [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]" if e["ci95"] else ""
    return ("n/a" if e["mean"] is None else f"{e['mean']:.2f}x{ci}") + f" ({e['n']})"


def markdown(doc: dict) -> str:
    """One table per algorithm: costs to 50% / 80% of uniform's gain with ratios to uniform, AUC."""
    lines = []
    g = doc.get("go_no_go")
    if g:
        lines.append(
            f"Go/no-go (pre-pass, before training): predicted variance gain of the oracle allocation "
            f"over uniform {g['predicted_oracle_gain']}x (threshold {g['threshold']}x): "
            f"{'GO' if g['go'] else 'NO GO'}.\n"
        )
    for algorithm, arms in doc["results"].items():
        lines += [
            (
                f"**{algorithm}** (cost to target: seed mean (reached) ratio vs uniform [95% CI]; "
                "> 1 = fewer than uniform)\n"
            ),
            (
                "| arm | rollouts to 50% | rollouts to 80% | steps to 80% | updates to 80% "
                "| AUC − uniform, pts | final acc. % |"
            ),
            "|---|---|---|---|---|---:|---:|",
        ]
        for arm, r in arms.items():
            name = arm + (" †" if not r["budget_honest"] else "")
            a = r["auc_minus_uniform"]
            ci = "" if a["ci95"] is None or math.isnan(a["ci95"]) else f" ± {a['ci95']:.2f}"
            lines.append(
                f"| {name} | {_fmt(r['rollouts_to_50'])} | {_fmt(r['rollouts_to_80'])} | "
                f"{_fmt(r['steps_to_80'])} | {_fmt(r['updates_to_80'])} | {a['mean']:+.2f}{ci} | "
                f"{r['final_accuracy']['mean']:.1f} |"
            )
        lines.append("")
    pairs = doc.get("update_count_control", {})
    if pairs:
        lines += [
            (
                "**Update-count control** (raftpp, steps to 50% and 80% of uniform's gain; ratio > 1: the "
                "second arm needs fewer steps; seeds where both arms reached the target)\n"
            ),
            "| comparison | pair | to 50%: ratio [95% CI] (seeds) | to 80% |",
            "|---|---|---|---|",
        ]
        for name, r in pairs.items():
            lines.append(
                f"| {name} | {r['pair']} | {_pooled(r['steps_to_50'])} | {_pooled(r['steps_to_80'])} |"
            )
        lines.append("")
    lines.append("† not budget-honest: its 32-sample probe is neither charged nor counted (a ceiling).\n")
    return "\n".join(lines)
