"""`dibs runs`, `export`, `sweep`, `sweeps`, `dashboard` and `db upgrade`: the commands over the results
store (a sweep records its trials there), registered by main.py's parser with `add_store_parsers`."""

from __future__ import annotations

import argparse
import json
import sys

from dibs.dashboards.series import X_AXES
from dibs.platform.cli.arg_types import finite_float
from dibs.platform.cli.errors import fail
from dibs.platform.core.config import ConfigError
from dibs.platform.store.sql import display_url


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
    comparison (--table compare|targets|budget) as the dashboard's compare page computes it."""
    from dibs.platform.store.export import prompt_stats_to_csv, run_to_csv, run_to_json, runs_to_csv, to_json
    from dibs.platform.store.reader import open_reader
    from dibs.platform.store.store import store_url

    with open_reader(store_url(args.db)) as reader:
        runs = [reader.get_run(ref) for ref in args.run_id]
        named = {run["id"] for run in runs}
        if args.experiment or args.sweep:  # oldest first, as they were made
            picked = reader.runs(experiment=args.experiment, sweep_id=args.sweep)[::-1]
            runs += [reader.get_run(r["id"]) for r in picked if r["id"] not in named]
        # The pre-passes that match the runs are read from the store, so the table is made here.
        budget = _budget(args, reader, runs) if runs and args.table == "budget" else None
    if not runs:
        return fail("export: no runs (name run ids, or --experiment / --sweep that match some)")
    if budget is not None:
        text = budget
    elif args.table in ("compare", "targets"):
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


def _budget(args, reader, runs: list[dict]) -> str:
    from dibs.dashboards.budget import MAX_BINS, read_budget
    from dibs.dashboards.exports import budget_export

    if not 1 <= args.bins <= MAX_BINS:
        raise ConfigError(f"export --bins must be in 1..{MAX_BINS}, got {args.bins}")
    ref, spreads = read_budget(reader, runs, args.bins)
    return budget_export(ref, spreads, fmt=args.format)


def cmd_dashboard(args) -> int:
    from dibs.dashboards.app import check_bindable, create_app, serve
    from dibs.dashboards.hosts import exposure_warning
    from dibs.platform.store.store import store_url

    if not 0 < args.port < 65536:
        return fail(f"dashboard: --port must be in 1..65535, got {args.port}")
    url = store_url(args.db)
    # StoreError (one line) for a store it cannot read; requests must then name host:port (hosts.py)
    app = create_app(url, host=args.host, port=args.port, allowed_hosts=args.allow_host)
    try:
        check_bindable(args.host, args.port)
    except OSError as exc:
        return fail(f"dashboard: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
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
        return fail("dibs sweep: give a sweep YAML, or --resume SWEEP_ID (not both)")
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
        return fail(f"sweep {spec['sweep_id']}: no trial finished", 1)
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


def add_store_parsers(sub: argparse._SubParsersAction) -> None:
    """The subcommands above, in the order `dibs --help` lists them (after validate, run and resume)."""
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
        choices=["metrics", "prompts", "compare", "targets", "budget"],
        default="metrics",
        help="metric rows, per-prompt rows, seed-pooled curves of --metric against --x, "
        "rollouts/steps to --target, or rollouts per visit by reference pass-rate bin (json of one run "
        "without it: the whole run)",
    )
    e.add_argument(
        "--metric", default="eval/accuracy", help="compare/targets: the metric (default eval/accuracy)"
    )
    e.add_argument("--x", choices=list(X_AXES), default="step", help="compare: the x-axis")
    e.add_argument("--target", type=finite_float, help="targets: the accuracy to reach (a finite number)")
    e.add_argument("--bins", type=int, default=10, help="budget: pass-rate bins over [0, 1] (default 10)")
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
