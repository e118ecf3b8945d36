"""`dibs` command line: validate, run, resume, runs, export, dashboard, db upgrade, eval, sweep(s); submit and
jobs (Ray Jobs, jobs_cli.py).

Every bad input ends in one line on stderr naming the file / key / URL and the problem, exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from dibs.dashboards.series import X_AXES
from dibs.platform.cli.arg_types import finite_float
from dibs.platform.core.config import ConfigError, config_to_dict, load_config, missing_paths, validate_dict
from dibs.platform.core.provenance import git_commit, package_versions
from dibs.platform.jobs.jobs import JobsError
from dibs.platform.jobs.jobs_cli import add_parsers as add_job_parsers
from dibs.platform.store.sql import display_url
from dibs.platform.tasks.registry import check_task_kind, make_task

# The longest error line: enough for a file path, a dotted key and the problem; never a whole input.
ERROR_CAP = 300


def _fail(msg: str, code: int = 2) -> int:
    line = " ".join(f"dibs: error: {msg}".split())  # one line, whatever the message holds
    if len(line) > ERROR_CAP:
        line = line[: ERROR_CAP - 3] + "..."
    print(line, file=sys.stderr)
    return code


class UsageError(Exception):
    """A bad command line, raised by the parser instead of argparse's usage text and exit."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one `dibs: error:` line through `_fail` (subcommands inherit it)."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


def cmd_validate(args) -> int:
    cfg = load_config(args.experiment, args.set)
    check_task_kind(cfg.task, str(args.experiment))
    print(f"{args.experiment}: ok ({cfg.algorithm}, {cfg.allocation.allocator}, {cfg.train.steps} steps)")
    if args.print:  # the whole config a run records: `base:` files merged, defaults filled in
        print(json.dumps(config_to_dict(cfg), indent=2))
    return 0


def cmd_run(args) -> int:
    from dibs.platform.learn.model import resolve_device
    from dibs.platform.store import open_store
    from dibs.platform.store.lease import new_owner

    overrides = (
        list(args.set)
        + ([f"name={json.dumps(args.name)}"] if args.name else [])
        + ([f"runtime.executor={args.executor}"] if args.executor else [])
    )
    cfg = load_config(args.experiment, overrides)
    check_task_kind(cfg.task, str(args.experiment))
    resolve_device(cfg.runtime.device)  # a machine that cannot run it fails here, before a run is recorded
    for key, path in missing_paths(
        cfg
    ):  # before anything is recorded (docs/conventions.md, Recipes and paths)
        return _fail(f"{args.experiment}: {key}: no such file or directory: {path}")
    store = open_store(args.db)
    owner = new_owner()  # this process holds the run's lease from its first row on
    run_id = store.create_run(
        name=cfg.name,
        experiment=str(args.experiment),
        config=config_to_dict(cfg),
        git_commit=git_commit(),
        versions=package_versions(),
        seed=cfg.seed,
        owner=owner,
    )
    print(
        f"run {run_id}: {cfg.name} ({cfg.algorithm}, {cfg.allocation.allocator}) on {cfg.runtime.executor}; "
        f"store {display_url(store.url)}"
    )
    if cfg.allocation.allocator == "gvm_oracle":  # else its rollouts_consumed reads as budget-honest
        print(
            "dibs: warning: gvm_oracle's probe is not charged to the rollout budget (alloc/oracle_rollouts "
            "has it): an upper bound, for studies only",
            file=sys.stderr,
            flush=True,
        )
    return _execute(cfg, store, run_id, owner, resume_from=None)


