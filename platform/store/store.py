"""The results store: runs, their metric rows, per-prompt rows and checkpoints, in SQLite or PostgreSQL.

Writes are idempotent on the natural keys, (run, name, step) for metrics, (run, step, prompt) for
per-prompt rows and (run, step) for checkpoints: a row that meets an existing key is left as it is, so a
resumed run never duplicates or rewrites a row (conventions.md, "Metrics and the store"). Alembic owns
the schema; opening a store upgrades it to head in one transaction, and an old database keeps its rows.

SQLite: WAL journal and a 30 s busy timeout let several processes write one file. Write transactions
start with ``BEGIN IMMEDIATE`` so that a writer waits for the lock up front instead of failing with
"database is locked" when a read transaction tries to become a write one.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from . import migrations
from .engine import WRITE_OPTION, make_engine
from .models import RUN_STATUSES, Base, Checkpoint, Metric, PromptStatRow, Run
from .telemetry import PROMPT_STAT_KEY, prompt_stat_values, read_prompt_stats

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

    from dibs.platform.metrics import PromptStat

DEFAULT_URL = "sqlite:///runs/dibs.db"
FINAL_STATUSES = tuple(s for s in RUN_STATUSES if s not in ("submitted", "running"))


class StoreError(Exception):
    """A store that cannot be opened or a request it cannot answer. ``str(e)`` is one line."""


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


def open_store(url: str | None, *, upgrade: bool = False) -> ResultsStore:
    """Open the store at ``url`` (see ``store_url``). A new, empty database gets the schema from the
    migrations; an older one is only upgraded with ``upgrade=True`` (`dibs db upgrade`, conventions.md)."""
    return ResultsStore(store_url(url), upgrade=upgrade)


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    """An Alembic config for the store's migrations, with no alembic.ini; ``connection`` is reused."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser interpolation
    if connection is not None:
        config.attributes["connection"] = connection
    return config


