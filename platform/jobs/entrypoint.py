"""The command a `dibs submit` job runs on the cluster, built on the submitting machine: `entrypoint`, and a
retry's `retry_entrypoint`. It starts cli/job_entry.py there, which finds the store URL on the cluster (its
password never travels with a job) and runs the dibs command:

    cd dibs && python -m dibs.platform.cli.job_entry [--db-file PATH] [--store URL] -- resume RUN_ID
"""

from __future__ import annotations

import shlex
from pathlib import Path


def entrypoint(kind: str, dibs_id: str, output_dir: Path, *, store: str, db_file: str | None = None) -> str:
    """The job's shell command: run (or resume) the dibs record by id inside the uploaded project, with
    the store URL found on the cluster (cli/job_entry.py); ``store`` holds no password
    (job_checks.resolve_store_url)."""
    entry = [
        "cd dibs && python -m dibs.platform.cli.job_entry",
        *(["--db-file", db_file] if db_file else []),
        "--store",
        store,
        "--",
    ]
    dibs = (
        ["resume", dibs_id]
        if kind == "run"
        else ["sweep", "--resume", dibs_id, "--output-dir", str(output_dir)]
    )
    return " ".join([entry[0], *map(shlex.quote, entry[1:] + dibs)])


def retry_entrypoint(command: str) -> str:
    """A later attempt's command. Ray retries only an attempt it reports FAILED or STOPPED, so that
    attempt's driver is dead; if it died without closing its run (SIGKILL, out of memory) its lease is
    still live for up to LEASE_SECONDS, so `dibs resume --force` waits that long for it, then takes over."""
    from dibs.platform.store.lease import LEASE_SECONDS

    flags = f"--force --wait-lease {LEASE_SECONDS * 1.5:g}"
    if " resume " not in command or command.endswith(flags):
        return command
    return f"{command} {flags}"
