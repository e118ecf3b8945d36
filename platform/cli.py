"""`dibs` command line: validate, run, resume, runs, export, dashboard, db upgrade, eval, sweep(s); submit and
jobs (Ray Jobs, jobs_cli.py).

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

from dibs.dashboards.series import X_AXES
from dibs.platform.config import ConfigError, config_to_dict, load_config, missing_paths, validate_dict
from dibs.platform.jobs import JobsError
from dibs.platform.jobs_cli import add_parsers as add_job_parsers


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
    from dibs.platform.model import resolve_device
    from dibs.platform.store import open_store

    overrides = list(args.set) + ([f"name={args.name}"] if args.name else []) + \
        ([f"runtime.executor={args.executor}"] if args.executor else [])
    cfg = load_config(args.experiment, overrides)
    resolve_device(cfg.runtime.device)  # a machine that cannot run it fails here, before a run is recorded
    for key, path in missing_paths(cfg):  # before anything is recorded (conventions.md, recipes and paths)
        return _fail(f"{args.experiment}: {key}: no such file or directory: {path}")
    store = open_store(args.db)
    run_id = store.create_run(name=cfg.name, experiment=str(args.experiment), config=config_to_dict(cfg),
                              git_commit=git_commit(), versions=package_versions(), seed=cfg.seed)
    print(f"run {run_id}: {cfg.name} ({cfg.algorithm}, {cfg.allocation.allocator}) on {cfg.runtime.executor}; "
          f"store {store.url}")
    return _execute(cfg, store, run_id, resume_from=None)


def cmd_resume(args) -> int:
    """Continue a stopped, failed or killed run under its own id from its latest usable checkpoint
    (none: from the start). Metric rows are idempotent, so steps written twice are kept once."""
    from dibs.platform import checkpoint
    from dibs.platform.store import open_store

    store = open_store(args.db)
    run_id = store.resolve_run_id(args.run_id)
    run = store.get_run(run_id)
    if run["status"] == "finished":
        return _fail(f"run {run_id} already finished; nothing to resume")
    cfg = validate_dict(run["config"], f"run {run_id} (stored config)")
    # The newest checkpoint that passes checkpoint_check; each refused one is reported on stderr.
    picked = checkpoint.choose(store.checkpoints(run_id), run_dir=Path(cfg.runtime.output_dir) / run_id,
                               model=cfg.model)
    resume_from = picked[1] if picked else None
    where = f"step {picked[0]} ({resume_from})" if picked else "the start (no usable checkpoint)"
    verb = "starting" if run["status"] == "submitted" else "resuming"  # a Ray job's first attempt (issue 7)
    print(f"run {run_id}: {verb} {cfg.name} from {where}; store {store.url}")
    store.resume_run(run_id)
    return _execute(cfg, store, run_id, resume_from=resume_from)


def _execute(cfg, store, run_id: str, *, resume_from: str | None) -> int:
    """Run (or resume) the loop on the configured executor with a live display; close the run's row."""
    from dibs.platform.display import RunDisplay, print_summary
    from dibs.platform.runner import run_inline, run_payload, run_ray

    payload = run_payload(cfg, store.url, run_id, resume_from)
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
    """One run as before; several runs (named, or all of --experiment / --sweep) in one table; or their
    comparison (--table compare|targets) as the dashboard's compare page computes it."""
    from dibs.platform.store.export import prompt_stats_to_csv, run_to_csv, run_to_json, runs_to_csv, to_json
    from dibs.platform.store.reader import open_reader
    from dibs.platform.store.store import store_url

    with open_reader(store_url(args.db)) as reader:
        runs = [reader.get_run(ref) for ref in args.run_id]
        named = {run["id"] for run in runs}
        if args.experiment or args.sweep:  # oldest first, as they were made
            picked = reader.runs(experiment=args.experiment, sweep_id=args.sweep)[::-1]
            runs += [reader.get_run(r["id"]) for r in picked if r["id"] not in named]
    if not runs:
        return _fail("export: no runs (name run ids, or --experiment / --sweep that match some)")
    if args.table in ("compare", "targets"):
        text = _comparison(args, runs)
    elif len(runs) > 1:
        text = runs_to_csv(runs, args.table) if args.format == "csv" else to_json(_json_rows(runs, args.table))
    elif args.format == "csv":
        text = prompt_stats_to_csv(runs[0]) if args.table == "prompts" else run_to_csv(runs[0])
    else:  # the whole run, metric and per-prompt rows included, or its per-prompt rows alone
        text = to_json(runs[0]["prompt_stats"]) if args.table == "prompts" else run_to_json(runs[0])
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _json_rows(runs: list[dict], table: str) -> list:
    if table == "metrics":
        return runs
    return [{"run_id": run["id"], **row} for run in runs for row in run["prompt_stats"]]