class ResultsStore:
    """Runs, metric rows and checkpoints behind one SQLAlchemy URL.

    ``upgrade=False`` creates the schema in an empty database (through the migrations, so it is at
    head) and otherwise fails unless the database is already at head: schema changes of an existing
    database are left to ``dibs db upgrade``.
    """

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = url
        self._shown = _display_url(url)
        try:
            self._engine = make_engine(url)
        except (ArgumentError, ImportError, OSError, ValueError) as exc:
            raise StoreError(f"cannot open store {self._shown}: {_one_line(exc)}") from exc
        self._writer = self._engine.execution_options(**{WRITE_OPTION: True})
        try:
            self._migrate(upgrade)
        except (SQLAlchemyError, CommandError, OSError) as exc:
            self._engine.dispose()
            raise StoreError(f"cannot open store {self._shown}: {_one_line(exc)}") from exc
        except StoreError:
            self._engine.dispose()
            raise

    def _migrate(self, upgrade: bool) -> None:
        with self._writer.connect() as conn, conn.begin():
            config = alembic_config(self.url, conn)
            current = set(MigrationContext.configure(conn).get_current_heads())
            if upgrade or not current:
                command.upgrade(config, "head")
                return
            heads = set(ScriptDirectory.from_config(config).get_heads())
            if current != heads:
                found = ", ".join(sorted(current)) or "empty"
                raise StoreError(
                    f"store {self._shown} is at revision {found}, not {', '.join(sorted(heads))}:"
                    " run `dibs db upgrade`"
                )

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
            raise StoreError(f"store {self._shown}: {_one_line(exc)}") from exc

    def revision(self) -> str | None:
        """The Alembic revision the database is at (``None`` for an empty database)."""
        with self._tx(write=False) as conn:
            return MigrationContext.configure(conn).get_current_revision()

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
    ) -> str:
        """Insert a run with status 'running' and return its id (``run-YYYYMMDD-HHMMSS-xxxxxx``)."""
        now = datetime.now(timezone.utc)
        run_id = run_id or f"run-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        with self._tx(write=True) as conn:
            if conn.execute(select(Run.id).where(Run.id == run_id)).first() is not None:
                raise StoreError(f"a run with id {run_id!r} already exists in {self._shown}")
            conn.execute(
                insert(Run).values(
                    id=run_id,
                    name=name,
                    experiment=str(experiment),
                    status="running",
                    config=_json_safe(dict(config)),
                    git_commit=git_commit,
                    versions=_json_safe(dict(versions)),
                    seed=int(seed),
                    created_at=now,
                    started_at=now,
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
            stmt = _insert_ignore(conn, Metric, ["run_id", "name", "step"]).returning(Metric.id)
            return len(conn.execute(stmt, values).all())

    def log_prompt_stats(self, run_id: str, step: int, rows: Sequence[PromptStat]) -> int:
        """One step's per-prompt rows, idempotent and nan -> NULL as in ``log_metrics``; how many were new.
        A malformed row raises ValueError before anything is written (``telemetry.prompt_stat_values``)."""
        values = prompt_stat_values(run_id, step, rows)
        with self._tx(write=True) as conn:
            self._require_run(conn, run_id)
            stmt = _insert_ignore(conn, PromptStatRow, list(PROMPT_STAT_KEY)).returning(PromptStatRow.id)
            return len(conn.execute(stmt, values).all()) if values else 0

    def add_checkpoint(self, run_id: str, step: int, path: str) -> bool:
        """Record a checkpoint; ``False`` when (run_id, step) was already recorded (left as it is)."""
        now = datetime.now(timezone.utc)
        values = {"run_id": run_id, "step": int(step), "path": str(path), "created_at": now}
        with self._tx(write=True) as conn:
            self._require_run(conn, run_id)
            stmt = _insert_ignore(conn, Checkpoint, ["run_id", "step"]).returning(Checkpoint.id)
            return len(conn.execute(stmt, values).all()) == 1

    def finish_run(self, run_id: str, status: str, summary: Mapping[str, Any] | None = None) -> None:
        """Set the final status (one of ``FINAL_STATUSES``), ``finished_at`` = now and the summary."""
        if status not in FINAL_STATUSES:
            raise StoreError(f"status {status!r} is not one of {', '.join(FINAL_STATUSES)}")
        summary_json = None if summary is None else _json_safe(dict(summary))
        self._set_status(run_id, status=status, finished_at=datetime.now(timezone.utc), summary=summary_json)

    def resume_run(self, run_id: str) -> None:
        """Mark a run 'running' again (a Ray Jobs retry resumes the same run and its rows)."""
        self._set_status(run_id, status="running", finished_at=None)

    def mark_submitted(self, run_id: str) -> None:
        """Mark a new run 'submitted': its Ray job has yet to start it (`dibs submit`, issue 7)."""
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
        if conn.execute(select(Run.id).where(Run.id == ref)).first() is not None:
            return ref
        matches: list[str] = []
        if ref:
            found = select(Run.id).where(or_(Run.id.startswith(ref, autoescape=True), Run.name == ref))
            matches = list(conn.execute(found.order_by(Run.id)).scalars())
        if not matches:
            raise StoreError(f"no run with id {ref!r} in {self._shown}")
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise StoreError(f"{ref!r} matches {len(matches)} runs in {self._shown}: {shown}")
        return matches[0]

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run, newest first: id, name, experiment, status, started, finished (ISO-8601), seed."""
        with self._tx(write=False) as conn:
            runs = conn.execute(select(Run).order_by(Run.created_at.desc(), Run.id.desc())).all()
        return [_run_head(run) for run in runs]

    def get_run(self, run_id: str) -> dict[str, Any]:
        """One run with what it ran, its metric rows (by step, then name) and ``prompt_stats`` rows.

        ``run_id`` may also be a unique id prefix or a unique run name.
        """
        with self._tx(write=False) as conn:
            run = conn.execute(select(Run).where(Run.id == self._resolve(conn, run_id))).one()
            order = (Metric.step, Metric.name)
            metrics = conn.execute(select(Metric).where(Metric.run_id == run.id).order_by(*order)).all()
            prompt_stats = read_prompt_stats(conn, run.id)
        return {
            **_run_head(run),
            "git_commit": run.git_commit,
            "versions": run.versions,
            "config": run.config,
            "summary": run.summary,
            "metrics": [
                {
                    "step": m.step,
                    "rollouts_consumed": m.rollouts_consumed,
                    "tokens_generated": m.tokens_generated,
                    "wall_seconds": m.wall_seconds,
                    "name": m.name,
                    "value": m.value,
                }
                for m in metrics
            ],
            "prompt_stats": prompt_stats,
        }

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

    def prompt_stats(self, run_id: str) -> list[dict[str, Any]]:
        """A run's per-prompt rows (dicts, NULL -> None) by step, then in logging order."""
        with self._tx(write=False) as conn:
            return read_prompt_stats(conn, self._resolve(conn, run_id))


# -- helpers ------------------------------------------------------------------------------------


def _insert_ignore(conn: Connection, model: type[Base], keys: list[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO NOTHING for the connection's dialect."""
    match conn.dialect.name:
        case "sqlite":
            return sqlite.insert(model).on_conflict_do_nothing(index_elements=keys)
        case "postgresql":
            return postgresql.insert(model).on_conflict_do_nothing(index_elements=keys)
    raise StoreError(f"unsupported database {conn.dialect.name!r}")


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


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None: PostgreSQL's JSON has no nan or inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _run_head(run: Any) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "experiment": run.experiment,
        "status": run.status,
        "started": _iso(run.started_at),
        "finished": _iso(run.finished_at),
        "seed": run.seed,
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _display_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _one_line(exc: BaseException) -> str:
    text = str(exc.orig) if isinstance(exc, DBAPIError) and exc.orig is not None else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
