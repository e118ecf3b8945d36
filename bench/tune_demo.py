"""Tune the embedded default: run named override sets of an experiment side by side, resumably.

Each cell (override set) runs the real loop inline in its own process (`torch` threads from the
config) and appends one JSON line with its eval trajectory to the results file as soon as it ends;
a rerun skips finished cells. Used to choose experiments/demo.yaml (see docs/results.md, "What bought it").

    python bench/tune_demo.py experiments/demo.yaml bench/demo_grid.yaml bench/results/demo_tuning.jsonl -j 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import pickle
import sys
import time
from pathlib import Path

import yaml

STREAMED = ("eval/accuracy", "eval/mean_at_k", "rollout/reward_mean")


def streaming_recorder(cell: str, stream: Path):
    """The loop's MemoryRecorder that also appends eval/reward rows to `stream` as they happen, so a killed
    cell still leaves its curve."""
    from dibs.platform.runtime.recording import MemoryRecorder

    class Streaming(MemoryRecorder):
        def record(self, step, values, *, rollouts_consumed, tokens_generated, wall_seconds):
            super().record(
                step,
                values,
                rollouts_consumed=rollouts_consumed,
                tokens_generated=tokens_generated,
                wall_seconds=wall_seconds,
            )
            lines = [
                json.dumps(
                    {
                        "step": step,
                        "name": k,
                        "value": float(v),
                        "rollouts_consumed": rollouts_consumed,
                        "wall_seconds": round(wall_seconds, 2),
                        "cell": cell,
                    }
                )
                for k, v in values.items()
                if k in STREAMED
            ]
            if lines:
                with stream.open("a") as f:
                    f.write("".join(line + "\n" for line in lines))

    return Streaming()


def run_cell(args: tuple) -> dict:
    base, name, overrides, data_file, stream = args

    from dibs.platform.core.config import load_config
    from dibs.platform.core.host import configure_process
    from dibs.platform.runtime.loop import train
    from dibs.platform.runtime.recording import NullProgress

    cfg = load_config(base, [f"{k}={v}" for k, v in overrides.items()] + ["runtime.checkpoint_every=0"])
    configure_process(cfg.runtime.num_threads, cfg.runtime.keep_freed_memory)
    data = pickle.loads(Path(data_file).read_bytes()) if data_file else None
    rec = streaming_recorder(name, Path(stream))
    t = time.time()
    summary = train(cfg, rec, NullProgress(), checkpoint_dir=f"/tmp/tune-ckpt/{name}", data=data)
    evals = {}
    for (step, metric), (value, _, _) in sorted(rec.rows.items()):
        if metric.startswith("eval/") or metric == "time/step_s":
            evals.setdefault(metric, []).append((step, round(value, 4)))
    step_s = [v for _, v in evals.pop("time/step_s", [])]
    return {
        "cell": name,
        "overrides": overrides,
        "wall_seconds": round(time.time() - t, 1),
        "mean_step_s": round(sum(step_s) / max(len(step_s), 1), 3),
        "accuracy": evals.get("eval/accuracy"),
        "mean_at_k": evals.get("eval/mean_at_k"),
        "format_rate": evals.get("eval/format_rate"),
        "by_terms": {k: v for k, v in evals.items() if k.startswith("eval/accuracy_terms_")},
        "gain_points": round(
            100 * (summary["final"]["eval/accuracy"] - summary["step0"]["eval/accuracy"]), 1
        ),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("grid", help="YAML mapping cell name -> {dotted.key: value}")
    ap.add_argument("out")
    ap.add_argument("-j", "--jobs", type=int, default=1)
    ap.add_argument("--data", help="pickled TaskData to use instead of building the task")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--set", action="append", default=[], help="override applied to every cell")
    a = ap.parse_args()
    grid = yaml.safe_load(Path(a.grid).read_text())
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["cell"] for line in out.read_text().splitlines()} if out.exists() else set()
    stream = str(out.with_suffix(".evals.jsonl"))
    common = dict(item.split("=", 1) for item in a.set)
    todo = [
        (a.base, n, common | (o or {}), a.data, stream)
        for n, o in grid.items()
        if n not in done and (not a.only or n in a.only)
    ]
    print(f"{len(todo)} cells to run ({len(done)} already in {out})", flush=True)
    with mp.get_context("spawn").Pool(a.jobs, maxtasksperchild=1) as pool:
        for res in pool.imap_unordered(run_cell, todo):
            with out.open("a") as f:
                f.write(json.dumps(res) + "\n")
            print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
