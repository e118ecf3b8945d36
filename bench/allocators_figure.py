"""The allocator zoo's figure (accuracy gain against rollouts consumed, the seed mean of every arm, one panel
per algorithm) and its markdown tables; bench/allocators_report.py calls both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gvm_study_figure import band

COSTS = ("rollouts_to_50", "rollouts_to_80", "steps_to_80", "tokens_to_80")


def figure(cells: list[dict], doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algorithms = [al for al in doc["plan"] if any(c["algorithm"] == al for c in cells)]
    fig, axes = plt.subplots(1, len(algorithms), figsize=(8 * len(algorithms), 6), squeeze=False)
    for ax, algorithm in zip(axes[0], algorithms, strict=True):
        for arm in doc["plan"][algorithm]:
            mine = [c for c in cells if c["algorithm"] == algorithm and c["arm"] == arm]
            if not mine:
                continue
            grid = np.linspace(0, min(c["curve"][-1][1] for c in mine), 60)
            mean, half = band(mine, 1, grid)
            style = "--" if doc["arms"][arm]["budget"] == "tokens" else "-"
            (line,) = ax.plot(grid, mean, style, label=f"{arm} ({len(mine)} seeds)")
            ax.fill_between(grid, mean - half, mean + half, alpha=0.08, color=line.get_color())
        ax.set(
            title=f"{algorithm}: the allocator zoo (seed means, 95% bands; dashed: token budget)",
            xlabel="rollouts consumed (probe counted)",
            ylabel="greedy accuracy gain over step 0 (points)",
        )
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _ratio(r: dict) -> str:
    if r["mean"] is None:
        return "n/a"
    return f"{r['mean']:.2f}x" + (f" [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" if r["ci95"] else "")


def _cost(e: dict) -> str:
    if e["mean"] is None:
        return "n/a"
    return f"{e['mean']:.0f} ({e['reached']}) {_ratio(e['ratio_vs_uniform'])}"


def _pm(s: dict, fmt: str = ".1f") -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:{fmt}}" + ("" if s["ci95"] is None else f" ± {s['ci95']:{fmt.lstrip('+')}}")


def markdown(doc: dict) -> str:
    """Per algorithm: the endpoints table, the ranking's statement and what is missing."""
    lines = []
    if doc.get("reused"):
        lines.append(f"{doc['reused']}\n")
    for algorithm in doc["plan"]:
        rows = doc["results"].get(algorithm, {})
        lines.append(
            f"**{algorithm}** (cost to target: seed mean (reached) ratio vs uniform [paired 95% CI]; "
            "> 1 = fewer than uniform)\n"
        )
        if rows:
            lines += [
                "| arm | budget | seeds | rollouts to 50% | rollouts to 80% | steps to 80% | tokens to 80% "
                "| AUC − uniform, pts | final acc. % |",
                "|---|---|---:|---|---|---|---|---:|---:|",
            ]
            for arm, r in rows.items():
                costs = " | ".join(_cost(r[k]) for k in COSTS)
                lines.append(
                    f"| {arm} | {doc['arms'][arm]['budget']} | {r['n_seeds']} | {costs} | "
                    f"{_pm(r['auc_minus_uniform'], '+.2f')} | {_pm(r['final_accuracy'])} |"
                )
            notes = [
                f"{arm} against {v['arm']} (paired, to 80%): rollouts {_ratio(v['rollouts_to_80'])}, "
                f"tokens {_ratio(v['tokens_to_80'])}."
                for arm, v in ((arm, r["vs_reference"]) for arm, r in rows.items() if "vs_reference" in r)
            ]
            if any("tokens_note" in r for r in rows.values()):
                notes.append(
                    "Tokens to 80%: only the seeds whose cells counted tokens (those reused from the GVM "
                    "study did not; `--no-reuse` reruns them)."
                )
            for note in [*notes, f"Ranking: {doc['ranking'][algorithm]['statement']}"]:
                lines += ["", note]
            lines.append("")
        else:
            lines.append("No cell on a seed with a target yet.\n")
        gaps = doc["missing"].get(algorithm)
        if gaps:
            cells = "; ".join(f"{arm} seeds {ss}" for arm, ss in gaps["cells"].items())
            lines.append(f"Missing (not run yet): {cells or 'none'}.")
            if gaps["seeds_without_target"]:
                lines.append(
                    f"Seeds without a target (no uniform cell, or uniform did not improve): "
                    f"{gaps['seeds_without_target']}."
                )
            lines.append("")
    return "\n".join(lines) + "\n"
