"""The GVM study: does per-prompt allocation save rollouts here, and how much of the paper's speed-up in
steps comes from the number of optimizer updates rather than from allocation?

    python bench/gvm_study.py -j 2            # make bench-gvm-study (about 2 hours on 2 cores)
    python bench/gvm_study.py --quick         # make bench-gvm-study QUICK=1: the whole pipeline in minutes

Order of work, each part resumable (a finished part is appended to its file and skipped by a rerun with
the same settings):
1. per seed, the warm start and the pre-pass (bench/gvm_study_prepass.py): every RL prompt sampled
   `--prepass-samples` times -> its pass rate and gradient norm, `gvm_study_prepass.jsonl`;
2. the go/no-go figure, printed before any training: the predicted variance gain of the oracle allocation
   over uniform in this regime (below 1.3x the study stops: change the regime first);
3. the cells, algorithm x arm x seed (`ARMS`): the curve, the per-step budget and update counts
   (`gvm_study_cells.jsonl`) and every per-prompt row (`gvm_study_prompts.jsonl.gz`);
4. the report (bench/gvm_study_report.py): `gvm_study.json`, `gvm_study.md`, `gvm_study.png`.

Every arm of a seed shares that seed's data split, warm start and prompt order (the loop's prompt stream
depends on the seed only), so arms are compared in pairs, seed by seed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the sibling modules, when run as a script

EXPERIMENTS = {"raftpp": "experiments/gvm_study/raftpp.yaml", "grpo": "experiments/gvm_study/grpo.yaml"}
# One step of every arm is 16 prompts; uniform spends N = 16 x 8 = 128 rollouts (the per-step budget).
# "updates" arms fix the optimizer updates per step with mini-batches of a fixed sample count, as the public
# GVM code does implicitly: its baselines make 4 updates a step, its GVM runs 8x more (here 4 and 32).
ARMS = {
    "uniform": ("uniform best-of-8 (the baseline), 1 update/step", []),
    "uniform16": ("uniform best-of-16: twice the rollouts per step", ["allocation.n_per_prompt=16"]),
    "gvm": ("GVM as the paper: probe 8, discarded, charged", ["allocation.allocator=gvm"]),
    "gvm_reuse": ("GVM with estimates carried across visits", ["allocation.allocator=gvm_reuse"]),
    "gvm_oracle": (
        "GVM on a free 32-sample probe, floor 1 (NOT budget-honest: a ceiling)",
        ["allocation.allocator=gvm_oracle", "allocation.n_oracle=32"],
    ),
    "uniform_u4": ("uniform, 4 updates/step (the public code's baseline)", ["train.mini_batch_samples=32"]),
    "gvm_u32": (
        "GVM, 32 updates/step (the public code's GVM)",
        ["allocation.allocator=gvm", "train.mini_batch_samples=4"],
    ),
    "uniform_u32": ("uniform, 32 updates/step (matched to gvm_u32)", ["train.mini_batch_samples=4"]),
    "gvm_u4": (
        "GVM, 4 updates/step (matched to uniform_u4)",
        ["allocation.allocator=gvm", "train.mini_batch_samples=32"],
    ),
    # Beyond the arms above: the loss the variance argument assumes (each prompt's contributing samples
    # averaged, then prompts), where n_i changes a prompt's variance rather than its weight. Run last.
    "uniform_pm": ("uniform, per-prompt mean loss", ["train.loss_agg=prompt_mean"]),
    "gvm_pm": ("GVM, per-prompt mean loss", ["allocation.allocator=gvm", "train.loss_agg=prompt_mean"]),
}
LAST = ("uniform_pm", "gvm_pm")
PLAN = {"raftpp": list(ARMS), "grpo": ["uniform", "gvm", "gvm_oracle"]}
SEEDS = [0, 1, 2, 3, 4, 5]
PREPASS_SAMPLES = 32
# --quick: the whole pipeline on a toy scale (a check of the script, not a result).
# Same task and warm start as the study (so it also fills the warm-start cache), 6 steps, 2 seeds.
QUICK = ["train.steps=6", "eval.every=2"]


def load(algorithm: str, seed: int, overrides: list[str]):
    from dibs.platform.core.config import load_config

    return load_config(EXPERIMENTS[algorithm], [f"seed={seed}", *overrides])


def quiet(threads: int) -> None:
    import torch
    import transformers

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()


def settings_key(overrides: list[str], prepass_samples: int) -> str:
    """Cells and pre-passes of other settings or other experiment files are never mixed (a cell also
    keeps its arm's overrides: an arm redefined in `ARMS` reruns, the other arms stay)."""
    h = hashlib.sha256(json.dumps([sorted(overrides), prepass_samples]).encode())
    for path in EXPERIMENTS.values():
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:12]


