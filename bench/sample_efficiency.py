"""Sample-efficiency benchmark: RAFT++ and GRPO x {uniform, gvm, gvm_reuse, dapo} x seeds, from
experiments/gvm/*.yaml, compared by rollouts-to-target (probe included) and steps-to-target. Opt-in:
`--allocators ... gvm_oracle`, the not budget-honest ceiling (marked † in the table).

    python bench/sample_efficiency.py -j 2            # make bench-sample-efficiency

Resumable (docs/conventions.md, Benchmarks): each finished cell (algorithm x allocator x seed) is appended to
`bench/results/sample_efficiency_cells.jsonl` as soon as it ends, and a rerun skips the cells already
there with the same settings. The warm start of each seed is computed once (warm_start.reuse) before the
cells, so that parallel cells never race to write it. The target rule (per seed: step-0 accuracy + 80%
of the uniform run's final gain, dashboards/efficiency.py) is fixed here, before any run, and written
into the results file with the targets it gives.

Outputs: bench/results/sample_efficiency.json (rows: algorithm, allocator, seeds, target_accuracy,
rollouts_to_target {mean, ci95}, steps_to_target {mean, ci95}, final_accuracy {mean, ci95}, ratios to
uniform) and bench/results/sample_efficiency.md (the table docs/results.md quotes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import pickle
import sys
import time
from pathlib import Path

ALGORITHMS = ("raftpp", "grpo")
ALLOCATORS = ("uniform", "gvm", "gvm_reuse", "dapo")
# Opt-in only (`--allocators ... gvm_oracle`), never a default: not budget-honest (its probe is not in the
# rollouts), an upper bound for studies. It runs the gvm experiment with the allocator swapped, so the
# settings key, built from the budget-honest experiment files, is the same with or without it.
ORACLE = "gvm_oracle"
TARGET_FRACTION = 0.8  # fixed before the runs: target = step 0 + 80% of uniform's final gain, per seed


def experiment(algorithm: str, allocator: str) -> Path:
    return Path("experiments/gvm") / f"{algorithm}-{'gvm' if allocator == ORACLE else allocator}.yaml"


def load(algorithm: str, allocator: str, seed: int, overrides: list[str]):
    from dibs.platform.core.config import load_config

    swap = [f"allocation.allocator={ORACLE}"] if allocator == ORACLE else []
    return load_config(
        experiment(algorithm, allocator),
        [f"seed={seed}", "runtime.checkpoint_every=0", "warm_start.reuse=true", *overrides, *swap],
    )


def task_data(data_dir: str | None, seed: int):
    """Prebuilt task splits (pickled TaskData, `task-seed<N>.pkl`) for machines without reasoning-gym."""
    path = Path(data_dir or "") / f"task-seed{seed}.pkl"
    return pickle.loads(path.read_bytes()) if data_dir and path.is_file() else None


def quiet(threads: int) -> None:
    import torch
    import transformers

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()


def data_fingerprint(seed: int, overrides: list[str], data_dir: str | None) -> str:
    from dibs.platform.tasks.registry import build_task

    data = task_data(data_dir, seed) or build_task(load(ALGORITHMS[0], "uniform", seed, overrides).task, seed)
    return data.fingerprint()


def warm_start_seed(args: tuple) -> int:
    seed, overrides, data_dir, threads = args
    from dibs.platform.learn.warm_start import prepare
    from dibs.platform.runtime.recording import NullProgress

    quiet(threads)
    prepare(load(ALGORITHMS[0], "uniform", seed, overrides), NullProgress(), task_data(data_dir, seed))
    return seed


def run_cell(args: tuple) -> dict:
    algorithm, allocator, seed, overrides, data_dir, threads, settings = args
    from dibs.platform.core import metrics as M
    from dibs.platform.runtime.loop import train
    from dibs.platform.runtime.recording import MemoryRecorder, NullProgress

    quiet(threads)
    cfg = load(algorithm, allocator, seed, overrides)
    rec, t = MemoryRecorder(), time.time()
    summary = train(
        cfg,
        rec,
        NullProgress(),
        checkpoint_dir=f"/tmp/dibs-bench-ckpt/{algorithm}-{allocator}-{seed}",
        data=task_data(data_dir, seed),
    )
    curve = [
        [step, rollouts, round(value, 4)]
        for (step, name), (value, rollouts, _) in sorted(rec.rows.items())
        if name == M.EVAL_ACCURACY
    ]
    last = cfg.train.steps
    totals = {
        name: rec.at(last, name)[0]
        for name in (M.BUDGET_PROBE_ROLLOUTS, M.BUDGET_TRAIN_ROLLOUTS, M.BUDGET_ACCEPTED, M.BUDGET_WASTED)
    }
    if allocator == ORACLE:  # what its uncharged probe cost over the run, next to the budget it reports
        totals[M.ALLOC_ORACLE_ROLLOUTS] = sum(
            v for (_, name), (v, _, _) in rec.rows.items() if name == M.ALLOC_ORACLE_ROLLOUTS
        )
    return {
        "algorithm": algorithm,
        "allocator": allocator,
        "seed": seed,
        "settings": settings,
        "curve": curve,
        "rollouts_consumed": summary["rollouts_consumed"],
        "totals": totals,
        "wall_seconds": round(time.time() - t, 1),
        "data_fingerprint": summary["data_fingerprint"],
    }


def settings_key(overrides: list[str]) -> str:
    """Cells run with other overrides or other experiment configs are not mixed into one table. The
    configs enter as loaded (their `base:` file merged, only the values that differ from the defaults),
    so a comment or a file's layout does not count, and a new config field with a default neither."""
    from dibs.platform.core.config import load_config

    configs = [
        load_config(experiment(algorithm, allocator)).model_dump(mode="json", exclude_defaults=True)
        for algorithm in ALGORITHMS
        for allocator in ALLOCATORS
    ]
    return hashlib.sha256(json.dumps([sorted(overrides), configs], sort_keys=True).encode()).hexdigest()[:12]


