"""The SQLAlchemy engine behind the results store: SQLite (WAL, busy timeout, IMMEDIATE write
transactions) or PostgreSQL (see store.py's module docstring for why), optionally read-only.

Only an engine made with ``create=True`` may bring a SQLite file (and its folder) into being; every
other one opens an existing file or fails naming it, so a mistyped path never leaves a new file behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

SUPPORTED_DIALECTS = ("sqlite", "postgresql")
WRITE_OPTION = "dibs_write"  # execution option that makes the SQLite BEGIN an IMMEDIATE one


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL that names one by path; None for other databases, in-memory ones and
    ``file:`` URIs (those describe their own open mode)."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return None if parsed.query.get("mode") == "memory" else Path(database)


def make_engine(url: str, *, read_only: bool = False, create: bool = False) -> Engine:
    """An engine for ``url``. ``read_only=True`` (read commands, the dashboard) makes the database itself
    refuse writes: SQLite opens the file with ``mode=ro`` and ``query_only``, PostgreSQL sessions start
    with ``default_transaction_read_only``. A missing SQLite file is a ValueError naming it unless
    ``create=True`` (a writer that may make a new store), which also makes its folder."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in SUPPORTED_DIALECTS:
        raise ValueError(f"unsupported database {parsed.get_backend_name()!r} (use sqlite or postgresql)")
    if parsed.get_backend_name() != "sqlite":
        options = {"options": "-c default_transaction_read_only=on"} if read_only else {}
        return create_engine(parsed, pool_pre_ping=True, connect_args=options)
    path = sqlite_file(url)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if path is not None:
        parsed = _sqlite_open(parsed, path, read_only=read_only, create=create)
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


def _sqlite_open(parsed: URL, path: Path, *, read_only: bool, create: bool) -> URL:
    if create and not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
        return parsed
    if not path.is_file():
        raise ValueError(
            f"{str(path)!r} is not a file" if path.exists() else f"no database file {str(path)!r}"
        )
    # A URI filename opens the file read-only (mode=ro) or read-write without creating it (mode=rw), so
    # the file cannot appear between the check above and the open (SQLite "URI filenames").
    mode = "ro" if read_only else "rw"
    uri = f"file:{quote(path.resolve().as_posix())}?mode={mode}"
    return parsed.set(database=uri).update_query_dict({"uri": "true"})
