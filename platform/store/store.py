"""The results store: runs, their metric rows, per-prompt rows and checkpoints, in SQLite or PostgreSQL.

Writes are idempotent on the natural keys, (run, name, step) for metrics, (run, step, prompt) for
per-prompt rows and (run, step) for checkpoints: a row that meets an existing key is left as it is, so a
resumed run never duplicates or rewrites a row (docs/conventions.md, "Metrics and the store"). Alembic owns
the schema; opening a store upgrades it to head in one transaction, and an old database keeps its rows.

SQLite: WAL journal and a 30 s busy timeout let several processes write one file. Write transactions
start with ``BEGIN IMMEDIATE`` so that a writer waits for the lock up front instead of failing with
"database is locked" when a read transaction tries to become a write one.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from . import catalog, lease
from .engine import WRITE_OPTION, make_engine, sqlite_file
from .evaluations import EVALUATION_KEY, evaluation_values, read_evaluations
from .lease import LEASE_SECONDS
from .models import RUN_STATUSES, Checkpoint, Evaluation, Metric, PromptStatRow, Run
from .reader import read_run, refuse_non_store, resolve_run
from .sql import StoreError, behind_head, display_url, insert_ignore, json_safe, one_line, run_head
from .telemetry import PROMPT_STAT_KEY, prompt_stat_values, read_prompt_stats
from .versioning import adopt_legacy_version, alembic_config, migration_context

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

    from dibs.platform.core.metrics import PromptStat

DEFAULT_URL = "sqlite:///runs/dibs.db"
_ALEMBIC_LOCK = threading.Lock()
FINAL_STATUSES = tuple(s for s in RUN_STATUSES if s not in ("submitted", "running"))


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One metric at one step, with the budget spent up to it (rollouts include the probe)."""

    step: int
    name: str
    value: float
    rollouts_consumed: int
    tokens_generated: int
    wall_seconds: float


def store_url(url: str | None) -> str:
    """``None`` -> ``DEFAULT_URL`` (relative to the working directory); a bare path -> a SQLite URL."""
    if url is None:
        return DEFAULT_URL
    if "://" not in url:
        return f"sqlite:///{url}"
    return url


def open_store(url: str | None, *, upgrade: bool = False, create: bool = True) -> ResultsStore:
    """Open the store at ``url`` (see ``store_url``). A new, empty database gets the schema from the
    migrations (``create=False``: it is an error instead); an older one is only upgraded with
    ``upgrade=True`` (`dibs db upgrade`, the only way a schema changes). A database of something else is
    refused."""
    return ResultsStore(store_url(url), upgrade=upgrade, create=create)


