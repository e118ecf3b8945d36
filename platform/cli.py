"""`dibs` command line: validate, run, resume, runs, export, db upgrade, eval.

Every bad input ends in one line on stderr naming the file / key / URL and the problem, exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from dibs.platform.config import ConfigError, config_to_dict, load_config, missing_paths, validate_dict


def _fail(msg: str, code: int = 2) -> int:
    print(f"dibs: error: {msg}", file=sys.stderr)
    return code


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in ("dibs", "torch", "transformers", "ray", "deepspeed", "reasoning-gym", "sqlalchemy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def cmd_validate(args) -> int:
    cfg = load_config(args.experiment, args.set)
    print(f"{args.experiment}: ok ({cfg.algorithm}, {cfg.allocation.allocator}, {cfg.train.steps} steps)")
    return 0


def cmd_run(args) -> int:
    from dibs.platform.store import open_store

    overrides = list(args.set) + ([f"name={args.name}"] if args.name else []) + \
        ([f"runtime.executor={args.executor}"] if args.executor else [])
    cfg = load_config(args.experiment, overrides)
    for key, path in missing_paths(cfg):  # before anything is recorded (conventions.md, recipes and paths)
        return _fail(f"{args.experiment}: {key}: no such file or directory: {path}")
    store = open_store(args.db)
    run_id = store.create_run(name=cfg.name, experiment=str(args.experiment), config=config_to_dict(cfg),
                              git_commit=git_commit(), versions=package_versions(), seed=cfg.seed)
    print(f"run {run_id}: {cfg.name} ({cfg.algorithm}, {cfg.allocation.allocator}) on {cfg.runtime.executor}; "
          f"store {store.url}")
    return _execute(cfg, store, run_id, resume_from=None)


def cmd_resume(args) -> int:
    """Continue a stopped, failed or killed run under its own id from its latest complete checkpoint
    (none: from the start). Metric rows are idempotent, so steps written twice are kept once."""
    from dibs.platform import checkpoint
    from dibs.platform.store import open_store

    store = open_store(args.db)
    run_id = store.resolve_run_id(args.run_id)
    run = store.get_run(run_id)
    if run["status"] == "finished":
        return _fail(f"run {run_id} already finished; nothing to resume")
    cfg = validate_dict(run["config"], f"run {run_id} (stored config)")
    done = [(step, path) for step, path in store.checkpoints(run_id) if checkpoint.is_complete(path)]
    resume_from = done[-1][1] if done else None
    where = f"step {done[-1][0]} ({resume_from})" if done else "the start (no complete checkpoint)"
    print(f"run {run_id}: resuming {cfg.name} from {where}; store {store.url}")
    store.resume_run(run_id)
    return _execute(cfg, store, run_id, resume_from=resume_from)


def _execute(cfg, store, run_id: str, *, resume_from: str | None) -> int:
    """Run (or resume) the loop on the configured executor with a live display; close the run's row."""
    from dibs.platform.display import RunDisplay, print_summary
    from dibs.platform.runner import run_inline, run_ray

    out_dir = Path(cfg.runtime.output_dir) / run_id
    payload = {"config": config_to_dict(cfg), "cwd": str(Path.cwd()), "db_url": store.url, "run_id": run_id,
               "checkpoint_dir": str((out_dir / "checkpoints").resolve()), "resume_from": resume_from}
    execute = run_ray if cfg.runtime.executor == "ray" else run_inline
    try:
        with RunDisplay(cfg) as display:
            summary = execute(cfg, payload, display.on_event)
    except KeyboardInterrupt:
        store.finish_run(run_id, "stopped")
        return _fail(f"run {run_id} interrupted; its rows so far are in the store (dibs resume {run_id})", 130)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id, "finished", summary)
    print_summary(run_id, cfg, summary)
    return 0


def cmd_runs(args) -> int:
    from dibs.platform.store import open_store

    runs = open_store(args.db).list_runs()
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    for r in runs:
        print(f"{r['id']}  {r['status']:<9} {r['name']:<24} {r['started'] or '-'}  {r['finished'] or '-'}")
    return 0


def cmd_export(args) -> int:
    from dibs.platform.store import open_store
    from dibs.platform.store.export import prompt_stats_to_csv, run_to_csv, run_to_json

    run = open_store(args.db).get_run(args.run_id)
    if args.format == "csv":
        sys.stdout.write(prompt_stats_to_csv(run) if args.table == "prompts" else run_to_csv(run))
    elif args.table == "prompts":
        sys.stdout.write(json.dumps(run["prompt_stats"], indent=2, sort_keys=True) + "\n")
    else:  # the whole run, metric and per-prompt rows included
        sys.stdout.write(run_to_json(run) + "\n")
    return 0


def cmd_db(args) -> int:
    from dibs.platform.store import open_store

    store = open_store(args.db, upgrade=True)  # `alembic upgrade head`; rows are kept
    print(f"{store.url}: schema at head")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dibs", description="Per-prompt rollout budgets for RAFT++ and GRPO.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check an experiment YAML")
    v.add_argument("experiment")
    v.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    v.set_defaults(func=cmd_validate)
    r = sub.add_parser("run", help="run an experiment")
    r.add_argument("experiment")
    r.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    r.add_argument("--name")
    r.add_argument("--db", help="results store URL (default sqlite:///runs/dibs.db)")
    r.add_argument("--executor", choices=["ray", "inline"])
    r.set_defaults(func=cmd_run)
    rs = sub.add_parser("resume", help="continue a stopped or failed run from its latest checkpoint")
    rs.add_argument("run_id", help="run id, unique id prefix or unique run name")
    rs.add_argument("--db", help="results store URL (default sqlite:///runs/dibs.db)")
    rs.set_defaults(func=cmd_resume)
    ls = sub.add_parser("runs", help="list runs")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--db")
    ls.set_defaults(func=cmd_runs)
    e = sub.add_parser("export", help="print one run: config, every metric row and per-prompt row")
    e.add_argument("run_id")
    e.add_argument("--format", choices=["json", "csv"], default="json")
    e.add_argument("--table", choices=["metrics", "prompts"], default="metrics",
                   help="rows to print: metric rows or per-prompt rows (json without it: the whole run)")
    e.add_argument("--db")
    e.set_defaults(func=cmd_export)
    d = sub.add_parser("db", help="results store schema")
    d.add_argument("action", choices=["upgrade"])
    d.add_argument("--db")
    d.set_defaults(func=cmd_db)
    from dibs.platform.eval_cli import add_eval_parser  # issue 8: `dibs eval CHECKPOINT --suite math5`

    add_eval_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dibs.platform.store import StoreError

    try:
        return args.func(args)
    except (ConfigError, StoreError) as e:
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