def cmd_resume(args) -> int:
    """Continue a stopped, failed or killed run under its own id from its latest usable checkpoint
    (none: from the start). Metric rows are idempotent, so steps written twice are kept once.

    A run another process holds (its lease is live) is refused; `--force` takes over one whose lease has
    expired (its driver died without closing it), never a live one."""
    from dibs.platform.learn import checkpoint_check
    from dibs.platform.store import open_store
    from dibs.platform.store.lease import new_owner

    store = open_store(args.db, create=False)  # an unknown --db is an error, never a new store
    run_id = store.resolve_run_id(args.run_id)
    run = store.get_run(run_id)
    if run["status"] == "finished":
        return _fail(f"run {run_id} already finished; nothing to resume")
    cfg = validate_dict(run["config"], f"run {run_id} (stored config)")
    # The newest checkpoint that passes checkpoint_check; each refused one is reported on stderr. Only
    # reads: the lease is taken after it, so nothing can leave the run held if it fails.
    picked = checkpoint_check.choose(
        store.checkpoints(run_id),
        run_dir=Path(cfg.runtime.output_dir) / run_id,
        model=cfg.model,
        alphabet=make_task(cfg.task).alphabet,
    )
    resume_from = picked[1] if picked else None
    where = f"step {picked[0]} ({resume_from})" if picked else "the start (no usable checkpoint)"
    verb = "starting" if run["status"] == "submitted" else "resuming"  # a Ray job's first attempt
    owner = new_owner()
    _take_lease(store, run_id, owner, force=args.force, wait=args.wait_lease)
    print(f"run {run_id}: {verb} {cfg.name} from {where}; store {display_url(store.url)}")
    return _execute(cfg, store, run_id, owner, resume_from=resume_from)


def _take_lease(store, run_id: str, owner: str, *, force: bool, wait: float) -> None:
    """Take the run's lease (store.take_lease: atomic, nothing written when refused). ``wait`` > 0: while
    another owner's lease is live, wait up to that long for it to run out (a Ray Jobs retry, whose previous
    attempt Ray reports dead, may start before that attempt's last lease has expired)."""
    from dibs.platform.store.lease import LeaseHeld

    deadline = time.monotonic() + wait
    while True:
        try:
            return store.take_lease(run_id, owner, force=force)
        except LeaseHeld as held:
            left = deadline - time.monotonic()
            expires_in = held.until.timestamp() - time.time() if held.until else 0.0
            if left <= 0 or expires_in <= 0:  # out of time, or expired and not forced: waiting cannot help
                raise
            print(
                f"run {run_id}: held by another owner for {expires_in:.0f} s more; waiting (--wait-lease)",
                flush=True,
            )
            time.sleep(min(left, expires_in + 0.5))


def _execute(cfg, store, run_id: str, owner: str, *, resume_from: str | None) -> int:
    """Run (or resume) the loop on the configured executor with a live display while renewing ``owner``'s
    lease; close the run's row and release the lease. SIGINT and SIGTERM stop it as Ctrl-C does."""
    from dibs.platform.cli.display import RunDisplay, print_summary
    from dibs.platform.runtime.heartbeat import Heartbeat, stop_signals
    from dibs.platform.runtime.runner import run_inline, run_payload, run_ray

    payload = run_payload(cfg, store.url, run_id, resume_from)
    execute = run_ray if cfg.runtime.executor == "ray" else run_inline
    beat = Heartbeat(store, run_id, owner)
    with stop_signals() as received:
        try:
            with beat, RunDisplay(cfg) as display:
                summary = execute(cfg, payload, display.on_event)
        except KeyboardInterrupt:  # heartbeat.Stopped (SIGINT / SIGTERM), or what ray.get made of it
            signum = received[0] if received else signal.SIGINT
            code = 128 + signum
            if beat.lost or not store.release_run(run_id, owner, "stopped"):
                return _fail(f"run {run_id}: another process took over its lease; this one stopped", code)
            return _fail(
                f"run {run_id} stopped ({signal.Signals(signum).name}); its rows and checkpoints so far "
                f"are in the store (dibs resume {run_id})",
                code,
            )
        except BaseException:
            store.release_run(run_id, owner, "failed")
            raise
    store.release_run(run_id, owner, "finished", summary)
    print_summary(run_id, cfg, summary)
    return 0


