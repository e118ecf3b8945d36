"""Experiments and sweeps on a Ray cluster through the Ray Jobs API: `dibs submit`, `dibs jobs`.

How a submission goes (`submit`):
- Everything is checked on this machine before anything is uploaded (job_checks.py): the experiment or
  sweep YAML, the `--runtime-env` file, the store URL and the dashboard address (which must answer). A bad
  input is one `JobsError` / `ConfigError` / `StoreError` line and no job.
- The store URL and the output directory (checkpoints, sweep state) are resolved here, as docs/conventions.md
  asks for the store: a relative SQLite path or directory becomes an absolute one. With a cluster that
  is not on loopback, a SQLite store draws a warning naming PostgreSQL as the fix, and the output
  directory one saying the cluster's nodes must see that path.
- The dibs record is created here: an experiment's run row (the resolved config, status 'submitted',
  the same `create_run` as `dibs run`), or a sweep's row and spec (`sweep_driver.start_spec`).
- The job's entrypoint runs that record by id inside the cluster: `dibs resume RUN_ID` (a submitted run
  has no checkpoint, so it starts from the start) or `dibs sweep --resume SWEEP_ID`, so the job's
  `submission_id` is the run or sweep id. The store password never travels with a job (anyone who can
  reach the Ray dashboard reads its entrypoint and runtime_env): a `--db` URL with a password is refused,
  and the entrypoint (job_entry.py) finds the URL on the cluster: `$DIBS_DB_URL` on its nodes, else
  `--db-file PATH` there, else the password-less `--db` URL itself.
- The code: only what git tracks in the project, plus `--include` paths (job_upload.py), goes up as the
  job's `working_dir`, placed as `dibs/` inside it, because the repository root *is* the `dibs`
  package (pyproject's package-dir). Ray puts the working_dir on the path of the driver and every
  worker, so `import dibs` finds the uploaded copy; the entrypoint `cd`s into `dibs/` so relative paths
  mean what they mean in the project. The entrypoint runs `python` from the cluster's PATH: the
  cluster's environment must hold dibs' dependencies (the same venv, an image, or `pip` in
  `--runtime-env`).

Retries (`supervise`, `retry`): Ray never retries a failed job, and a `submission_id` cannot be reused.
A job that ends FAILED (its entrypoint exited non-zero, or its driver died) is submitted again as
`<id>-retry<k>` with the same entrypoint plus `--force --wait-lease` (`retry_entrypoint`: it waits out
the dead attempt's lease, then takes the run over), which resumes the same dibs run from its latest complete
checkpoint (same run id, same store rows; metric rows are idempotent, so each step is kept once), or
the sweep from its Tune state. A STOPPED job was stopped on purpose and is not retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dibs.platform.core.config import ConfigError, config_to_dict, load_config
from dibs.platform.jobs import job_upload
from dibs.platform.jobs.entrypoint import entrypoint, retry_entrypoint  # the job's command, built here
from dibs.platform.jobs.job_checks import (  # the checks before anything is uploaded
    JobsError,
    build_runtime_env,
    dashboard_address,
    is_sweep_file,
    read_runtime_env,
    remote_warnings,
    resolve_store_url,
)
from dibs.platform.store.sql import display_url, redact
from dibs.platform.tasks.registry import check_task_kind

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the repository root is the `dibs` package
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass(frozen=True)
class Submission:
    """One dibs record on its way to the cluster; each attempt is a job with its own submission id."""

    kind: str  # "run" or "sweep"
    dibs_id: str  # the run or sweep id, and the first attempt's submission id
    entrypoint: str
    runtime_env: dict[str, Any]  # without working_dir: each attempt stages and uploads the project
    attempt: int = 0
    include: tuple[str, ...] = ()  # `--include` paths, relative to the project, uploaded with each attempt

    @property
    def submission_id(self) -> str:
        return self.dibs_id if self.attempt == 0 else f"{self.dibs_id}-retry{self.attempt}"

    def metadata(self) -> dict[str, str]:
        return {
            "dibs_kind": self.kind,
            "dibs_id": self.dibs_id,
            "dibs_attempt": str(self.attempt),
            "dibs_include": json.dumps(list(self.include)),
        }

    def next_attempt(self) -> Submission:
        """The retry of this attempt: same record and uploads, the entrypoint that may take over its lease."""
        return dataclasses.replace(
            self, entrypoint=retry_entrypoint(self.entrypoint), attempt=self.attempt + 1
        )


# --- checks, all before anything is uploaded ------------------------------------------------------
# --- the cluster ------------------------------------------------------------------------------------


def connect(address: str | None):
    """A JobSubmissionClient for the dashboard at `address`, or one JobsError line when none answers."""
    from ray.job_submission import JobSubmissionClient

    address = dashboard_address(address)
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # ConnectionError, RuntimeError, ... from the SDK
        raise JobsError(
            f"cannot reach the Ray dashboard at {display_url(address)}: "
            f"{redact(str(exc).splitlines()[0], address)}"
        ) from exc


def submit_attempt(client, sub: Submission) -> str:
    """Upload the project (job_upload.py) and submit one attempt of `sub` under its submission id."""
    try:
        with job_upload.staged_project(PROJECT_ROOT, sub.include) as stage:
            return _submit_job(client, sub, stage)
    except job_upload.UploadError as exc:
        raise JobsError(str(exc)) from exc


def _submit_job(client, sub: Submission, stage: str) -> str:
    try:
        return client.submit_job(
            entrypoint=sub.entrypoint,
            submission_id=sub.submission_id,
            runtime_env=sub.runtime_env | {"working_dir": stage},
            metadata=sub.metadata(),
        )
    except Exception as exc:  # the SDK raises RuntimeError with the HTTP answer
        raise JobsError(
            f"job {sub.submission_id}: submission failed: {redact(str(exc).splitlines()[0])}"
        ) from exc


def submit(
    path: str,
    *,
    address: str | None,
    db: str | None = None,
    overrides: list[str] | None = None,
    runtime_env_file: str | None = None,
    output_dir: str | None = None,
    client=None,
    warn: Callable[[str], None] | None = None,
    include: list[str] | None = None,
    db_file: str | None = None,
) -> Submission:
    """Check everything, create the run (or sweep) in the store, submit its first job; see the module
    docstring. `client` replaces the JobSubmissionClient (tests)."""
    overrides = list(overrides or [])
    included = checked_upload(include or [])
    sweep = is_sweep_file(path)
    if sweep and overrides:
        raise ConfigError(f"{path}: --set applies to experiments; give a sweep's overrides under `fixed:`")
    cfg = None if sweep else load_config(path, overrides)
    if cfg is not None:  # an unknown task fails here, before anything is recorded or submitted
        check_task_kind(cfg.task, str(path))
    if sweep:  # checked before open_store below may make the store; start_spec reads it again
        from dibs.platform.sweeps.sweep_config import load_sweep

        load_sweep(path)
    out = Path(output_dir or (cfg.runtime.output_dir if cfg else "runs")).expanduser().resolve()
    user_env = read_runtime_env(runtime_env_file)
    db_url = resolve_store_url(db)
    from dibs.platform.store import open_store

    store = open_store(db_url)  # a bad URL fails here, before the cluster is asked anything
    address = dashboard_address(address)
    client = client or connect(address)
    for line in remote_warnings(address, db_url, out):
        (warn or _warn)(line)
    if sweep:
        from dibs.platform.sweeps.sweep_driver import start_spec

        kind, dibs_id = "sweep", start_spec(path, db_url, str(out))["sweep_id"]
    else:
        kind, dibs_id = "run", _create_run(store, path, [*overrides, f"runtime.output_dir={out}"])
    sub = Submission(
        kind,
        dibs_id,
        entrypoint(kind, dibs_id, out, store=db_url, db_file=db_file),
        build_runtime_env(user_env, experiment=str(path)),
        include=included,
    )
    try:
        submit_attempt(client, sub)
    except JobsError:
        if kind == "run":  # no job will ever start it: do not leave it 'submitted'
            store.finish_run(dibs_id, "failed")
        raise
    return sub


def checked_upload(include: list[str]) -> tuple[str, ...]:
    """`--include` paths relative to the project, after checking the whole upload can be built."""
    try:
        included = job_upload.project_paths(PROJECT_ROOT, include)
        job_upload.upload_list(PROJECT_ROOT, included)
    except job_upload.UploadError as exc:
        raise JobsError(str(exc)) from exc
    return included


def _create_run(store, path: str, overrides: list[str]) -> str:
    from dibs.platform.core.provenance import git_commit, package_versions

    cfg = load_config(path, overrides)
    run_id = store.create_run(
        name=cfg.name,
        experiment=str(path),
        config=config_to_dict(cfg),
        git_commit=git_commit(),
        versions=package_versions(),
        seed=cfg.seed,
    )
    store.mark_submitted(run_id)
    return run_id


def _warn(line: str) -> None:
    print(f"dibs: warning: {line}", file=sys.stderr)


# --- jobs: list, status, logs, stop, retry ---------------------------------------------------------


def _ask(what: str, call: Callable[[], Any]) -> Any:
    """One SDK call; its RuntimeError (an unknown id, an HTTP error) becomes one JobsError line."""
    try:
        return call()
    except Exception as exc:  # the SDK raises RuntimeError/ConnectionError
        raise JobsError(f"{what}: {redact(str(exc).strip().splitlines()[-1])}") from exc


def _iso(ms: int | None) -> str | None:
    return (
        None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds")
    )


def job_row(details) -> dict[str, Any]:
    """One job as `dibs jobs list --json` shows it (Ray's JobDetails; `dibs_id` None for other jobs)."""
    md = details.metadata or {}
    return {
        "submission_id": details.submission_id,
        "status": str(details.status.value),
        "entrypoint": details.entrypoint,
        "start_time": _iso(details.start_time),
        "end_time": _iso(details.end_time),
        "dibs_id": md.get("dibs_id"),
        "kind": md.get("dibs_kind"),
        "attempt": int(md["dibs_attempt"]) if "dibs_attempt" in md else None,
        "message": details.message,
    }


def list_jobs(client) -> list[dict[str, Any]]:
    """Every job the cluster knows, oldest first."""
    jobs = _ask("list jobs", client.list_jobs)
    return [job_row(j) for j in sorted(jobs, key=lambda j: j.start_time or 0)]


def job_status(client, job_id: str) -> str:
    return str(_ask(f"job {job_id}", lambda: client.get_job_status(job_id)).value)


def job_logs(client, job_id: str) -> str:
    return _ask(f"job {job_id}", lambda: client.get_job_logs(job_id))


def stop_job(client, job_id: str) -> bool:
    """Ask the job to stop (SIGTERM, then SIGKILL after Ray's grace period); False if it had ended."""
    return bool(_ask(f"job {job_id}", lambda: client.stop_job(job_id)))


def follow_logs(client, job_id: str, write: Callable[[str], None]) -> None:
    """Stream a job's log until it ends (Ray's `tail_job_logs` websocket)."""
    job_status(client, job_id)  # an unknown id fails with one line, not inside the event loop

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(tail())
    except Exception as exc:  # noqa: BLE001 - the websocket closed early: the status poll takes over
        write(f"dibs: log stream of {job_id} ended early ({type(exc).__name__}); waiting for its status\n")


def wait(
    client,
    job_id: str,
    *,
    poll: float = 2.0,
    follow: bool = False,
    write: Callable[[str], None] = sys.stdout.write,
) -> str:
    """Block until the job ends (streaming its log with `follow`); returns SUCCEEDED, FAILED or STOPPED."""
    if follow:
        follow_logs(client, job_id, write)
    while (status := job_status(client, job_id)) not in TERMINAL:
        time.sleep(poll)
    return status


def attempts(client, dibs_id: str) -> list[dict[str, Any]]:
    """The jobs of one dibs run or sweep, first attempt first."""
    return sorted((j for j in list_jobs(client) if j["dibs_id"] == dibs_id), key=lambda j: j["attempt"] or 0)


def retry(client, job_id: str) -> Submission:
    """Submit the next attempt of a dibs job (by its run/sweep id or any attempt's submission id) whose
    latest attempt FAILED or was STOPPED: same entrypoint and runtime env, `<id>-retry<k>`."""
    info = _ask(f"job {job_id}", lambda: client.get_job_info(job_id))
    md = info.metadata or {}
    if "dibs_id" not in md:
        raise JobsError(f"job {job_id} was not submitted by dibs; nothing to resume")
    latest = attempts(client, md["dibs_id"])[-1]
    if latest["status"] not in ("FAILED", "STOPPED"):
        raise JobsError(
            f"job {latest['submission_id']} is {latest['status']}; only a FAILED or STOPPED job is retried"
        )
    last = _ask(f"job {latest['submission_id']}", lambda: client.get_job_info(latest["submission_id"]))
    env = {k: v for k, v in (last.runtime_env or {}).items() if k != "working_dir"}  # uploaded afresh
    include = tuple(json.loads(md.get("dibs_include", "[]")))
    sub = Submission(
        md["dibs_kind"],
        md["dibs_id"],
        retry_entrypoint(last.entrypoint),
        env,
        attempt=latest["attempt"] + 1,
        include=include,
    )
    submit_attempt(client, sub)
    return sub


def supervise(
    client,
    sub: Submission,
    *,
    max_retries: int,
    poll: float = 2.0,
    follow: bool = True,
    write: Callable[[str], None] = sys.stdout.write,
) -> tuple[str, Submission]:
    """Wait for `sub`'s job; while it ends FAILED and retries are left, submit `<id>-retry<k>` (it
    resumes the same run from its checkpoint). Returns the last status and attempt."""
    while True:
        status = wait(client, sub.submission_id, poll=poll, follow=follow, write=write)
        if status != "FAILED" or sub.attempt >= max_retries:
            return status, sub
        nxt = sub.next_attempt()
        write(
            f"dibs: job {sub.submission_id} FAILED; resubmitting as {nxt.submission_id} "
            f"(retry {nxt.attempt}/{max_retries}: resumes {sub.kind} {sub.dibs_id} from its checkpoint)\n"
        )
        submit_attempt(client, nxt)
        sub = nxt