def prepass_seed(args: tuple) -> dict:
    seed, overrides, samples, threads, settings = args
    from gvm_study_prepass import prepass

    quiet(threads)
    t = time.time()
    out = prepass(load("raftpp", seed, overrides), None, samples)
    return out | {"settings": settings, "wall_seconds": round(time.time() - t, 1)}


def prompt_rows(rec, index: dict[str, int]) -> list[list]:
    """Per step, per prompt: [step, pool index, p̂, Ĝ, n_i, accepted, probed] (NaN estimates as None)."""

    def num(x: float, digits: int):
        return None if math.isnan(x) else round(x, digits)

    return [
        [
            step,
            index.get(r.prompt_id, -1),
            num(r.p_hat, 4),
            num(r.g_hat, 5),
            r.n_alloc,
            r.accepted,
            int(r.probed),
        ]
        for step, rows in sorted(rec.prompts.items())
        for r in rows
    ]


def run_cell(args: tuple) -> tuple[dict, dict]:
    algorithm, arm, seed, overrides, threads, settings = args
    from dibs.platform.runtime.recording import MemoryRecorder

    cell = (algorithm, arm, seed, overrides, ARMS[arm][1], threads, settings)
    return train_cell(*cell, MemoryRecorder(), "/tmp/dibs-gvm-study")


def train_cell(
    algorithm: str,
    arm: str,
    seed: int,
    overrides: list[str],
    arm_overrides: list[str],
    threads: int,
    settings: str,
    rec,
    checkpoint_root: str,
) -> tuple[dict, dict]:
    """One cell (an arm's overrides on an algorithm's file, one seed) trained into `rec`, a
    MemoryRecorder: the cell's line and its per-prompt rows (bench/allocators.py runs its arms here too)."""
    from dibs.platform.core import metrics as M
    from dibs.platform.runtime.loop import train
    from dibs.platform.runtime.recording import NullProgress
    from dibs.platform.tasks.registry import build_task

    quiet(threads)
    cfg = load(algorithm, seed, [*overrides, *arm_overrides])
    data = build_task(cfg.task, cfg.seed)
    t = time.time()
    summary = train(
        cfg, rec, NullProgress(), checkpoint_dir=f"{checkpoint_root}/{algorithm}-{arm}-{seed}", data=data
    )
    updates = {step: v for (step, name), (v, _, _) in rec.rows.items() if name == M.BUDGET_UPDATES}
    curve = [
        [step, rollouts, int(updates.get(step, 0)), round(value, 4)]
        for (step, name), (value, rollouts, _) in sorted(rec.rows.items())
        if name == M.EVAL_ACCURACY
    ]
    steps = [
        [
            step,
            rec.at(step, M.BUDGET_ROLLOUTS)[0],
            rec.at(step, M.BUDGET_PROBE_ROLLOUTS)[0],
            int(updates[step]),
        ]
        for step in range(1, cfg.train.steps + 1)
    ]
    cell = {
        "algorithm": algorithm,
        "arm": arm,
        "arm_overrides": arm_overrides,
        "seed": seed,
        "settings": settings,
        "curve": curve,
        "steps": steps,
        "rollouts_consumed": summary["rollouts_consumed"],
        "wall_seconds": round(time.time() - t, 1),
        "data_fingerprint": summary["data_fingerprint"],
    }
    index = {p.prompt: i for i, p in enumerate(data.train)}
    return cell, {
        "algorithm": algorithm,
        "arm": arm,
        "seed": seed,
        "settings": settings,
        "rows": prompt_rows(rec, index),
    }


def read_jsonl(path: Path, settings: str) -> list[dict]:
    if not path.exists():
        return []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return [r for r in map(json.loads, f) if r.get("settings") == settings]


