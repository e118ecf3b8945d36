"""The math setting's GPU check: the math5 evaluation and a few math training steps on CUDA,
with throughput and peak memory. Run through bench/gpu_math_check.sh on the device machine (it sets up
the packages), or directly where dibs is installed: `python bench/gpu_math_check.py --out /tmp/check`.

Both phases run in this process through `dibs.platform.cli.main.main`, so `torch.cuda.max_memory_allocated`
covers them. The model is the demo's Qwen2 architecture at a few tens of millions of parameters with the
local character tokenizer: it cannot write LaTeX, so accuracy is ~0 and only speed and memory mean
anything. Responses run to `--max-new-tokens` (the model rarely stops), which makes tokens/s a fair
decode-throughput figure for that batch shape.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import torch

from dibs.platform.cli.main import main as dibs
from dibs.platform.core import metrics as M
from dibs.platform.core.config import ModelConfig
from dibs.platform.learn.model import build_base_model, load, num_parameters
from dibs.platform.store import open_store
from dibs.platform.tasks.math_task import MathTask

REPO = Path(__file__).resolve().parents[1]


def call(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = dibs(args)
    if code != 0:
        raise SystemExit(f"dibs {' '.join(args)} exited {code}")
    return out.getvalue()


def peak_gib() -> float:
    """Peak CUDA memory since the last reset (nan without CUDA)."""
    if not torch.cuda.is_available():
        return float("nan")
    return torch.cuda.max_memory_allocated() / 2**30


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def eval_phase(model: Path, db: str, a: argparse.Namespace) -> dict:
    reset_peak()
    t0 = time.perf_counter()
    res = json.loads(
        call(
            [
                "eval",
                str(model),
                "--engine",
                "hf",
                "--suite",
                "math5",
                "--limit",
                str(a.limit),
                "--k",
                str(a.k),
                "--max-new-tokens",
                str(a.max_new_tokens),
                "--device",
                a.device,
                "--json",
                "--db",
                db,
            ]
        )
    )
    wall = time.perf_counter() - t0
    gen_s = sum(s["seconds"] for s in res["sets"])
    tokens = sum(s["tokens"] for s in res["sets"])
    return {
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / gen_s,
        "peak_gib": peak_gib(),
        "avg_mean_at_k": res["avg"]["mean_at_k"],
        "scoring": res["scoring"],
        "per_set": {
            s["name"]: {
                "problems": s["problems"],
                "seconds": s["seconds"],
                "tokens_per_s": s["tokens"] / s["seconds"],
            }
            for s in res["sets"]
        },
    }


def train_phase(out: Path, db: str, a: argparse.Namespace) -> dict:
    # runtime.device places the policy, the learner and the transformers engine (older dibs: CPU only).
    device = "cuda" if torch.cuda.is_available() else "cpu"
    extra = ["--set", f"runtime.device={device}"]
    reset_peak()
    t0 = time.perf_counter()
    call(
        [
            "run",
            str(REPO / "experiments" / "math-smoke.yaml"),
            "--executor",
            "inline",
            "--db",
            db,
            "--set",
            f"runtime.output_dir={out}/runs",
            "--set",
            f"model.cache_dir={out}/models",
            "--set",
            f"train.steps={a.steps}",
            "--set",
            "eval.limit=5",
            "--set",
            f"eval.every={a.steps}",
            "--set",
            "train.prompts_per_step=8",
            "--set",
            "allocation.n_per_prompt=8",
            "--set",
            "rollout.max_new_tokens=128",
            "--set",
            f"task.train_file={REPO / 'tests' / 'fixtures' / 'math_train.jsonl'}",
            *extra,
        ]
    )
    wall = time.perf_counter() - t0
    store = open_store(db)
    run_id = next(r["id"] for r in store.list_runs() if r["name"] == "math-smoke")
    series = {
        n: dict(store.metric_series(run_id, n))
        for n in (M.TIME_STEP, M.TIME_GENERATE, M.TIME_UPDATE, M.BUDGET_TOKENS)
    }
    steps = sorted(series[M.TIME_STEP])
    step_s = sum(series[M.TIME_STEP][s] for s in steps)
    tokens = series[M.BUDGET_TOKENS][steps[-1]]
    return {
        "device": device,
        "steps": len(steps),
        "wall_s": wall,
        "step_s_mean": step_s / len(steps),
        "generate_s_mean": sum(series[M.TIME_GENERATE].values()) / len(steps),
        "update_s_mean": sum(series[M.TIME_UPDATE].values()) / len(steps),
        "rollout_tokens_per_s": tokens / step_s,
        "peak_gib": peak_gib(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/gpu-math-check")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="of the evaluation"
    )
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{out}/gpu-check.db"
    cfg = ModelConfig(
        hidden_size=512,
        num_layers=8,
        num_heads=8,
        num_kv_heads=4,
        intermediate_size=1536,
        max_position=2048,
        cache_dir=str(out / "models"),
    )
    model = build_base_model(cfg, seed=0, alphabet=MathTask.alphabet)
    params = num_parameters(load(model)[0])
    report = {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "torch": torch.__version__,
        "model_parameters": params,
        "eval": eval_phase(model, db, a),
        "train": train_phase(out, db, a),
    }
    (out / "gpu_math_check.json").write_text(json.dumps(report, indent=2))
    e, t = report["eval"], report["train"]
    print(json.dumps(report, indent=2))
    print(f"\n{report['gpu']}, torch {report['torch']}, model {params / 1e6:.1f} M parameters")
    print(
        f"eval  math5 --limit {a.limit} --k {a.k}, {a.max_new_tokens} new tokens: {e['tokens']} tokens in "
        f"{e['wall_s']:.1f} s wall, {e['tokens_per_s']:.0f} tokens/s generating, peak {e['peak_gib']:.2f} GiB"
    )
    print(
        f"train {t['steps']} steps on {t['device']}: {t['step_s_mean']:.2f} s/step (generate "
        f"{t['generate_s_mean']:.2f}, update {t['update_s_mean']:.2f}), "
        f"{t['rollout_tokens_per_s']:.0f} rollout tokens/s, peak {t['peak_gib']:.2f} GiB"
    )


if __name__ == "__main__":
    main()
