"""What the distributed runtime costs: the demo experiment's RL phase through one process vs
through Ray Train (learner ranks with rollout actors), same settings, and the weight-sync time per step.

    python bench/distributed_overhead.py            # make bench-distributed

Each cell is one `dibs run` of experiments/demo.yaml (RL steps and eval cadence shortened by STEPS/EVERY,
the warm start cached and shared, so only the RL phase is compared). Resumable: finished cells are kept in
bench/results/distributed_overhead.jsonl and skipped; the table goes to distributed_overhead.md.
The RL wall is the run's clock from its step-0 evaluation to its last row; per-step means come from
`time/step_s` and `time/sync_s` (learner -> rollout engine weight transfer).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS, EVERY = 60, 30
CELLS = {  # name -> overrides on top of the demo
    "one process (inline)": ["runtime.executor=inline"],
    "one process (Ray task)": ["runtime.executor=ray"],
    "Ray Train, 1 DeepSpeed learner + 1 rollout actor": [
        "learner.backend=deepspeed",
        "learner.num_workers=1",
    ],
    "Ray Train, 2 DeepSpeed ZeRO-2 learners + 2 rollout actors": [
        "learner.backend=deepspeed",
        "learner.num_workers=2",
        "learner.zero_stage=2",
        "runtime.num_threads=1",
    ],
}


def run_cell(name: str, overrides: list[str], work: Path) -> dict:
    from dibs.platform.core import metrics as M
    from dibs.platform.store import open_store

    url = f"sqlite:///{work}/bench.db"
    args = [
        "run",
        "experiments/demo.yaml",
        "--db",
        url,
        "--name",
        name,
        "--set",
        f"train.steps={STEPS}",
        "--set",
        f"eval.every={EVERY}",
        "--set",
        "warm_start.reuse=true",
        "--set",
        f"runtime.output_dir={work}/runs",
    ]
    for item in overrides:
        args += ["--set", item]
    t = time.time()
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    subprocess.run(
        [sys.executable, "-m", "dibs.platform.cli", *args], check=True, env=env, capture_output=True
    )
    total = time.time() - t
    store = open_store(url)
    run = [r for r in store.list_runs() if r["name"] == name][-1]
    rows = store.get_run(run["id"])["metrics"]

    def series(metric: str) -> list[float]:
        return [m["value"] for m in rows if m["name"] == metric]

    walls = {m["step"]: m["wall_seconds"] for m in rows if m["name"] == M.EVAL_ACCURACY}
    return {
        "cell": name,
        "overrides": overrides,
        "steps": STEPS,
        "total_wall_s": round(total, 1),
        "rl_wall_s": round(walls[STEPS] - walls[0], 1),
        "step_s_mean": round(sum(series(M.TIME_STEP)) / STEPS, 3),
        "sync_s_mean": round(sum(series(M.TIME_SYNC)) / STEPS, 4),
        "final_accuracy": series(M.EVAL_ACCURACY)[-1],
    }


def main() -> int:
    out = Path("bench/results/distributed_overhead.jsonl")
    done = (
        {json.loads(line)["cell"]: json.loads(line) for line in out.read_text().splitlines()}
        if out.exists()
        else {}
    )
    with tempfile.TemporaryDirectory(prefix="dibs-dist-bench-") as work:
        for name, overrides in CELLS.items():
            if name in done:
                continue
            done[name] = run_cell(name, overrides, Path(work))
            with out.open("a") as f:
                f.write(json.dumps(done[name]) + "\n")
            print(json.dumps(done[name]), flush=True)
    base = done.get("one process (inline)")
    lines = [
        (
            "| path | RL wall (s) | vs one process | mean step (s) | mean weight sync (s) "
            "| total incl. start-up (s) |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in CELLS:
        if name in done:
            c = done[name]
            rel = f"{100 * (c['rl_wall_s'] / base['rl_wall_s'] - 1):+.1f}%" if base else "n/a"
            lines.append(
                f"| {name} | {c['rl_wall_s']} | {rel} | {c['step_s_mean']} | {c['sync_s_mean']} "
                f"| {c['total_wall_s']} |"
            )
    Path("bench/results/distributed_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
