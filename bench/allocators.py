"""The allocator zoo at equal rollout cost: every allocator against uniform in the GVM study's regime, seeds
and endpoints (rollouts, steps and tokens to 50% / 80% of uniform's gain, paired over seeds).

    python bench/allocators.py -j 16 --threads 1   # make bench-allocators JOBS=16
    python bench/allocators.py --quick             # make bench-allocators QUICK=1: the pipeline in minutes

Each part is resumable (a finished part is appended to its file and skipped by a rerun with the same
settings; the settings key is the GVM study's, bench/gvm_study.py `settings_key`):
1. the pre-pass of each seed: the GVM study's (`gvm_study_prepass.jsonl` in `--gvm-study`), run here only for
   a seed it lacks (`allocators_prepass.jsonl`); it feeds the allocation checks and `--db`;
2. the cells, algorithm x arm x seed (`ARMS`, `PLAN`): an arm whose overrides are those of a GVM study arm
   (uniform, gvm) is copied from the GVM study's finished cells with the same settings key instead of being
   rerun (`--no-reuse`: rerun them, e.g. for their token counts, which the GVM study did not record); the
   others run in the order seed 0 (raftpp, then grpo), seed 1, ..., so a partial run can already rank arms
   on a few paired seeds; the token-budget arms (`_tok`) run after all rollout-budget arms;
3. the report (bench/allocators_report.py): `allocators.json`, `allocators.md`, `allocators.png`.

A cell that fails (an allocator not built yet, a crash) is reported and left out; the others go on.
`--db URL` also records every cell as a run of a dibs results store and each seed's pre-pass as a run
whose summary has `"kind": "prepass"` (bench/allocators_store.py).
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the sibling modules, when run as a script

from gvm_study import ARMS as GVM_ARMS  # noqa: E402
from gvm_study import QUICK, SEEDS, append, prepass_seed, read_jsonl, settings_key, study_parser  # noqa: E402

# uniform's training tokens at step 1 of the regime (128 rollouts of the warm start, no probe; the same for
# raftpp and grpo: no update has happened yet), measured once with experiments/gvm_study: 2298, 2573 and
# 2603 on seeds 0-2, mean 2491. The token budget of the `_tok` arms; changing it reruns them (it is their
# override). Their step 1 spends only 2491 / max_new_tokens (64) = 38 rollouts: before anything was
# generated the loop plans at the longest response (platform/runtime/budget.py, step_budget).
STEP_TOKENS = 2491
TOKENS = ["allocation.budget=tokens", f"allocation.step_tokens={STEP_TOKENS}"]

# The arm table: name -> (what, overrides of experiments/gvm_study/<algorithm>.yaml).
ARMS: dict[str, tuple[str, list[str]]] = {
    "uniform": ("uniform best-of-8 (the baseline)", []),
    "gvm": ("GVM as the paper: probe 8, discarded, charged", ["allocation.allocator=gvm"]),
    "dapo": ("DAPO dynamic sampling: all-equal groups dropped and refilled", ["allocation.allocator=dapo"]),
    "reinforce_ada": (
        "Reinforce-Ada: rounds of 4 until a balanced group of 4, within 8 a prompt on average",
        ["allocation.allocator=reinforce_ada", "allocation.ada_group=4"],
    ),
    "greso": (
        "GRESO: skip prompts whose recent groups had zero reward variance",
        ["allocation.allocator=greso"],
    ),
    "knapsack": ("knapsack: the budget split by each prompt's value", ["allocation.allocator=knapsack"]),
    "variance": ("variance: a Beta posterior of each pass rate", ["allocation.allocator=variance"]),
    "probe_trains": (
        "probe 4 per prompt, charged and trained on",
        ["allocation.allocator=probe_trains", "allocation.n_probe=4"],
    ),
    # the token-budget arms (raftpp only), run after all the others
    "uniform_tok": ("uniform under a token budget (step_tokens)", TOKENS),
    "knapsack_tok": ("knapsack under a token budget", ["allocation.allocator=knapsack", *TOKENS]),
    "variance_tok": ("variance under a token budget", ["allocation.allocator=variance", *TOKENS]),
}
PLAN = {"raftpp": list(ARMS), "grpo": [a for a in ARMS if "allocation.budget=tokens" not in ARMS[a][1]]}
# Arms also compared with another arm on the same axes (a token-budget arm against uniform's token run).
REFERENCES = {"knapsack_tok": "uniform_tok", "variance_tok": "uniform_tok"}
CHECKPOINTS = "/tmp/dibs-allocators"


def budget_mode(arm: str) -> str:
    return "tokens" if "allocation.budget=tokens" in ARMS[arm][1] else "rollouts"


def gvm_twin(arm: str) -> str | None:
    """The GVM study's arm with exactly this arm's overrides (its cells are this arm's), if any."""
    return next((g for g, (_, o) in GVM_ARMS.items() if sorted(o) == sorted(ARMS[arm][1])), None)


def order(todo: set[tuple[str, str, int]], seeds: list[int], algorithms: list[str]) -> list[tuple]:
    """Rollout-budget arms seed by seed (each seed: raftpp's arms, then grpo's), then the token arms."""
    return [
        (al, arm, s)
        for tokens in (False, True)
        for s in seeds
        for al in algorithms
        for arm in PLAN[al]
        if (budget_mode(arm) == "tokens") == tokens and (al, arm, s) in todo
    ]


def run_arm(args: tuple) -> tuple[str, dict | None, dict | None, dict | None, str | None]:
    """One cell in a worker: (its label, the cell, its per-prompt rows, the recorder's rows for --db or
    None, the error or None). The cell's eval points and steps get a fifth column, the tokens generated so
    far (probe included)."""
    algorithm, arm, seed, overrides, threads, settings, keep_rows = args
    label = f"{algorithm}-{arm} seed {seed}"
    from gvm_study import train_cell

    from dibs.platform.core import metrics as M
    from dibs.platform.runtime.recording import MemoryRecorder

    try:
        if keep_rows:
            from allocators_store import TimedRecorder

            rec = TimedRecorder()
        else:
            rec = MemoryRecorder()
        cell, prompts = train_cell(
            algorithm, arm, seed, overrides, ARMS[arm][1], threads, settings, rec, CHECKPOINTS
        )
    except Exception as e:  # noqa: BLE001 - one broken allocator must not stop the other cells
        return label, None, None, None, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}"
    cell["curve"] = [[*p, rec.at(p[0], M.EVAL_ACCURACY)[2]] for p in cell["curve"]]
    cell["steps"] = [[*p, int(rec.at(p[0], M.BUDGET_TOKENS)[0])] for p in cell["steps"]]
    rows = {"rows": rec.rows, "walls": rec.walls, "prompts": rec.prompts} if keep_rows else None
    return label, cell, prompts, rows, None