class ResultsStore:
    """Runs, metric rows and checkpoints behind one SQLAlchemy URL.

    ``upgrade=False`` creates the schema in an empty database (through the migrations, so it is at
    head) and otherwise fails unless the database is already at head: schema changes of an existing
    database are left to ``dibs db upgrade``. ``create=False`` (`dibs resume`) opens an existing store
    only: a missing SQLite file or an empty database is an error. A database holding tables of
    something else is never written to.
    """

    def __init__(self, url: str, *, upgrade: bool = True, create: bool = True) -> None:
        self.url = url
        self._shown = display_url(url)
        try:
            self._refuse_non_store(create)
            self._engine = make_engine(url, create=create)
        except (ArgumentError, ImportError, OSError, ValueError) as exc:
            raise StoreError(f"cannot open store {self._shown}: {one_line(exc, self.url)}") from exc
        self._writer = self._engine.execution_options(**{WRITE_OPTION: True})
        try:
            self._migrate(upgrade)
        except (SQLAlchemyError, CommandError, OSError) as exc:
            self._engine.dispose()
            raise StoreError(f"cannot open store {self._shown}: {one_line(exc, self.url)}") from exc
        except StoreError:
            self._engine.dispose()
            raise

    def _refuse_non_store(self, create: bool) -> None:
        """Look at the database read-only before a writable engine touches it (on SQLite that alone
        switches the file to WAL): one of something else is refused, and an empty one unless ``create``."""
        path = sqlite_file(self.url)
        if not (create and path is not None and not path.exists()):  # a new file holds nothing to protect
            refuse_non_store(self.url, allow_empty=create)

    def _migrate(self, upgrade: bool) -> None:
        with self._writer.connect() as conn, conn.begin():
            config = alembic_config(self.url, conn)
            script = ScriptDirectory.from_config(config)
            adopt_legacy_version(conn, {r.revision for r in script.walk_revisions()})
            current = set(migration_context(conn).get_current_heads())
            heads = set(script.get_heads())
            if current == heads:
                return  # the usual case: nothing for Alembic's environment to do
            if upgrade or not current:
                # Alembic's `context` is one module-level proxy per process: two threads inside
                # command.upgrade at once break it (KeyError 'script'), so they take turns.
                with _ALEMBIC_LOCK:
                    command.upgrade(config, "head")
                return
            raise behind_head(self._shown, current, heads)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[Connection]:
        try:
            with (self._writer if write else self._engine).begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"store {self._shown}: {one_line(exc, self.url)}") from exc

    def revision(self) -> str | None:
        """The Alembic revision the database is at (``None`` for an empty database)."""
        with self._tx(write=False) as conn:
            return migration_context(conn).get_current_revision()

    # -- writes ---------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        name: str,
        experiment: str,
        config: Mapping[str, Any],
        git_commit: str | None,
        versions: Mapping[str, Any],
        seed: int,
        run_id: str | None = None,
        sweep_id: str | None = None,
        trial_id: str | None = None,
        owner: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> str:
        """Insert a run with status 'running' and return its id (``run-YYYYMMDD-HHMMSS-xxxxxx``).

        ``sweep_id``/``trial_id`` tag a run that a sweep trial made (both must exist); ``owner`` holds
        the run's lease for ``lease_seconds`` from now (see ``take_lease``)."""
        now = datetime.now(timezone.utc)
        run_id = run_id or f"run-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        with self._tx(write=True) as conn:
            if conn.execute(select(Run.id).where(Run.id == run_id)).first() is not None:
                raise StoreError(f"a run with id {run_id!r} already exists in {self._shown}")
            catalog.check_tags(conn, sweep_id, trial_id)
            conn.execute(
                insert(Run).values(
                    id=run_id,
                    name=name,
                    experiment=str(experiment),
                    status="running",
                    config=json_safe(dict(config)),
                    git_commit=git_commit,
                    versions=json_safe(dict(versions)),
                    seed=int(seed),
                    created_at=now,
                    started_at=now,
                    experiment_id=catalog.experiment_id(conn, str(experiment)),
                    sweep_id=sweep_id,
                    trial_id=trial_id,
                    **(lease.lease_values(owner, lease_seconds, now) if owner else {}),
                )
            )
        return run_id

    def log_metrics(self, run_id: str, rows: Sequence[MetricRow]) -> int:
        """Insert ``rows`` in one transaction; return how many were new.

        A row whose (run_id, name, step) exists is left as it is, even if its value differs. A
        non-finite value (nan, inf) is kept as a row with value NULL.
        """
        if not rows:
            return 0
        values = [_metric_values(run_id, row) for row in rows]
        with self._tx(write=True) as conn:
            self._require_run(conn, run_id)
            stmt = insert_ignore(conn, Metric, ["run_id", "name", "step"]).returning(Metric.id)
            return len(conn.execute(stmt, values).all())

    def log_prompt_stats(self, run_id: str, step: int, rows: Sequence[PromptStat]) -> int:
        """One step's per-prompt rows, idempotent and nan -> NULL as in ``log_metrics``; how many were new.
        A malformed row raises ValueError before anything is written (``telemetry.prompt_stat_values``)."""
        values = prompt_stat_values(run_id, step, rows)
        with self._tx(write=True) as conn:
            self._require_run(conn, run_id)
            stmt = insert_ignore(conn, PromptStatRow, list(PROMPT_STAT_KEY)).returning(PromptStatRow.id)
            return len(conn.execute(stmt, values).all()) if values else 0

    def add_checkpoint(self, run_id: str, step: int, path: str) -> bool:
        """Record a checkpoint; ``False`` when (run_id, step) was already recorded (left as it is)."""
        now = datetime.now(timezone.utc)
        values = {"run_id": run_id, "step": int(step), "path": str(path), "created_at": now}
        with self._tx(write=True) as conn:
            self._require_run(conn, run_id)
            stmt = insert_ignore(conn, Checkpoint, ["run_id", "step"]).returning(Checkpoint.id)
            return len(conn.execute(stmt, values).all()) == 1

    def record_evaluation(self, run_id: str, step: int, set_name: str, k: int, temperature: float,
                          mean_at_k: float | None, pass_at_k: float | None,
                          n_problems: int) -> bool:  # fmt: skip
        """One evaluation row (``evaluations.evaluation_values``); ``False`` when (run, step, set, k,
        temperature) was already recorded (left as it is). ValueError for a value out of range."""
        values = evaluation_values(run_id, step, set_name, k, temperature, mean_at_k, pass_at_k, n_problems)
        with self._tx(write=True) as conn:
            self._require_run(conn, run_id)
            stmt = insert_ignore(conn, Evaluation, list(EVALUATION_KEY)).returning(Evaluation.id)
            return len(conn.execute(stmt, values).all()) == 1

    def create_sweep(
        self,
        *,
        name: str,
        objective: str,
        mode: str = "max",
        space: Mapping[str, Any] | None = None,
        experiment: str | None = None,
        sweep_id: str | None = None,
    ) -> str:
        """Insert a sweep that maximises (``mode="max"``) or minimises ``objective``; return its id."""
        with self._tx(write=True) as conn:
            return catalog.create_sweep(
                conn, name=name, experiment=experiment, objective=objective, mode=mode,
                space=space or {}, sweep_id=sweep_id,
            )  # fmt: skip

    def create_trial(self, sweep_id: str, params: Mapping[str, Any], trial_id: str | None = None) -> str:
        """Insert a 'pending' trial of ``sweep_id`` with its parameters (dotted key -> value)."""
        with self._tx(write=True) as conn:
            return catalog.create_trial(conn, sweep_id, params, trial_id)

    def update_trial(
        self, trial_id: str, *, status: str | None = None, objective: float | None = None
    ) -> None:
        """Set a trial's status (one of ``models.TRIAL_STATUSES``) and/or its objective value."""
        with self._tx(write=True) as conn:
            catalog.update_trial(conn, trial_id, status=status, objective=objective)

    def finish_run(self, run_id: str, status: str, summary: Mapping[str, Any] | None = None) -> None:
        """Set the final status (one of ``FINAL_STATUSES``), ``finished_at`` = now and the summary."""
        if status not in FINAL_STATUSES:
            raise StoreError(f"status {status!r} is not one of {', '.join(FINAL_STATUSES)}")
        summary_json = None if summary is None else json_safe(dict(summary))
        self._set_status(
            run_id,
            status=status,
            finished_at=datetime.now(timezone.utc),
            summary=summary_json,
            owner=None,
            lease_expires=None,
        )

    def take_lease(self, run_id: str, owner: str, *, force: bool = False,
                   lease_seconds: float = LEASE_SECONDS) -> None:  # fmt: skip
        """Make ``owner`` the holder of a run that nobody holds (``force``: or whose lease expired) and
        mark it 'running', atomically; ``lease.LeaseHeld`` (nothing written) while another owner holds it."""
        with self._tx(write=True) as conn:
            lease.acquire(conn, run_id, owner, seconds=lease_seconds, force=force, shown=self._shown)

    def renew_lease(self, run_id: str, owner: str, lease_seconds: float = LEASE_SECONDS) -> bool:
        """The driver's heartbeat; ``False`` when ``owner`` no longer holds the run."""
        with self._tx(write=True) as conn:
            return lease.renew(conn, run_id, owner, seconds=lease_seconds)

    def release_run(
        self, run_id: str, owner: str, status: str, summary: Mapping[str, Any] | None = None
    ) -> bool:
        """``finish_run`` for the lease's holder: close the run and free it; ``False`` (nothing written)
        when ``owner`` no longer holds it."""
        if status not in FINAL_STATUSES:
            raise StoreError(f"status {status!r} is not one of {', '.join(FINAL_STATUSES)}")
        values = {
            "status": status,
            "finished_at": datetime.now(timezone.utc),
            "summary": None if summary is None else json_safe(dict(summary)),
        }
        with self._tx(write=True) as conn:
            return lease.release(conn, run_id, owner, values)

    def resume_run(self, run_id: str) -> None:
        """Mark a run 'running' again, without a lease: a sweep trial resumed with its sweep (`dibs resume`
        takes the lease instead)."""
        self._set_status(run_id, status="running", finished_at=None)

    def mark_submitted(self, run_id: str) -> None:
        """Mark a new run 'submitted': its Ray job has yet to start it (`dibs submit`)."""
        self._set_status(run_id, status="submitted")

    def _set_status(self, run_id: str, **values: Any) -> None:
        with self._tx(write=True) as conn:
            if conn.execute(update(Run).where(Run.id == run_id).values(**values)).rowcount == 0:
                raise StoreError(f"no run with id {run_id!r} in {self._shown}")

    def _require_run(self, conn: Connection, run_id: str) -> None:
        if conn.execute(select(Run.id).where(Run.id == run_id)).first() is None:
            raise StoreError(f"no run with id {run_id!r} in {self._shown}")

    # -- reads ----------------------------------------------------------------------------------

    def resolve_run_id(self, ref: str) -> str:
        """The id of the run that ``ref`` names: an id, a unique id prefix or a unique run name."""
        with self._tx(write=False) as conn:
            return self._resolve(conn, ref)

    def _resolve(self, conn: Connection, ref: str) -> str:
        return resolve_run(conn, ref, self._shown)

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run, newest first: id, name, experiment, status, started, finished (ISO-8601), seed."""
        with self._tx(write=False) as conn:
            runs = conn.execute(select(Run).order_by(Run.created_at.desc(), Run.id.desc())).all()
        return [run_head(run) for run in runs]

    def get_run(self, run_id: str) -> dict[str, Any]:
        """One run with what it ran, its metric rows (by step, then name) and ``prompt_stats`` rows.

        ``run_id`` may also be a unique id prefix or a unique run name.
        """
        with self._tx(write=False) as conn:
            return read_run(conn, self._resolve(conn, run_id))

    def metric_series(self, run_id: str, name: str) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of one metric by step; a NULL (non-finite) value reads as nan."""
        with self._tx(write=False) as conn:
            query = select(Metric.step, Metric.value).where(
                Metric.run_id == self._resolve(conn, run_id), Metric.name == name
            )
            rows = conn.execute(query.order_by(Metric.step)).all()
        return [(step, math.nan if value is None else value) for step, value in rows]

    def checkpoints(self, run_id: str) -> list[tuple[int, str]]:
        """``[(step, path), ...]`` of a run by step."""
        with self._tx(write=False) as conn:
            query = select(Checkpoint.step, Checkpoint.path).where(
                Checkpoint.run_id == self._resolve(conn, run_id)
            )
            return [(step, path) for step, path in conn.execute(query.order_by(Checkpoint.step))]

    def evaluations(self, run_id: str) -> list[dict[str, Any]]:
        """A run's evaluation rows (dicts, NULL -> None) by step, set, k and temperature."""
        with self._tx(write=False) as conn:
            return read_evaluations(conn, self._resolve(conn, run_id))

    def sweeps(self) -> list[dict[str, Any]]:
        """Every sweep, newest first, with its experiment and trial count."""
        with self._tx(write=False) as conn:
            return catalog.read_sweeps(conn)

    def trials(self, sweep_id: str) -> list[dict[str, Any]]:
        """A sweep's trials: id, params, status, objective, created, finished."""
        with self._tx(write=False) as conn:
            return catalog.read_trials(conn, sweep_id)

    def lease(self, run_id: str) -> dict[str, Any]:
        """Who holds a run and until when (``lease.read``); kept out of ``get_run`` and its exports."""
        with self._tx(write=False) as conn:
            return lease.read(conn, self._resolve(conn, run_id))

    def prompt_stats(self, run_id: str) -> list[dict[str, Any]]:
        """A run's per-prompt rows (dicts, NULL -> None) by step, then in logging order."""
        with self._tx(write=False) as conn:
            return read_prompt_stats(conn, self._resolve(conn, run_id))


def _metric_values(run_id: str, row: MetricRow) -> dict[str, Any]:
    value = float(row.value)
    return {
        "run_id": run_id,
        "step": int(row.step),
        "name": str(row.name),
        "value": value if math.isfinite(value) else None,
        "rollouts_consumed": int(row.rollouts_consumed),
        "tokens_generated": int(row.tokens_generated),
        "wall_seconds": float(row.wall_seconds),
    }
