"""The SQLAlchemy engine behind the results store: SQLite (WAL, busy timeout, IMMEDIATE write
transactions) or PostgreSQL (see store.py's module docstring for why), optionally read-only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

SUPPORTED_DIALECTS = ("sqlite", "postgresql")
WRITE_OPTION = "dibs_write"  # execution option that makes the SQLite BEGIN an IMMEDIATE one


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for ``url``. ``read_only=True`` (the dashboard) makes the database itself refuse writes:
    SQLite opens the file with ``mode=ro`` and ``query_only``, PostgreSQL sessions start with
    ``default_transaction_read_only``; a missing SQLite file is then an error rather than created."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in SUPPORTED_DIALECTS:
        raise ValueError(f"unsupported database {parsed.get_backend_name()!r} (use sqlite or postgresql)")
    if parsed.get_backend_name() != "sqlite":
        options = {"options": "-c default_transaction_read_only=on"} if read_only else {}
        return create_engine(parsed, pool_pre_ping=True, connect_args=options)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if read_only:
        parsed = _read_only_sqlite(parsed, database, in_memory)
    elif not in_memory and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (SQLAlchemy docs, pysqlite "Serializable isolation").
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        elif not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _read_only_sqlite(parsed: URL, database: str, in_memory: bool) -> URL:
    if in_memory or database.startswith("file:"):
        return parsed  # an in-memory or URI database is the caller's to describe
    path = Path(database)
    if not path.is_file():
        raise ValueError(f"no database file {database!r}")
    # A URI filename opens the file read-only (SQLite "URI filenames"); pysqlite takes uri=true.
    return parsed.set(database=f"file:{path.resolve().as_posix()}?mode=ro").update_query_dict({"uri": "true"})