def write_summary(cells: list[dict], out_dir: Path, settings: str, overrides: list[str]) -> None:
    from dibs.dashboards.efficiency import TAIL, markdown_table, summarize

    rows = summarize(cells, fraction=TARGET_FRACTION)
    doc = {
        "target_rule": f"per algorithm and seed: step-0 accuracy + {TARGET_FRACTION:.0%} of the uniform "
        f"run's final gain (final level = mean of its last {TAIL} evals), fixed before the runs",
        "metric": "eval/accuracy (greedy, held-out)",
        "settings": settings,
        "overrides": overrides,
        "experiments": "experiments/gvm/<algorithm>-<allocator>.yaml",
        "rows": rows,
    }
    (out_dir / "sample_efficiency.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "sample_efficiency.md").write_text(markdown_table(rows))
    print(markdown_table(rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    ap.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=(*ALLOCATORS, ORACLE))
    ap.add_argument("-j", "--jobs", type=int, default=1, help="cells run in parallel")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override for every cell"
    )
    ap.add_argument("--data-dir", help="directory of task-seed<N>.pkl (machines without reasoning-gym)")
    ap.add_argument("--out", default="bench/results", help="results directory")
    ap.add_argument("--summary-only", action="store_true", help="rewrite the summary from the cells file")
    ap.add_argument(
        "--warm-start-only", action="store_true", help="only compute (cache) each seed's warm start"
    )
    a = ap.parse_args(argv)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells_file = out_dir / "sample_efficiency_cells.jsonl"
    settings = settings_key(a.set)
    lines = cells_file.read_text().splitlines() if cells_file.exists() else []
    done = [c for c in map(json.loads, lines) if c["settings"] == settings]
    if not a.summary_only:  # a cell counts as done only on the same task data (generator changes included)
        fingerprints = {s: data_fingerprint(s, a.set, a.data_dir) for s in a.seeds}
        done = [c for c in done if c.get("data_fingerprint") == fingerprints.get(c["seed"])]
    have = {(c["algorithm"], c["allocator"], c["seed"]) for c in done}
    todo = [
        (al, alloc, s, a.set, a.data_dir, a.threads, settings)
        for s in a.seeds
        for al in a.algorithms
        for alloc in a.allocators
        if (al, alloc, s) not in have
    ]
    print(f"{len(todo)} cells to run, {len(done)} done in {cells_file} (settings {settings})", flush=True)
    if todo and not a.summary_only:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(a.jobs, len(todo)), maxtasksperchild=1) as pool:
            seeds = sorted({t[2] for t in todo})
            list(pool.imap_unordered(warm_start_seed, [(s, a.set, a.data_dir, a.threads) for s in seeds]))
            if a.warm_start_only:
                return 0
            for cell in pool.imap_unordered(run_cell, todo):
                with cells_file.open("a") as f:
                    f.write(json.dumps(cell) + "\n")
                done.append(cell)
                print(
                    f"{cell['algorithm']}-{cell['allocator']} seed {cell['seed']}: accuracy "
                    f"{cell['curve'][0][2]:.3f} -> {cell['curve'][-1][2]:.3f}, {cell['rollouts_consumed']} "
                    f"rollouts, {cell['wall_seconds']} s",
                    flush=True,
                )
    write_summary(done, out_dir, settings, a.set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
