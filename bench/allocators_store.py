"""`--db URL` of bench/allocators.py: every cell of the allocator zoo as a run of a dibs results store (the
dashboard compares them like any runs), and each seed's pre-pass as a stored pre-pass: a run whose summary
has `"kind": "prepass"`, same seed and `config.task` as the arms, one per-prompt row per RL prompt at step 0
(p̂ = the pre-pass pass rate, Ĝ its gradient norm, n = samples, accepted).

A cell run here is stored with every metric row and per-prompt row of its loop; a cell known only from the
files (run before without `--db`, or reused from the GVM study) with what the files kept: its evals, its
per-step budget and update counts, its per-prompt rows (and `"from_files": true` in its summary). Run ids
are fixed by the settings key, algorithm, arm and seed, so a rerun never stores a cell twice.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

from gvm_study import EXPERIMENTS, load

from dibs.platform.core import metrics as M
from dibs.platform.core.config import config_to_dict
from dibs.platform.core.metrics import PromptStat
from dibs.platform.core.provenance import git_commit, package_versions
from dibs.platform.runtime.recording import MemoryRecorder
from dibs.platform.store import MetricRow, open_store
from dibs.platform.store.prepass import record_prepass


class TimedRecorder(MemoryRecorder):
    """MemoryRecorder's rows plus each step's wall seconds, which a stored metric row carries."""

    def __init__(self):
        super().__init__()
        self.walls: dict[int, float] = {}

    def record(self, step, values, *, rollouts_consumed, tokens_generated, wall_seconds) -> None:
        super().record(
            step,
            values,
            rollouts_consumed=rollouts_consumed,
            tokens_generated=tokens_generated,
            wall_seconds=wall_seconds,
        )
        self.walls[step] = wall_seconds


class Recording:
    """The study's side of the store: the runs it holds, and how a cell or a pre-pass becomes one."""

    def __init__(self, url: str, settings: str, overrides: list[str]):
        self.store = open_store(url)
        self.settings, self.overrides = settings, overrides
        self.known = {r["id"] for r in self.store.list_runs()}
        self.texts: dict[int, list[str]] = {}  # seed -> the RL prompts in pool order (from its pre-pass)

    def run_id(self, *parts) -> str:
        return "-".join(["allocators", self.settings, *map(str, parts)])

    def catch_up(self, prepasses: list[dict], cells: list[dict], prompts_file: Path) -> None:
        """Store the pre-passes and the finished cells the store does not hold yet (from the files)."""
        for pp in prepasses:
            self.texts[pp["seed"]] = pp["prompts"]
            rid = self.run_id("prepass", f"s{pp['seed']}")
            if rid not in self.known:
                config = config_to_dict(load("raftpp", pp["seed"], self.overrides))
                summary = {"settings": self.settings, "study": "allocators"}
                n = pp["samples"]
                rows = [
                    PromptStat(text, float(p), float(g), n, round(p * n), True)
                    for text, p, g in zip(pp["prompts"], pp["p"], pp["g"], strict=True)
                ]
                record_prepass(
                    self.store,
                    config,
                    pp["seed"],
                    rows,
                    name=f"prepass-s{pp['seed']}",
                    experiment=EXPERIMENTS["raftpp"],
                    run_id=rid,
                    summary=summary,
                )
                self.known.add(rid)
        pending = {self._cell_id(c): c for c in cells if self._cell_id(c) not in self.known}
        if not pending:
            return
        rows = {}
        if prompts_file.exists():
            with gzip.open(prompts_file, "rt") as f:
                for line in f:
                    r = json.loads(line)
                    if r["settings"] == self.settings:
                        rows[self._cell_id(r)] = r["rows"]
        for rid, c in pending.items():
            self.cell(c, None, rows.get(rid, []))
        print(f"--db: stored {len(pending)} finished cells from the files (their kept rows only)", flush=True)

    def _cell_id(self, c: dict) -> str:
        return self.run_id(c["algorithm"], c["arm"], f"s{c['seed']}")

    def cell(self, cell: dict, rec: dict | None, prompt_rows: list[list] | None = None) -> None:
        """A finished cell as a finished run: with `rec` (the worker's recorder rows) every row, else the
        rows kept in the files (`prompt_rows`: the cell's per-prompt rows there)."""
        rid = self._cell_id(cell)
        if rid in self.known:
            return
        al, seed = cell["algorithm"], cell["seed"]
        self.store.create_run(
            name=f"{al}-{cell['arm']}",
            experiment=EXPERIMENTS[al],
            config=config_to_dict(load(al, seed, [*self.overrides, *cell["arm_overrides"]])),
            git_commit=git_commit(),
            versions=package_versions(),
            seed=seed,
            run_id=rid,
        )
        if rec is not None:
            self.store.log_metrics(rid, _recorded(rec))
            for step, stats in sorted(rec["prompts"].items()):
                self.store.log_prompt_stats(rid, step, stats)
        else:
            self.store.log_metrics(rid, _kept(cell))
            for step, stats in _prompt_stats(prompt_rows or [], self.texts.get(seed, [])).items():
                self.store.log_prompt_stats(rid, step, stats)
        summary = {
            "study": "allocators",
            "settings": self.settings,
            "arm": cell["arm"],
            "rollouts_consumed": cell["rollouts_consumed"],
            "from_files": rec is None,
        } | ({"reused_from": cell["reused_from"]} if cell.get("reused_from") else {})
        self.store.finish_run(rid, "finished", summary)
        self.known.add(rid)


def _recorded(rec: dict) -> list[MetricRow]:
    walls = rec["walls"]
    return [
        MetricRow(step, name, float(v), int(r), int(t), float(walls.get(step, 0.0)))
        for (step, name), (v, r, t) in sorted(rec["rows"].items())
    ]


def _kept(cell: dict) -> list[MetricRow]:
    """The metric rows a cell's line keeps: evals [step, rollouts, updates, acc(, tokens)] and per-step
    budgets [step, rollouts, probe, updates(, tokens)] (no tokens in the GVM study's cells: 0)."""
    out = []
    for p in cell["curve"]:
        tokens = int(p[4]) if len(p) > 4 else 0
        out.append(MetricRow(p[0], M.EVAL_ACCURACY, float(p[3]), int(p[1]), tokens, 0.0))
    for p in cell["steps"]:
        step, rollouts, tokens = p[0], int(p[1]), int(p[4]) if len(p) > 4 else 0
        values = {M.BUDGET_ROLLOUTS: p[1], M.BUDGET_PROBE_ROLLOUTS: p[2], M.BUDGET_UPDATES: p[3]}
        if len(p) > 4:
            values[M.BUDGET_TOKENS] = p[4]
        out += [MetricRow(step, k, float(v), rollouts, tokens, 0.0) for k, v in values.items()]
    return out


def _prompt_stats(rows: list[list], texts: list[str]) -> dict[int, list[PromptStat]]:
    """Per step, the PromptStats of a cell's kept rows [step, pool index, p̂, Ĝ, n, accepted, probed]."""
    out: dict[int, list[PromptStat]] = {}
    for step, idx, p, g, n, acc, probed in rows:
        text = texts[idx] if 0 <= idx < len(texts) else f"pool index {idx}"
        stat = PromptStat(
            text, math.nan if p is None else p, math.nan if g is None else g, n, acc, bool(probed)
        )
        out.setdefault(step, []).append(stat)
    return out