def append(path: Path, row: dict) -> None:
    """One finished unit of work, appended at once (a gzip file takes one more member per append)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "at") as f:
        f.write(json.dumps(row) + "\n")


def go_no_go(prepasses: list[dict]) -> dict:
    from gvm_study_prepass import GO_THRESHOLD, pool_summary, predicted_gain

    cfg = load("raftpp", 0, [])
    a, per_seed = cfg.allocation, []
    for pp in sorted(prepasses, key=lambda r: r["seed"]):
        gain = predicted_gain(
            pp["p"],
            pp["g"],
            m=cfg.train.prompts_per_step,
            n=a.n_per_prompt,
            n_probe=a.n_probe,
            alpha=a.alpha,
            beta=a.beta,
            seed=pp["seed"],
        )
        per_seed.append({"seed": pp["seed"], "pool": pool_summary(pp["p"])} | gain)
    gains = [s["oracle_gain"] for s in per_seed if s["oracle_gain"] is not None]
    mean = round(sum(gains) / len(gains), 3) if gains else None
    return {
        "predicted_oracle_gain": mean,
        "threshold": GO_THRESHOLD,
        "go": bool(mean and mean >= GO_THRESHOLD),
        "per_seed": per_seed,
    }


def study_parser(description: str, plan: dict, arms: dict, seeds: list[int]) -> argparse.ArgumentParser:
    """The options every study script shares: which cells (seeds, algorithms, arms), how they run
    (processes, threads), overrides for every cell and the pre-pass size; the script adds its own."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--seeds", type=int, nargs="+", default=seeds)
    ap.add_argument("--algorithms", nargs="+", default=list(plan), choices=list(plan))
    ap.add_argument("--arms", nargs="+", default=list(arms), choices=list(arms), help="a subset of the arms")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="cells run in parallel (processes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override for every cell"
    )
    ap.add_argument("--prepass-samples", type=int, default=PREPASS_SAMPLES)
    return ap


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = study_parser(__doc__.splitlines()[0], PLAN, ARMS, SEEDS)
    ap.add_argument("--quick", action="store_true", help="a toy-sized run of the whole pipeline, into --out")
    ap.add_argument(
        "--out",
        default=None,
        help="results directory (default bench/results; --quick: /tmp/dibs-gvm-study-quick)",
    )
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the files")
    a = ap.parse_args(argv)
    if a.quick:
        a.set, a.seeds, a.prepass_samples = [*QUICK, *a.set], a.seeds[:2], min(a.prepass_samples, 4)
    a.out = Path(a.out or ("/tmp/dibs-gvm-study-quick" if a.quick else "bench/results"))
    return a


def main(argv: list[str] | None = None) -> int:
    from gvm_study_report import write_report

    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    files = {k: a.out / f"gvm_study_{k}" for k in ("prepass.jsonl", "cells.jsonl", "prompts.jsonl.gz")}
    settings = settings_key(a.set, a.prepass_samples)
    prepasses = [r for r in read_jsonl(files["prepass.jsonl"], settings) if r["seed"] in a.seeds]
    cells = [
        c
        for c in read_jsonl(files["cells.jsonl"], settings)
        if c["arm"] in ARMS and c["arm_overrides"] == ARMS[c["arm"]][1] and c["seed"] in a.seeds
    ]
    if a.report_only:
        write_report(a.out, prepasses, cells, files["prompts.jsonl.gz"], settings, a.set)
        return 0
    ctx = mp.get_context("spawn")
    with ctx.Pool(a.jobs, maxtasksperchild=1) as pool:
        todo = [
            (s, a.set, a.prepass_samples, a.threads, settings)
            for s in a.seeds
            if s not in {r["seed"] for r in prepasses}
        ]
        for row in pool.imap_unordered(prepass_seed, todo):
            append(files["prepass.jsonl"], row)
            prepasses.append(row)
            print(f"pre-pass seed {row['seed']}: {row['wall_seconds']} s", flush=True)
        verdict = go_no_go(prepasses)
        print(
            f"go/no-go: predicted variance gain of the oracle allocation over uniform "
            f"{verdict['predicted_oracle_gain']}x (threshold {verdict['threshold']}x): "
            f"{'GO' if verdict['go'] else 'NO GO - change the regime first'}",
            flush=True,
        )
        if not verdict["go"] and not a.quick:  # a toy warm start solves nothing: the quick run goes on
            return 1
        have = {(c["algorithm"], c["arm"], c["seed"]) for c in cells}
        todo = [
            (al, arm, s, a.set, a.threads, settings)
            for last in (False, True)
            for s in a.seeds
            for al in a.algorithms
            for arm in PLAN[al]
            if (arm in LAST) == last and arm in a.arms and (al, arm, s) not in have
        ]
        print(
            f"{len(todo)} cells to run, {len(cells)} done in {files['cells.jsonl']} (settings {settings})",
            flush=True,
        )
        for cell, prompts in pool.imap_unordered(run_cell, todo):
            append(
                files["prompts.jsonl.gz"], prompts
            )  # first: a cell is done once its line is in cells.jsonl
            append(files["cells.jsonl"], cell)
            cells.append(cell)
            print(
                f"{cell['algorithm']}-{cell['arm']} seed {cell['seed']}: "
                f"accuracy {cell['curve'][0][3]:.3f} -> {cell['curve'][-1][3]:.3f}, "
                f"{cell['rollouts_consumed']} rollouts, {cell['wall_seconds']} s",
                flush=True,
            )
    write_report(a.out, prepasses, cells, files["prompts.jsonl.gz"], settings, a.set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
