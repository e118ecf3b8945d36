"""What ran: experiments, sweeps and their trials (`dibs sweep` fills sweeps through Ray Tune).

Functions over an open write transaction; ``ResultsStore`` owns the transactions and the error messages.
Ids follow the run ids' shape: ``sweep-YYYYMMDD-HHMMSS-xxxxxx`` and ``<sweep id>-tNNNN``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from .models import SWEEP_MODES, TRIAL_STATUSES, Experiment, Sweep, Trial
from .sql import StoreError, finite_or_none, insert_ignore, iso, json_safe


def experiment_id(conn: Connection, name: str) -> int:
    """The id of experiment ``name``, inserted on first use (``ON CONFLICT DO NOTHING``: concurrent
    writers that create the same experiment end with one row)."""
    conn.execute(insert_ignore(conn, Experiment, ["name"]).values(name=name, created_at=_now()))
    return conn.execute(select(Experiment.id).where(Experiment.name == name)).scalar_one()


def check_tags(conn: Connection, sweep_id: str | None, trial_id: str | None) -> None:
    """A run's sweep must exist and its trial belong to it (checked here, as SQLite does not enforce
    foreign keys unless asked to)."""
    if trial_id is not None and sweep_id is None:
        raise StoreError(f"a run of trial {trial_id!r} needs its sweep_id")
    if sweep_id is not None and conn.execute(select(Sweep.id).where(Sweep.id == sweep_id)).first() is None:
        raise StoreError(f"no sweep with id {sweep_id!r}")
    if trial_id is not None:
        found = select(Trial.id).where(Trial.id == trial_id, Trial.sweep_id == sweep_id)
        if conn.execute(found).first() is None:
            raise StoreError(f"no trial with id {trial_id!r} in sweep {sweep_id!r}")


def create_sweep(
    conn: Connection,
    *,
    name: str,
    experiment: str | None,
    objective: str,
    mode: str,
    space: Mapping[str, Any],
    sweep_id: str | None,
) -> str:
    if mode not in SWEEP_MODES:
        raise StoreError(f"sweep mode {mode!r} is not one of {', '.join(SWEEP_MODES)}")
    now = _now()
    sweep_id = sweep_id or f"sweep-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    if conn.execute(select(Sweep.id).where(Sweep.id == sweep_id)).first() is not None:
        raise StoreError(f"a sweep with id {sweep_id!r} already exists")
    exp_id = None if experiment is None else experiment_id(conn, experiment)
    conn.execute(
        insert(Sweep).values(
            id=sweep_id, name=name, experiment_id=exp_id, objective=objective, mode=mode,
            space=json_safe(dict(space)), created_at=now,
        )
    )  # fmt: skip
    return sweep_id


def create_trial(conn: Connection, sweep_id: str, params: Mapping[str, Any], trial_id: str | None) -> str:
    """A 'pending' trial of ``sweep_id``; its id defaults to ``<sweep id>-tNNNN`` (NNNN: 1, 2, ...)."""
    if conn.execute(select(Sweep.id).where(Sweep.id == sweep_id)).first() is None:
        raise StoreError(f"no sweep with id {sweep_id!r}")
    if trial_id is None:
        count = conn.execute(select(func.count()).select_from(Trial).where(Trial.sweep_id == sweep_id))
        trial_id = f"{sweep_id}-t{count.scalar_one() + 1:04d}"
    if conn.execute(select(Trial.id).where(Trial.id == trial_id)).first() is not None:
        raise StoreError(f"a trial with id {trial_id!r} already exists")
    conn.execute(
        insert(Trial).values(
            id=trial_id, sweep_id=sweep_id, params=json_safe(dict(params)), status="pending",
            objective=None, created_at=_now(),
        )
    )  # fmt: skip
    return trial_id


def update_trial(conn: Connection, trial_id: str, *, status: str | None, objective: float | None) -> None:
    """Set a trial's status and/or objective; a final status also sets ``finished_at``."""
    values: dict[str, Any] = {}
    if status is not None:
        if status not in TRIAL_STATUSES:
            raise StoreError(f"trial status {status!r} is not one of {', '.join(TRIAL_STATUSES)}")
        values["status"] = status
        values["finished_at"] = _now() if status in ("finished", "failed", "stopped") else None
    if objective is not None:
        values["objective"] = finite_or_none(objective)
    if not values:
        return
    if conn.execute(update(Trial).where(Trial.id == trial_id).values(**values)).rowcount == 0:
        raise StoreError(f"no trial with id {trial_id!r}")


def read_sweeps(conn: Connection) -> list[dict[str, Any]]:
    """Every sweep, newest first, with its experiment's name and how many trials it has."""
    trials = select(func.count()).where(Trial.sweep_id == Sweep.id).scalar_subquery()
    query = (
        select(Sweep, Experiment.name.label("experiment_name"), trials.label("trials"))
        .outerjoin(Experiment, Experiment.id == Sweep.experiment_id)
        .order_by(Sweep.created_at.desc(), Sweep.id.desc())
    )
    return [
        {
            "id": row.id, "name": row.name, "experiment": row.experiment_name, "objective": row.objective,
            "mode": row.mode, "space": row.space, "created": iso(row.created_at), "trials": row.trials,
        }
        for row in conn.execute(query)
    ]  # fmt: skip


def read_trials(conn: Connection, sweep_id: str) -> list[dict[str, Any]]:
    """The trials of one sweep in the order they were created."""
    query = select(Trial).where(Trial.sweep_id == sweep_id).order_by(Trial.created_at, Trial.id)
    return [
        {
            "id": t.id, "params": t.params, "status": t.status, "objective": t.objective,
            "created": iso(t.created_at), "finished": iso(t.finished_at),
        }
        for t in conn.execute(query)
    ]  # fmt: skip


def _now() -> datetime:
    return datetime.now(timezone.utc)