def reuse(a, settings: str, cells: list[dict], files: dict, *, write: bool = True) -> list[str]:
    """Copy the GVM study's finished cells (and their per-prompt rows) of the arms with a twin there, same
    settings key, into this study's files (`write=False`: only count them); the lines to print."""
    src = a.gvm_study / "gvm_study_cells.jsonl"
    have = {(c["algorithm"], c["arm"], c["seed"]) for c in cells}
    twins = {arm: gvm_twin(arm) for arm in a.arms}
    wanted = {
        (c["algorithm"], arm, c["seed"]): c
        for c in read_jsonl(src, settings)
        for arm, twin in twins.items()
        if twin == c["arm"] and sorted(c["arm_overrides"]) == sorted(ARMS[arm][1])
        if c["algorithm"] in a.algorithms and arm in PLAN[c["algorithm"]] and c["seed"] in a.seeds
    }
    wanted = {k: c for k, c in wanted.items() if k not in have}
    arms = ", ".join(sorted({k[1] for k in wanted}))
    if not wanted or not write:
        return (
            [f"{len(wanted)} cells of {arms} can be reused from {src} (a run copies them)"] if wanted else []
        )
    prompts = {}
    with gzip.open(a.gvm_study / "gvm_study_prompts.jsonl.gz", "rt") as f:
        for line in f:
            r = json.loads(line)
            if r["settings"] == settings:
                prompts[(r["algorithm"], r["arm"], r["seed"])] = r  # the last copy of a cell wins
    for (al, arm, s), c in sorted(wanted.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        rows = prompts.get((al, c["arm"], s))
        if rows is not None:
            append(files["prompts.jsonl.gz"], rows | {"arm": arm})
        cell = c | {"arm": arm, "arm_overrides": ARMS[arm][1], "reused_from": str(src)}
        append(files["cells.jsonl"], cell)
        cells.append(cell)
    return [
        f"reused {len(wanted)} cells of {arms} from {src} (same experiment files, overrides and settings "
        f"{settings}: the same numbers), not rerun; they carry no token counts (--no-reuse reruns them)"
    ]


def prepasses_for(a, settings: str, files: dict, pool) -> list[dict]:
    """The GVM study's pre-pass of each seed, or one run here for a seed it lacks."""
    theirs = [
        r for r in read_jsonl(a.gvm_study / "gvm_study_prepass.jsonl", settings) if r["seed"] in a.seeds
    ]
    mine = [r for r in read_jsonl(files["prepass.jsonl"], settings) if r["seed"] in a.seeds]
    got = {r["seed"]: r for r in [*mine, *theirs]}  # the GVM study's wins
    if theirs:
        print(f"pre-pass: seeds {sorted(r['seed'] for r in theirs)} from {a.gvm_study}", flush=True)
    todo = [(s, a.set, a.prepass_samples, a.threads, settings) for s in a.seeds if s not in got]
    if pool is not None:
        for row in pool.imap_unordered(prepass_seed, todo):
            append(files["prepass.jsonl"], row)
            got[row["seed"]] = row
            print(f"pre-pass seed {row['seed']}: {row['wall_seconds']} s", flush=True)
    return [got[s] for s in sorted(got)]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = study_parser(__doc__.splitlines()[0], PLAN, ARMS, SEEDS)
    ap.add_argument("--quick", action="store_true", help="a toy-sized run of the whole pipeline, into --out")
    ap.add_argument("--out", default=None, help="default bench/results; --quick: /tmp/dibs-allocators-quick")
    ap.add_argument(
        "--gvm-study",
        default=None,
        help="the GVM study's results, for its pre-pass and reusable cells (default bench/results; "
        "--quick: /tmp/dibs-gvm-study-quick)",
    )
    ap.add_argument("--no-reuse", action="store_true", help="rerun the arms the GVM study has")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the files")
    ap.add_argument("--db", default=None, metavar="URL", help="also record every cell in this results store")
    a = ap.parse_args(argv)
    if a.quick:
        a.set, a.seeds, a.prepass_samples = [*QUICK, *a.set], a.seeds[:2], min(a.prepass_samples, 4)
    a.out = Path(a.out or ("/tmp/dibs-allocators-quick" if a.quick else "bench/results"))
    a.gvm_study = Path(a.gvm_study or ("/tmp/dibs-gvm-study-quick" if a.quick else "bench/results"))
    return a


def head(a, settings: str, notes: list[str]) -> dict:
    plan = {al: [arm for arm in PLAN[al] if arm in a.arms] for al in a.algorithms}
    return {
        "question": "which allocator reaches uniform's accuracy gains with the fewest rollouts (probe "
        "counted), at equal rollout cost per step, and is the ranking resolved over the seeds?",
        "settings": settings,
        "overrides": a.set,
        "step_tokens": STEP_TOKENS,
        "arms": {k: {"what": v[0], "overrides": v[1], "budget": budget_mode(k)} for k, v in ARMS.items()},
        "plan": plan,
        "references": {k: v for k, v in REFERENCES.items() if k in a.arms and v in a.arms},
        "seeds_planned": a.seeds,
        "reused": " ".join(notes),
    }


def main(argv: list[str] | None = None) -> int:
    from allocators_report import write_report

    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    files = {k: a.out / f"allocators_{k}" for k in ("prepass.jsonl", "cells.jsonl", "prompts.jsonl.gz")}
    settings = settings_key(a.set, a.prepass_samples)
    cells = [
        c
        for c in read_jsonl(files["cells.jsonl"], settings)
        if c["arm"] in ARMS and c["arm_overrides"] == ARMS[c["arm"]][1] and c["seed"] in a.seeds
    ]
    notes = [] if a.no_reuse else reuse(a, settings, cells, files, write=not a.report_only)
    for line in notes:
        print(line, flush=True)
    if a.report_only:
        prepasses = prepasses_for(a, settings, files, None)
        write_report(a.out, head(a, settings, notes), cells, prepasses, files["prompts.jsonl.gz"])
        return 0
    store = None
    if a.db:
        from allocators_store import Recording

        store = Recording(a.db, settings, a.set)
    failed = []
    with mp.get_context("spawn").Pool(a.jobs, maxtasksperchild=1) as pool:
        prepasses = prepasses_for(a, settings, files, pool)
        if store is not None:
            store.catch_up(prepasses, cells, files["prompts.jsonl.gz"])
        have = {(c["algorithm"], c["arm"], c["seed"]) for c in cells}
        want = {(al, arm, s) for al in a.algorithms for arm in PLAN[al] if arm in a.arms for s in a.seeds}
        todo = order(want - have, a.seeds, a.algorithms)
        print(f"{len(todo)} cells to run, {len(cells)} done in {files['cells.jsonl']} (settings {settings})")
        jobs = [(al, arm, s, a.set, a.threads, settings, store is not None) for al, arm, s in todo]
        for label, cell, prompts, rows, error in pool.imap_unordered(run_arm, jobs):
            if error is not None:
                failed.append(label)
                print(f"{label} FAILED (left out): {error}", flush=True)
                continue
            append(files["prompts.jsonl.gz"], prompts)  # first: a cell is done once its line is in cells
            append(files["cells.jsonl"], cell)
            cells.append(cell)
            if store is not None:
                store.cell(cell, rows)
            print(
                f"{label}: accuracy {cell['curve'][0][3]:.3f} -> {cell['curve'][-1][3]:.3f}, "
                f"{cell['rollouts_consumed']} rollouts, {cell['wall_seconds']} s",
                flush=True,
            )
    write_report(a.out, head(a, settings, notes), cells, prepasses, files["prompts.jsonl.gz"])
    if failed:
        print(f"{len(failed)} cells failed and were left out: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
