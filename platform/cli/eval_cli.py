"""`dibs eval CHECKPOINT --suite math5`: mean@k and pass@k of a checkpoint on the paper's five sets.

The checkpoint is a run's `<output_dir>/<run id>/checkpoints/step-N` (checkpoint.py): its results are
recorded as metric rows of that run at step N. Any other Hugging Face model directory (a base model,
`/models/Qwen2.5-Math-1.5B`) gets an evaluation-only run of its own, named `eval-<dir name>`, at step 0.

Metric rows are idempotent on (run, name, step): evaluating the same step again leaves the rows already
there as they are (the store keeps the first evaluation of a step) and says how many it kept. To compare
another k or T, evaluate into another store (`--db`) or look at the printed / `--json` output, which
always holds this evaluation's numbers.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from dibs.platform.cli.arg_types import positive_float
from dibs.platform.cli.arg_types import seed as seed_arg
from dibs.platform.core.config import ConfigError
from dibs.platform.store.sql import display_url

_STEP_DIR = re.compile(r"step-(\d+)")


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """Register `dibs eval` on the top-level parser's subcommands."""
    from dibs.platform.tasks.math_data import SUITES, TEMPLATES

    ev = sub.add_parser(
        "eval", help="evaluate a checkpoint on a benchmark suite (math5: the paper's five sets)"
    )
    ev.add_argument(
        "checkpoint", help="a run's checkpoints/step-N directory, or any Hugging Face model directory"
    )
    ev.add_argument("--suite", choices=sorted(SUITES), default="math5")
    ev.add_argument(
        "--k", type=_positive_int, default=8, help="samples per problem (default 8, as the paper)"
    )
    ev.add_argument("--temperature", type=positive_float, default=1.0)
    ev.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=3072,
        help="response length limit (default 3072, the paper's)",
    )
    ev.add_argument(
        "--limit", type=_positive_int, help="only the first N problems of each set (quick checks)"
    )
    ev.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    ev.add_argument("--device", help="hf engine: torch device (default cuda when available, else cpu)")
    ev.add_argument("--template", choices=sorted(TEMPLATES), default="qwen25-math-cot")
    ev.add_argument(
        "--data-dir",
        help="folder of the suite's JSONL files (default $DIBS_MATH_EVAL_DIR, else "
        "the sets shipped in the package, platform/tasks/data/math_eval)",
    )
    ev.add_argument("--batch-problems", type=_positive_int, default=64, help="problems per generate call")
    ev.add_argument("--seed", type=seed_arg, default=0, help="0 .. 2^31-1 (default 0)")
    ev.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ev.add_argument("--db", help="results store URL (default sqlite:///runs/dibs.db)")
    ev.set_defaults(func=cmd_eval)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_eval(args: argparse.Namespace) -> int:
    import transformers

    from dibs.platform.store import open_store
    from dibs.platform.tasks.math_data import default_data_dir, load_suite
    from dibs.platform.tasks.math_eval import evaluate_suite, format_table, suite_metrics

    transformers.utils.logging.disable_progress_bar()
    path = Path(args.checkpoint)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a Hugging Face model directory (no config.json)")
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir: no such directory: {data_dir}")
    sets = load_suite(args.suite, data_dir, template=args.template, limit=args.limit)
    store = open_store(args.db)
    run_id, step = checkpoint_target(store, path, seed=args.seed)
    engine = build_engine(args.engine, path, args.device, max_len=args.max_new_tokens, seed=args.seed)
    if not args.json:
        print(
            f"dibs eval: {path} -> run {run_id}, step {step}; {args.suite} with {args.engine}; "
            f"store {display_url(store.url)}",
            flush=True,
        )
    on_set = (
        None
        if args.json
        else (lambda s: print(f"  {s.name}: {s.problems} problems in {s.seconds:.1f} s", flush=True))
    )
    result = evaluate_suite(
        engine,
        args.suite,
        sets,
        k=args.k,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        batch_problems=args.batch_problems,
        on_set=on_set,
    )
    values = suite_metrics(result)
    new = record_evaluation(store, run_id, step, values)
    kept = len(values) - new
    if args.json:
        print(
            json.dumps(
                result.to_json() | {"run_id": run_id, "step": step, "rows_new": new, "rows_kept": kept},
                indent=2,
            )
        )
    else:
        print(format_table(result))
        note = f"; {kept} rows were already there and were left as they are" if kept else ""
        print(f"recorded {new} metric rows for run {run_id} at step {step}{note}")
    return 0


def checkpoint_target(store, path: Path, *, seed: int) -> tuple[str, int]:
    """(run id, step) the checkpoint's results belong to: `<run id>/checkpoints/step-N` of a run in the
    store, else a new evaluation-only run at step 0 (a base model, or a copied checkpoint)."""
    from dibs.platform.core.provenance import git_commit, package_versions
    from dibs.platform.store import StoreError

    resolved = path.resolve()
    m = _STEP_DIR.fullmatch(resolved.name)
    if m and resolved.parent.name == "checkpoints":
        run_id = resolved.parent.parent.name
        try:
            return store.resolve_run_id(run_id), int(m.group(1))
        except StoreError:
            raise ConfigError(
                f"{path}: a checkpoint of run {run_id}, which is not in store "
                f"{display_url(store.url)} "
                "(pass the run's --db)"
            ) from None
    run_id = store.create_run(
        name=f"eval-{resolved.name}",
        experiment=str(resolved),
        config={"model": {"path": str(resolved)}},
        git_commit=git_commit(),
        versions=package_versions(),
        seed=seed,
    )
    store.finish_run(run_id, "finished")
    return run_id, 0


def record_evaluation(store, run_id: str, step: int, values: dict[str, float]) -> int:
    """The one place evaluation results enter the store (today: metric rows of the run at `step`, with
    the budget the run had spent by then); returns how many rows were new."""
    from dibs.platform.store import MetricRow

    spent = [m for m in store.get_run(run_id)["metrics"] if m["step"] == step]
    rollouts, tokens, wall = (
        (spent[0]["rollouts_consumed"], spent[0]["tokens_generated"], spent[0]["wall_seconds"])
        if spent
        else (0, 0, 0.0)
    )
    rows = [
        MetricRow(
            step=step,
            name=k,
            value=float(v),
            rollouts_consumed=rollouts,
            tokens_generated=tokens,
            wall_seconds=wall,
        )
        for k, v in values.items()
    ]
    return store.log_metrics(run_id, rows)


def build_engine(kind: str, path: Path, device: str | None, *, max_len: int, seed: int):
    """The rollout engine for an evaluation: transformers on `device`, or vLLM (the gpu extra)."""
    if kind == "vllm":
        from dibs.platform.rollout.vllm_engine import VLLMEngine

        try:
            return VLLMEngine(
                path, dtype="auto", gpu_memory_utilization=0.85, max_model_len=max_len + 1024, seed=seed
            )
        except RuntimeError as e:
            raise ConfigError(f"--engine vllm: {e}") from None
    import torch

    from dibs.platform.learn.model import load
    from dibs.platform.rollout.hf_engine import HFEngine

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load(path)
    return HFEngine(model.to(device), tokenizer, chunk_size=1024)
