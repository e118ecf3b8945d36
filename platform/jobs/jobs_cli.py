"""`dibs submit` and `dibs jobs list|status|logs|stop|retry`: the command line over `dibs.platform.jobs.jobs`
(see its docstring for what a submission uploads, runs and retries)."""

from __future__ import annotations

import argparse
import json
import sys

from dibs.platform.jobs import job_checks, jobs
from dibs.platform.store.sql import display_url

ADDRESS_HELP = "Ray dashboard URL, http://HOST:8265 (default: $RAY_API_SERVER_ADDRESS)"


def cmd_submit(args) -> int:
    overrides = list(args.set) + ([f"name={args.name}"] if args.name else [])
    sub = jobs.submit(
        args.experiment,
        address=args.address,
        db=args.db,
        overrides=overrides,
        runtime_env_file=args.runtime_env,
        output_dir=args.output_dir,
        include=args.include,
        db_file=args.db_file,
    )
    address = job_checks.dashboard_address(args.address)
    shown = display_url(address)  # the dashboard's URL may carry user:password@ too
    print(
        f"{sub.kind} {sub.dibs_id}: submitted as job {sub.submission_id} to {shown}; "
        f"store {display_url(job_checks.resolve_store_url(args.db))}"
    )
    wait = args.max_retries > 0 if args.wait is None else args.wait
    if not wait:
        print(f"follow it with: dibs jobs logs {sub.submission_id} --follow --address {shown}")
        return 0
    client = jobs.connect(address)
    status, last = jobs.supervise(client, sub, max_retries=args.max_retries, follow=True, write=_write)
    print(f"{sub.kind} {sub.dibs_id}: job {last.submission_id} {status}")
    return 0 if status == "SUCCEEDED" else 1


def cmd_jobs(args) -> int:
    client = jobs.connect(args.address)
    match args.action:
        case "list":
            return _list(client, args.json)
        case "status":
            print(f"{args.job_id}: {jobs.job_status(client, args.job_id)}")
        case "logs" if args.follow:
            jobs.follow_logs(client, args.job_id, _write)
        case "logs":
            _write(jobs.job_logs(client, args.job_id))
        case "stop":
            stopped = jobs.stop_job(client, args.job_id)
            print(f"{args.job_id}: {'stopping' if stopped else 'already ended'}")
        case "retry":
            sub = jobs.retry(client, args.job_id)
            print(
                f"{sub.kind} {sub.dibs_id}: resubmitted as job {sub.submission_id} "
                "(resumes from its checkpoint)"
            )
    return 0


def _list(client, as_json: bool) -> int:
    rows = jobs.list_jobs(client)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(
            f"{r['submission_id']:<40} {r['status']:<9} {r['dibs_id'] or '-':<32} {r['start_time'] or '-'}  "
            f"{r['end_time'] or '-'}"
        )
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _count(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def add_parsers(sub) -> None:
    """`submit` and `jobs` on the `dibs` parser's subcommands."""
    s = sub.add_parser("submit", help="submit an experiment or a sweep to a Ray cluster (Ray Jobs API)")
    s.add_argument("experiment", help="experiment or sweep YAML (checked here before anything is uploaded)")
    s.add_argument("--address", help=ADDRESS_HELP)
    s.add_argument(
        "--db",
        help="results store URL the cluster writes to (default sqlite:///runs/dibs.db, "
        "made absolute; use PostgreSQL for a remote cluster), without a password: see --db-file",
    )
    s.add_argument(
        "--db-file",
        metavar="PATH",
        help="a file on the cluster's nodes holding the store URL with "
        "its password (the job reads it there; $DIBS_DB_URL on the nodes comes first)",
    )
    s.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="also upload PATH (file or folder in the project; only git-tracked files go otherwise)",
    )
    s.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    s.add_argument("--name")
    s.add_argument(
        "--max-retries",
        type=_count,
        default=0,
        metavar="N",
        help="resubmit a FAILED job up to N times, resuming its run from the last checkpoint",
    )
    s.add_argument(
        "--runtime-env", metavar="FILE", help="YAML/JSON runtime env merged into the generated one"
    )
    s.add_argument(
        "--output-dir",
        help="checkpoints / sweep state on the cluster (default: the experiment's "
        "runtime.output_dir, made absolute)",
    )
    s.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wait for the job, streaming its log (default: only with --max-retries)",
    )
    s.set_defaults(func=cmd_submit)
    j = sub.add_parser("jobs", help="jobs on a Ray cluster: list, status, logs, stop, retry")
    acts = j.add_subparsers(dest="action", required=True)
    for name, text in (
        ("list", "every job"),
        ("status", "one job's status"),
        ("logs", "one job's log"),
        ("stop", "stop a job"),
        ("retry", "resubmit a FAILED/STOPPED dibs job as <id>-retry<k>"),
    ):
        a = acts.add_parser(name, help=text)
        if name == "list":
            a.add_argument("--json", action="store_true")
        else:
            a.add_argument("job_id", help="submission id (a dibs run or sweep id, or <id>-retry<k>)")
        if name == "logs":
            a.add_argument("--follow", action="store_true", help="stream the log until the job ends")
        a.add_argument("--address", help=ADDRESS_HELP)
        a.set_defaults(func=cmd_jobs)
