"""`dibs` command line: validate, run, resume; runs, export, dashboard, db upgrade, sweep(s) (store_cli.py);
eval (eval_cli.py); submit and jobs (Ray Jobs, jobs_cli.py).

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

from dibs.platform.cli.errors import fail
from dibs.platform.cli.store_cli import add_store_parsers
from dibs.platform.core.config import ConfigError, config_to_dict, load_config, missing_paths, validate_dict
from dibs.platform.core.provenance import git_commit, package_versions
from dibs.platform.jobs.job_checks import JobsError
from dibs.platform.jobs.jobs_cli import add_parsers as add_job_parsers
from dibs.platform.store.sql import display_url
from dibs.platform.tasks.registry import check_task_kind, make_task


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
        return fail(f"{args.experiment}: {key}: no such file or directory: {path}")
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
        return fail(f"run {run_id} already finished; nothing to resume")
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
                return fail(f"run {run_id}: another process took over its lease; this one stopped", code)
            return fail(
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
    add_store_parsers(sub)
    from dibs.platform.cli.eval_cli import add_eval_parser  # `dibs eval CHECKPOINT --suite math5`

    add_eval_parser(sub)
    add_job_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return fail(str(e))
    from dibs.platform.store import StoreError

    try:
        return args.func(args)
    except (ConfigError, StoreError, JobsError) as e:
        return fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
