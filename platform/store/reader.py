"""Read-only access to the results store, for the dashboard and comparison exports.

``StoreReader`` opens the database so that the database itself refuses writes (``engine.make_engine``
with ``read_only=True``) and never creates or migrates one: a missing SQLite file, an empty database or
one that is not a dibs store are errors naming it, and a store behind head is an error that names `dibs
db upgrade`. Every query is built with SQLAlchemy from the models; request values only ever become bound
parameters. ``read_run`` and ``read_metrics`` are shared with ``ResultsStore``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, or_, select
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from . import catalog
from .engine import make_engine
from .evaluations import read_evaluations
from .models import Checkpoint, Metric, Run
from .sql import StoreError, UnknownRun, behind_head, display_url, not_a_store, one_line, run_head
from .telemetry import read_prompt_stats
from .versioning import alembic_config, current_heads, store_kind

METRIC_FIELDS = ("step", "rollouts_consumed", "tokens_generated", "wall_seconds", "name", "value")
RUN_FILTERS = ("experiment", "status", "sweep_id")  # columns a run listing filters on in SQL


def resolve_run(conn: Connection, ref: str, shown: str) -> str:
    """The id of the run that ``ref`` names: an id, a unique id prefix or a unique run name; StoreError
    naming the store ``shown`` otherwise."""
    if conn.execute(select(Run.id).where(Run.id == ref)).first() is not None:
        return ref
    matches: list[str] = []
    if ref:
        found = select(Run.id).where(or_(Run.id.startswith(ref, autoescape=True), Run.name == ref))
        matches = list(conn.execute(found.order_by(Run.id)).scalars())
    if not matches:
        raise UnknownRun(f"no run with id {ref!r}", shown)
    if len(matches) > 1:
        listed = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise StoreError(f"{ref!r} matches {len(matches)} runs in {shown}: {listed}")
    return matches[0]


def read_metrics(conn: Connection, run_ids: Sequence[str], name: str | None = None) -> dict[str, list[dict]]:
    """Metric rows of each run (all of them, or those of metric ``name``) by step, then name."""
    query = select(Metric.run_id, *(getattr(Metric, f) for f in METRIC_FIELDS)).where(
        Metric.run_id.in_(run_ids)
    )
    if name is not None:
        query = query.where(Metric.name == name)
    out: dict[str, list[dict]] = {run_id: [] for run_id in run_ids}
    for run_id, *values in conn.execute(query.order_by(Metric.run_id, Metric.step, Metric.name)):
        out[run_id].append(dict(zip(METRIC_FIELDS, values, strict=True)))
    return out


def read_run(conn: Connection, run_id: str) -> dict[str, Any]:
    """One run (an exact id) with what it ran, its metric rows and its per-prompt rows."""
    run = conn.execute(select(Run).where(Run.id == run_id)).one()
    return {
        **run_head(run),
        "git_commit": run.git_commit,
        "versions": run.versions,
        "config": run.config,
        "summary": run.summary,
        "metrics": read_metrics(conn, [run.id])[run.id],
        "prompt_stats": read_prompt_stats(conn, run.id),
    }


def inspect_store(engine: Engine, url: str) -> tuple[str, set[str], set[str]]:
    """(kind, current revisions, head revisions) of the database behind ``engine``, looked at without
    writing (``versioning.store_kind``); StoreError naming the store when it cannot be read."""
    try:
        script = ScriptDirectory.from_config(alembic_config(url))
        ours = {r.revision for r in script.walk_revisions()}
        with engine.connect() as conn:
            kind = store_kind(conn, ours)
            current = current_heads(conn, ours) if kind == "dibs" else set()
        return kind, current, set(script.get_heads())
    except (ImportError, OSError, ValueError, SQLAlchemyError) as exc:
        raise StoreError(f"cannot open store {display_url(url)}: {one_line(exc, url)}") from exc


def refuse_non_store(url: str, *, allow_empty: bool) -> None:
    """StoreError unless the database at ``url`` is a dibs store (or, with ``allow_empty``, empty),
    looked at through a read-only engine of its own."""
    probe = make_engine(url, read_only=True)
    try:
        kind, _, _ = inspect_store(probe, url)
    finally:
        probe.dispose()
    if kind == "foreign" or (kind == "empty" and not allow_empty):
        raise not_a_store(display_url(url), kind)


@contextmanager
def open_reader(url: str) -> Iterator[StoreReader]:
    """A ``StoreReader`` for the ``with`` block, closed after it."""
    reader = StoreReader(url)
    try:
        yield reader
    finally:
        reader.close()


class StoreReader:
    """Runs, metric rows, per-prompt rows, evaluations and sweeps of a store, read-only."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._shown = display_url(url)
        try:
            self._engine = make_engine(url, read_only=True)
        except (ArgumentError, ImportError, OSError, ValueError) as exc:
            raise StoreError(f"cannot open store {self._shown}: {one_line(exc, self.url)}") from exc
        try:
            kind, current, heads = inspect_store(self._engine, url)
            if kind != "dibs":
                raise not_a_store(self._shown, kind)
            if current != heads:
                raise behind_head(self._shown, current, heads)
        except StoreError:
            self._engine.dispose()
            raise

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"store {self._shown}: {one_line(exc, self.url)}") from exc

    def runs(self, ids: Sequence[str] | None = None, **filters: str | None) -> list[dict[str, Any]]:
        """Runs, newest first, with their config and sweep/trial tags: those in ``ids`` when given, and
        that match ``filters`` (``RUN_FILTERS``; None or "" = any) exactly."""
        unknown = set(filters) - set(RUN_FILTERS)
        if unknown:
            raise ValueError(f"unknown run filter(s): {', '.join(sorted(unknown))}")
        query = select(Run).order_by(Run.created_at.desc(), Run.id.desc())
        if ids is not None:
            query = query.where(Run.id.in_(list(ids)))
        for column, value in filters.items():
            if value:
                query = query.where(getattr(Run, column) == value)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            {
                **run_head(r),
                "config": r.config,
                "summary": r.summary,
                "sweep_id": r.sweep_id,
                "trial_id": r.trial_id,
            }
            for r in rows
        ]

    def get_run(self, ref: str) -> dict[str, Any]:
        """One run as ``ResultsStore.get_run`` reads it; ``ref`` may be a unique id prefix or name."""
        with self._read() as conn:
            return read_run(conn, resolve_run(conn, ref, self._shown))

    def run(self, run_id: str) -> dict[str, Any]:
        """One run (exact id) as ``read_run``, plus its evaluations, checkpoints and sweep/trial tags."""
        with self._read() as conn:
            tags = conn.execute(select(Run.sweep_id, Run.trial_id).where(Run.id == run_id)).first()
            if tags is None:
                raise UnknownRun(f"no run with id {run_id!r}", self._shown)
            run = read_run(conn, run_id)
            run["evaluations"] = read_evaluations(conn, run_id)
            steps = select(Checkpoint.step, Checkpoint.path).where(Checkpoint.run_id == run_id)
            run["checkpoints"] = [
                {"step": s, "path": p} for s, p in conn.execute(steps.order_by(Checkpoint.step))
            ]
        return {**run, "sweep_id": tags.sweep_id, "trial_id": tags.trial_id}

    def metrics(self, run_ids: Sequence[str], name: str | None = None) -> dict[str, list[dict]]:
        """``read_metrics`` for several runs; an unknown id reads as a run without rows."""
        with self._read() as conn:
            return read_metrics(conn, list(run_ids), name)

    def prompt_stats(self, run_ids: Sequence[str]) -> dict[str, list[dict]]:
        """``read_prompt_stats`` of several runs, by run id; an unknown id reads as a run without rows."""
        with self._read() as conn:
            return {run_id: read_prompt_stats(conn, run_id) for run_id in dict.fromkeys(run_ids)}

    def metric_names(self, run_ids: Sequence[str]) -> list[str]:
        """The metric names any of ``run_ids`` recorded, sorted."""
        query = select(Metric.name).where(Metric.run_id.in_(list(run_ids))).distinct()
        with self._read() as conn:
            return sorted(conn.execute(query).scalars())

    def sweeps(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            return catalog.read_sweeps(conn)

    def trials(self, sweep_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            return catalog.read_trials(conn, sweep_id)