def _comparison(args, runs: list[dict]) -> str:
    from dibs.dashboards.exports import compare_export, targets_export

    rows = {run["id"]: run["metrics"] for run in runs}
    if args.table == "compare":
        return compare_export(runs, rows, metric=args.metric, x=args.x, fmt=args.format)
    if args.target is None:
        raise ConfigError("export --table targets needs --target ACCURACY")
    return targets_export(runs, rows, metric=args.metric, target=args.target, fmt=args.format)


def cmd_dashboard(args) -> int:
    from dibs.dashboards.app import check_bindable, create_app, serve
    from dibs.platform.store.store import store_url

    if not 0 < args.port < 65536:
        return _fail(f"dashboard: --port must be in 1..65535, got {args.port}")
    url = store_url(args.db)
    app = create_app(url)  # StoreError (one line) for a store it cannot read
    try:
        check_bindable(args.host, args.port)
    except OSError as exc:
        return _fail(f"dashboard: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    print(f"dibs dashboard: {url} (read-only) at http://{args.host}:{args.port}/  (Ctrl-C stops it)", flush=True)
    serve(app, host=args.host, port=args.port)
    return 0


def cmd_db(args) -> int:
    from dibs.platform.store import open_store

    store = open_store(args.db, upgrade=True)  # `alembic upgrade head`; rows are kept
    print(f"{store.url}: schema at head")
    return 0


def cmd_sweep(args) -> int:
    """Start a sweep from its YAML, or `--resume` one whose driver stopped; ends with the best config."""
    from dibs.platform.store import open_store
    from dibs.platform.sweep_driver import resume_spec, run_sweep, start_spec

    if (args.sweep is None) == (args.resume is None):
        return _fail("dibs sweep: give a sweep YAML, or --resume SWEEP_ID (not both)")
    if args.resume:
        spec = resume_spec(args.resume, args.output_dir)
        print(f"sweep {spec['sweep_id']}: resuming {spec['name']} ({spec['sweep_path']}); store {spec['db_url']}")
    else:
        spec = start_spec(args.sweep, open_store(args.db).url, args.output_dir)
        print(f"sweep {spec['sweep_id']}: {spec['name']} over {', '.join(spec['sweep']['space'])}; "
              f"store {spec['db_url']}; resume with: dibs sweep --resume {spec['sweep_id']}")
    out = run_sweep(spec, resume=args.resume is not None)
    if out["best"] is None:
        return _fail(f"sweep {spec['sweep_id']}: no trial finished", 1)
    metric = spec["objectives"][0][0]
    print(f"sweep {spec['sweep_id']}: {out['finished']}/{out['trials']} trials finished; best {metric} = "
          f"{out['best'][metric]:.4f} with {json.dumps(out['params'])}")
    print(f"ready to run: dibs run {out['yaml']}")
    return 0


def cmd_sweeps(args) -> int:
    """Sweeps in the store with their trials: parameters, status, objective and runs' final metrics."""
    from dibs.platform.store import open_store

    store = open_store(args.db)
    sweeps = [s | {"trials": sweep_trials(store, s["id"])} for s in store.sweeps()]
    if args.json:
        print(json.dumps(sweeps, indent=2))
        return 0
    for s in sweeps:
        print(f"{s['id']}  {s['name']:<20} {s['objective']} ({s['mode']})  {len(s['trials'])} trials")
        for t in s["trials"]:
            objective = "-" if t["objective"] is None else f"{t['objective']:.4f}"
            print(f"  {t['id']}  {t['status']:<9} {objective:>8}  {json.dumps(t['params'])}")
    return 0


def sweep_trials(store, sweep_id: str) -> list[dict]:
    runs = [r for r in store.list_runs() if r.get("sweep_id") == sweep_id]
    out = []
    for t in store.trials(sweep_id):
        mine = [store.get_run(r["id"]) for r in runs if r.get("trial_id") == t["id"]]
        final = [{"run": r["id"], "seed": r["seed"], "status": r["status"],
                  "final": (r["summary"] or {}).get("final", {}),
                  "rollouts_consumed": (r["summary"] or {}).get("rollouts_consumed")} for r in mine]
        out.append(t | {"runs": final})
    return out


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
    e = sub.add_parser("export", help="print runs (config, metric and per-prompt rows) or a comparison of them")
    e.add_argument("run_id", nargs="*", help="run ids, unique id prefixes or unique names")
    e.add_argument("--experiment", help="also every run of this experiment (its YAML path as recorded)")
    e.add_argument("--sweep", help="also every run of this sweep id")
    e.add_argument("--format", choices=["json", "csv"], default="json")
    e.add_argument("--table", choices=["metrics", "prompts", "compare", "targets"], default="metrics",
                   help="metric rows, per-prompt rows, seed-pooled curves of --metric against --x, or "
                        "rollouts/steps to --target (json of one run without it: the whole run)")
    e.add_argument("--metric", default="eval/accuracy", help="compare/targets: the metric (default eval/accuracy)")
    e.add_argument("--x", choices=list(X_AXES), default="step", help="compare: the x-axis")
    e.add_argument("--target", type=float, help="targets: the accuracy to reach")
    e.add_argument("--db")
    e.set_defaults(func=cmd_export)
    sw = sub.add_parser("sweep", help="run a sweep (Ray Tune + Optuna) or resume one")
    sw.add_argument("sweep", nargs="?", help="sweep YAML (base, space, search, scheduler, repeats)")
    sw.add_argument("--resume", metavar="SWEEP_ID", help="continue a sweep whose driver stopped")
    sw.add_argument("--db", help="results store URL (default sqlite:///runs/dibs.db)")
    sw.add_argument("--output-dir", default="runs", help="sweeps live in OUTPUT_DIR/sweeps/<id> (default runs)")
    sw.set_defaults(func=cmd_sweep)
    sws = sub.add_parser("sweeps", help="list sweeps with their trials, parameters and metrics")
    sws.add_argument("--json", action="store_true")
    sws.add_argument("--db")
    sws.set_defaults(func=cmd_sweeps)
    dash = sub.add_parser("dashboard", help="serve the read-only comparison dashboard in the browser")
    dash.add_argument("--db", help="results store URL (default sqlite:///runs/dibs.db)")
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    dash.add_argument("--port", type=int, default=8050)
    dash.set_defaults(func=cmd_dashboard)
    d = sub.add_parser("db", help="results store schema")
    d.add_argument("action", choices=["upgrade"])
    d.add_argument("--db")
    d.set_defaults(func=cmd_db)
    from dibs.platform.eval_cli import add_eval_parser  # issue 8: `dibs eval CHECKPOINT --suite math5`

    add_eval_parser(sub)
    add_job_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dibs.platform.store import StoreError

    try:
        return args.func(args)
    except (ConfigError, StoreError, JobsError) as e:
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