def cmd_runs(args) -> int:
    from dibs.platform.store.reader import open_reader
    from dibs.platform.store.store import store_url

    with open_reader(store_url(args.db)) as reader:  # read-only: never creates, migrates or writes
        runs = [{k: v for k, v in r.items() if k not in ("config", "summary")} for r in reader.runs()]
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
        text = (
            runs_to_csv(runs, args.table) if args.format == "csv" else to_json(_json_rows(runs, args.table))
        )
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
    from dibs.dashboards.hosts import exposure_warning
    from dibs.platform.store.store import store_url

    if not 0 < args.port < 65536:
        return _fail(f"dashboard: --port must be in 1..65535, got {args.port}")
    url = store_url(args.db)
    # StoreError (one line) for a store it cannot read; requests must then name host:port (hosts.py)
    app = create_app(url, host=args.host, port=args.port, allowed_hosts=args.allow_host)
    try:
        check_bindable(args.host, args.port)
    except OSError as exc:
        return _fail(f"dashboard: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    warning = exposure_warning(args.host, args.port)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(
        f"dibs dashboard: {display_url(url)} (read-only) at http://{args.host}:{args.port}/"
        "  (Ctrl-C stops it)",
        flush=True,
    )
    serve(app, host=args.host, port=args.port)
    return 0


def cmd_db(args) -> int:
    from dibs.platform.store import open_store

    store = open_store(args.db, upgrade=True)  # `alembic upgrade head`; rows are kept
    print(f"{display_url(store.url)}: schema at head")
    return 0


def cmd_sweep(args) -> int:
    """Start a sweep from its YAML, or `--resume` one whose driver stopped; ends with the best config."""
    from dibs.platform.sweeps.sweep_driver import resume_spec, run_sweep, start_spec

    if (args.sweep is None) == (args.resume is None):
        return _fail("dibs sweep: give a sweep YAML, or --resume SWEEP_ID (not both)")
    if args.resume:
        spec = resume_spec(
            args.resume, args.output_dir, args.db
        )  # the store's password: --db or $DIBS_DB_URL
        print(
            f"sweep {spec['sweep_id']}: resuming {spec['name']} ({spec['sweep_path']}); "
            f"store {display_url(spec['db_url'])}"
        )
    else:
        spec = start_spec(args.sweep, args.db, args.output_dir)  # opens the store once the file checks out
        print(
            f"sweep {spec['sweep_id']}: {spec['name']} over {', '.join(spec['sweep']['space'])}; "
            f"store {display_url(spec['db_url'])}; resume with: dibs sweep --resume {spec['sweep_id']}"
        )
    out = run_sweep(spec, resume=args.resume is not None)
    if out["best"] is None:
        return _fail(f"sweep {spec['sweep_id']}: no trial finished", 1)
    metric = spec["objectives"][0][0]
    print(
        f"sweep {spec['sweep_id']}: {out['finished']}/{out['trials']} trials finished; best {metric} = "
        f"{out['best'][metric]:.4f} with {json.dumps(out['params'])}"
    )
    print(f"ready to run: dibs run {out['yaml']}")
    return 0


def cmd_sweeps(args) -> int:
    """Sweeps in the store with their trials: parameters, status, objective and runs' final metrics."""
    from dibs.platform.store.reader import open_reader
    from dibs.platform.store.store import store_url

    with open_reader(store_url(args.db)) as reader:  # read-only: never creates, migrates or writes
        sweeps = [s | {"trials": sweep_trials(reader, s["id"])} for s in reader.sweeps()]
    if args.json:
        print(json.dumps(sweeps, indent=2))
        return 0
    for s in sweeps:
        print(f"{s['id']}  {s['name']:<20} {s['objective']} ({s['mode']})  {len(s['trials'])} trials")
        for t in s["trials"]:
            objective = "-" if t["objective"] is None else f"{t['objective']:.4f}"
            print(f"  {t['id']}  {t['status']:<9} {objective:>8}  {json.dumps(t['params'])}")
    return 0


