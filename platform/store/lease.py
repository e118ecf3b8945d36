"""Run leases: while a run executes, one driver process owns its row ("host:pid:token" in ``runs.owner``)
until ``runs.lease_expires``, and renews that every few seconds. A second process may take the run over only
when nobody holds it (closed runs have no owner) or, forced, when the holder stopped renewing: two writers
on one run and one checkpoint directory would interleave their rows and checkpoints.

Taking a lease is one conditional UPDATE (``WHERE owner IS NULL OR lease_expires < now``): SQLite runs write
transactions one at a time and PostgreSQL re-checks the WHERE clause of a row another transaction just
changed, so of two concurrent takers exactly one updates the row.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, or_, select, update

from .models import Run
from .sql import StoreError

LEASE_SECONDS = 60.0  # how long a lease lasts without a heartbeat: a crashed driver's run is free after this
HEARTBEAT_SECONDS = 10.0  # how often the driver renews it: several missed beats before it expires


class LeaseHeld(StoreError):
    """The run is held by another owner (``until``: its lease's expiry, ``None`` when it has none)."""

    def __init__(self, message: str, until: datetime | None) -> None:
        super().__init__(message)
        self.until = until


def new_owner() -> str:
    """This process as a lease owner: host and pid for people, a random token so a reused pid differs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def lease_values(owner: str, seconds: float, now: datetime) -> dict[str, Any]:
    return {"owner": owner, "lease_expires": now + timedelta(seconds=seconds), "heartbeat_at": now}


def acquire(conn: Connection, run_id: str, owner: str, *, seconds: float, force: bool, shown: str) -> None:
    """Make ``owner`` the run's holder and the run 'running' again, or raise (nothing written):
    LeaseHeld while another owner holds it (``force``: unless its lease has expired), StoreError for a
    finished or unknown run."""
    now = datetime.now(timezone.utc)
    free = Run.owner.is_(None)
    if force:
        free = or_(free, Run.lease_expires.is_(None), Run.lease_expires < now)
    stmt = update(Run).where(Run.id == run_id, Run.status != "finished", free)
    values = {"status": "running", "finished_at": None, **lease_values(owner, seconds, now)}
    if conn.execute(stmt.values(**values)).rowcount != 1:
        raise _refusal(conn, run_id, now, force=force, shown=shown)


def _refusal(conn: Connection, run_id: str, now: datetime, *, force: bool, shown: str) -> StoreError:
    row = conn.execute(select(Run.status, Run.owner, Run.lease_expires).where(Run.id == run_id)).first()
    if row is None:
        return StoreError(f"no run with id {run_id!r} in {shown}")
    if row.status == "finished":
        return StoreError(f"run {run_id} already finished; nothing to resume")
    until = row.lease_expires
    held = f"run {run_id} is {row.status} (owner {row.owner}, lease until {_when(until)})"
    if until is not None and until >= now:
        if force:
            return LeaseHeld(
                f"{held}; --force takes over only an expired lease, and this one is live: stop "
                "that process (dibs jobs stop, or kill it) or wait for its lease to expire",
                until,
            )
        return LeaseHeld(f"{held}; a second process must not write it: stop that one first", until)
    return LeaseHeld(
        f"{held}, which has expired: if that process is dead, `dibs resume {run_id} --force` "
        "takes the run over",
        until,
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds")


def read(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """The run's lease: owner, lease_expires and heartbeat_at (None each when free); None: no such run."""
    row = conn.execute(select(Run.owner, Run.lease_expires, Run.heartbeat_at).where(Run.id == run_id)).first()
    return None if row is None else dict(row._mapping)


def renew(conn: Connection, run_id: str, owner: str, *, seconds: float) -> bool:
    """Extend ``owner``'s lease; ``False`` when it no longer holds the run (taken over or closed)."""
    now = datetime.now(timezone.utc)
    stmt = update(Run).where(Run.id == run_id, Run.owner == owner).values(**lease_values(owner, seconds, now))
    return conn.execute(stmt).rowcount == 1


def release(conn: Connection, run_id: str, owner: str, values: dict[str, Any]) -> bool:
    """Close the run with ``values`` (status, finished_at, summary) and clear its lease, only while
    ``owner`` holds it: a driver that lost its run must not overwrite the new owner's row."""
    stmt = update(Run).where(Run.id == run_id, Run.owner == owner)
    return conn.execute(stmt.values(owner=None, lease_expires=None, **values)).rowcount == 1
