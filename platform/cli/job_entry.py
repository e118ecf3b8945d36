"""A `dibs submit` job's entrypoint on the cluster: find the store URL there, then run the dibs command.

The command is built on the submitting machine (jobs/entrypoint.py) and read by `main` on the cluster.
The store URL's password never travels with a job (its entrypoint and runtime_env are readable by anyone
who can reach the Ray dashboard). The cluster holds it, and the URL is taken from, in order:
1. `$DIBS_DB_URL` in the job's environment: exported where `ray start` ran, every job inherits it;
2. `--db-file PATH`: a file on the cluster's nodes whose first line is the URL;
3. `--store URL`: the URL given to `dibs submit`, which holds no password (SQLite, or PostgreSQL with
   the password in the nodes' ~/.pgpass or $PGPASSWORD).

    python -m dibs.platform.cli.job_entry [--db-file PATH] [--store URL] -- resume RUN_ID
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dibs.platform.cli.main import main as dibs_main
from dibs.platform.store.sql import DB_ENV


def cluster_store_url(db_file: str | None, store: str | None, environ=os.environ) -> str:
    """The store URL by the order in the module docstring; ValueError (one line) when none is found."""
    if environ.get(DB_ENV):
        return environ[DB_ENV]
    if db_file:
        try:
            lines = Path(db_file).read_text().strip().splitlines()
        except OSError as exc:
            raise ValueError(
                f"--db-file {db_file}: cannot read it on this node ({exc.strerror or exc})"
            ) from None
        if not lines or not lines[0].strip():
            raise ValueError(f"--db-file {db_file}: empty; expected the store URL on its first line")
        return lines[0].strip()
    if store:
        return store
    raise ValueError(f"no store URL: set ${DB_ENV} on the cluster's nodes or pass --db-file")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dibs-job", description="run a submitted dibs command on the cluster")
    p.add_argument("--db-file", help="file on the cluster holding the store URL")
    p.add_argument("--store", help="the store URL without a password (used when the cluster holds none)")
    p.add_argument(
        "command", nargs=argparse.REMAINDER, help="-- then the dibs command (resume ID, sweep ...)"
    )
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        url = cluster_store_url(args.db_file, args.store)
    except ValueError as exc:
        print(f"dibs: error: {exc}", file=sys.stderr)
        return 2
    return dibs_main([*command, "--db", url])  # in this process: the URL is in no command line


if __name__ == "__main__":
    sys.exit(main())