def sweep_trials(reader, sweep_id: str) -> list[dict]:
    """A sweep's trials, each with its runs (newest first): seed, status, final metrics, budget spent."""
    runs = reader.runs(sweep_id=sweep_id)
    out = []
    for t in reader.trials(sweep_id):
        mine = [r for r in runs if r["trial_id"] == t["id"]]
        final = [
            {
                "run": r["id"],
                "seed": r["seed"],
                "status": r["status"],
                "final": (r["summary"] or {}).get("final", {}),
                "rollouts_consumed": (r["summary"] or {}).get("rollouts_consumed"),
            }
            for r in mine
        ]
        out.append(t | {"runs": final})
    return out


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dibs", description="Per-prompt rollout budgets for RAFT++ and GRPO.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check an experiment YAML")
    v.add_argument("experiment")
    v.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    v.add_argument("--print", action="store_true", help="print the merged config (JSON) a run would record")
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
    rs.add_argument(
        "--force",
        action="store_true",
        help="take over a run whose owner died (its lease expired); a live lease is never taken",
    )
    rs.add_argument(
        "--wait-lease",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for another owner's live lease to expire (Ray Jobs retries)",
    )
    rs.set_defaults(func=cmd_resume)
    ls = sub.add_parser("runs", help="list runs")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--db")
    ls.set_defaults(func=cmd_runs)
    e = sub.add_parser(
        "export", help="print runs (config, metric and per-prompt rows) or a comparison of them"
    )
    e.add_argument("run_id", nargs="*", help="run ids, unique id prefixes or unique names")
    e.add_argument("--experiment", help="also every run of this experiment (its YAML path as recorded)")
    e.add_argument("--sweep", help="also every run of this sweep id")
    e.add_argument("--format", choices=["json", "csv"], default="json")
    e.add_argument(
        "--table",
        choices=["metrics", "prompts", "compare", "targets"],
        default="metrics",
        help="metric rows, per-prompt rows, seed-pooled curves of --metric against --x, or "
        "rollouts/steps to --target (json of one run without it: the whole run)",
    )
    e.add_argument(
        "--metric", default="eval/accuracy", help="compare/targets: the metric (default eval/accuracy)"
    )
    e.add_argument("--x", choices=list(X_AXES), default="step", help="compare: the x-axis")
    e.add_argument("--target", type=finite_float, help="targets: the accuracy to reach (a finite number)")
    e.add_argument("--db")
    e.set_defaults(func=cmd_export)
    sw = sub.add_parser("sweep", help="run a sweep (Ray Tune + Optuna) or resume one")
    sw.add_argument("sweep", nargs="?", help="sweep YAML (base, space, search, scheduler, repeats)")
    sw.add_argument("--resume", metavar="SWEEP_ID", help="continue a sweep whose driver stopped")
    sw.add_argument("--db", help="results store URL (default sqlite:///runs/dibs.db)")
    sw.add_argument(
        "--output-dir", default="runs", help="sweeps live in OUTPUT_DIR/sweeps/<id> (default runs)"
    )
    sw.set_defaults(func=cmd_sweep)
    sws = sub.add_parser("sweeps", help="list sweeps with their trials, parameters and metrics")
    sws.add_argument("--json", action="store_true")
    sws.add_argument("--db")
    sws.set_defaults(func=cmd_sweeps)
    dash = sub.add_parser("dashboard", help="serve the read-only comparison dashboard in the browser")
    dash.add_argument("--db", help="results store URL (default sqlite:///runs/dibs.db)")
    dash.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    dash.add_argument("--port", type=int, default=8050)
    dash.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests addressed to NAME (a DNS name of this machine or a proxy's)",
    )
    dash.set_defaults(func=cmd_dashboard)
    d = sub.add_parser("db", help="results store schema")
    d.add_argument("action", choices=["upgrade"])
    d.add_argument("--db")
    d.set_defaults(func=cmd_db)
    from dibs.platform.cli.eval_cli import add_eval_parser  # `dibs eval CHECKPOINT --suite math5`

    add_eval_parser(sub)
    add_job_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return _fail(str(e))
    from dibs.platform.store import StoreError

    try:
        return args.func(args)
    except (ConfigError, StoreError, JobsError) as e:
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
