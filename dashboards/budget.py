"""Where the budget went, compared across settings: each prompt's training rollouts per visit against its
reference pass rate, and the mean per pass-rate bin.

A visit is one row of a run's ``prompt_stats`` (the prompt was in a step's batch; a skipped one counts
with n_alloc = 0). One point per (run, prompt): the mean n_alloc over that prompt's visits in the run
(the probe is not in n_alloc). The reference pass rate is the same for every setting on the plot, so
they can be compared:

- ``prepass``: each run's own seed's pre-pass (store/prepass.py: same seed and ``config.task``, the
  newest when there are several), its step-0 ``p_hat`` (accepted / n_alloc where ``p_hat`` is NULL);
  used only when every run has one;
- ``pooled`` otherwise: accepted / n_alloc summed over all visits of all the selected runs.

A prompt without a reference (not in the pre-pass, or never given a rollout) is left off and counted.
Bins split [0, 1] evenly (a rate of exactly 1 is in the last); a bin's value is the mean of its points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dibs.platform.store.prepass import PREPASS_STEP, is_prepass
from dibs.platform.store.reader import StoreReader

from .compare import Group, group_runs

BINS = 10
MAX_BINS = 100
Rows = Mapping[str, Sequence[Mapping[str, Any]]]  # run id -> its prompt_stats rows


@dataclass(frozen=True)
class Reference:
    """The pass rate each run's prompts are placed by: ``rates[run id][prompt]``."""

    kind: str  # "prepass" | "pooled"
    label: str
    rates: dict[str, dict[str, float]]
    prepasses: dict[int, str] = field(default_factory=dict)  # seed -> the pre-pass run used


@dataclass(frozen=True)
class Point:
    run: str
    prompt: str
    rate: float  # reference pass rate
    per_visit: float  # mean n_alloc over the prompt's visits in the run
    visits: int
    rollouts: int


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    points: int
    visits: int
    rollouts: int
    mean: float | None  # mean per_visit of its points; None when empty


@dataclass(frozen=True)
class Spread:
    """One setting (a ``compare.Group``): its points and bins, and how many prompts had no reference."""

    label: str
    runs: list[str]
    points: list[Point]
    bins: list[Bin]
    unreferenced: int


def match_prepasses(runs: Sequence[Mapping], candidates: Sequence[Mapping]) -> dict[str, Mapping]:
    """run id -> the pre-pass among ``candidates`` (newest first) with its seed and ``config.task``."""
    matched = {}
    for run in runs:
        task = run["config"].get("task")
        for prepass in candidates:
            if (
                is_prepass(prepass)
                and prepass["seed"] == run["seed"]
                and prepass["config"].get("task") == task
            ):
                matched[run["id"]] = prepass
                break
    return matched


def visit_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """prompt -> (visits, rollouts, accepted) over all of a run's rows, prompts in first-visit order."""
    totals: dict[str, tuple[int, int, int]] = {}
    for r in rows:
        visits, rollouts, accepted = totals.get(r["prompt_id"], (0, 0, 0))
        totals[r["prompt_id"]] = (visits + 1, rollouts + int(r["n_alloc"]), accepted + int(r["accepted"]))
    return totals


def prepass_rates(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """prompt -> its pre-pass pass rate, from the pre-pass's step-0 rows."""
    rates = {}
    for r in rows:
        if r["step"] != PREPASS_STEP:
            continue
        if r["p_hat"] is not None:
            rates[r["prompt_id"]] = float(r["p_hat"])
        elif r["n_alloc"] > 0:
            rates[r["prompt_id"]] = r["accepted"] / r["n_alloc"]
    return rates


def reference(runs: Sequence[Mapping], rows: Rows, matched: Mapping[str, Mapping]) -> Reference:
    """Every run's own seed's pre-pass when all have one, else the pooled training pass rate."""
    if runs and all(run["id"] in matched for run in runs):
        by_seed = {int(run["seed"]): str(matched[run["id"]]["id"]) for run in runs}
        rates = {run["id"]: prepass_rates(rows.get(matched[run["id"]]["id"], [])) for run in runs}
        used = ", ".join(f"seed {s}: {i}" for s, i in sorted(by_seed.items()))
        return Reference("prepass", f"pre-pass pass rate ({used})", rates, by_seed)
    pooled: dict[str, list[int]] = {}
    for run in runs:
        for prompt, (_, rollouts, accepted) in visit_totals(rows.get(run["id"], [])).items():
            total = pooled.setdefault(prompt, [0, 0])
            total[0] += rollouts
            total[1] += accepted
    shared = {p: accepted / rollouts for p, (rollouts, accepted) in pooled.items() if rollouts > 0}
    missing = sorted({int(run["seed"]) for run in runs if run["id"] not in matched})
    why = f"; no pre-pass of this task for seed {', '.join(map(str, missing))}" if matched else ""
    label = f"pooled pass rate of the selected runs (accepted / rollouts over all their visits){why}"
    return Reference("pooled", label, {run["id"]: shared for run in runs})


def bin_index(rate: float, bins: int) -> int:
    # The tolerance keeps a rate on an edge (3/10 reads 0.30000000000000004 or 0.29999999999999999)
    # in the bin it starts.
    return min(int(math.floor(rate * bins + 1e-9)), bins - 1)


def spread(group: Group, rows: Rows, ref: Reference, bins: int = BINS) -> Spread:
    """One setting's points (runs in the group's order, prompts in first-visit order) and bins."""
    points, unreferenced = [], 0
    for run in group.runs:
        rates = ref.rates.get(run["id"], {})
        for prompt, (visits, rollouts, _) in visit_totals(rows.get(run["id"], [])).items():
            if prompt not in rates:
                unreferenced += 1
                continue
            points.append(Point(run["id"], prompt, rates[prompt], rollouts / visits, visits, rollouts))
    members: list[list[Point]] = [[] for _ in range(bins)]
    for point in points:
        members[bin_index(point.rate, bins)].append(point)
    summary = [
        Bin(low=i / bins, high=(i + 1) / bins, points=len(m), visits=sum(p.visits for p in m),
            rollouts=sum(p.rollouts for p in m), mean=sum(p.per_visit for p in m) / len(m) if m else None)
        for i, m in enumerate(members)
    ]  # fmt: skip
    return Spread(group.label, [run["id"] for run in group.runs], points, summary, unreferenced)


def where_budget_went(
    runs: Sequence[Mapping], rows: Rows, matched: Mapping[str, Mapping], bins: int = BINS
) -> tuple[Reference, list[Spread]]:
    """The reference and one ``Spread`` per setting of ``runs`` (pre-pass runs among them set aside)."""
    if not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be in 1..{MAX_BINS}, got {bins}")
    ordinary = [run for run in runs if not is_prepass(run)]
    ref = reference(ordinary, rows, matched)
    return ref, [spread(group, rows, ref, bins) for group in group_runs(ordinary)]


def read_budget(
    reader: StoreReader, runs: Sequence[Mapping], bins: int = BINS
) -> tuple[Reference, list[Spread]]:
    """``where_budget_went`` for ``runs`` (dicts with id, seed, config, summary) read from the store:
    their prompt rows and those of the pre-passes that match them."""
    ordinary = [run for run in runs if not is_prepass(run)]
    matched = match_prepasses(ordinary, [r for r in reader.runs() if is_prepass(r)])
    ids = [run["id"] for run in ordinary] + [str(p["id"]) for p in matched.values()]
    return where_budget_went(ordinary, reader.prompt_stats(ids), matched, bins)
