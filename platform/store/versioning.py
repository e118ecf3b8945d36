"""Where the store keeps its Alembic revision: `dibs_alembic_version`, not Alembic's default
`alembic_version`.

Optuna's RDB storage keeps its own schema revision in `alembic_version`, and a sweep keeps its Optuna study
in the results database itself, so the two must not share that table. Databases made before
this change (revisions 0001-0003) have dibs' revision in `alembic_version`: `adopt_legacy_version` moves
it across (rows untouched) the first time such a database is opened, and leaves any other row (Optuna's)
where it is.

`alembic_config` points Alembic at the store's migrations (no alembic.ini); the store and its reader both
use it, so it lives here, below them.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from . import migrations

VERSION_TABLE = "dibs_alembic_version"
LEGACY_VERSION_TABLE = "alembic_version"


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    """An Alembic config for the store's migrations, with no alembic.ini; ``connection`` is reused."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser interpolation
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migration_context(conn: Connection) -> MigrationContext:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})


def legacy_revisions(conn: Connection, ours: set[str]) -> list[str]:
    """dibs revisions recorded in the legacy table (none when it is absent or holds only Optuna's)."""
    tables = set(sa.inspect(conn).get_table_names())
    if VERSION_TABLE in tables or LEGACY_VERSION_TABLE not in tables:
        return []
    rows = conn.execute(sa.text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}")).scalars().all()
    return [r for r in rows if r in ours]


def current_heads(conn: Connection, ours: set[str]) -> set[str]:
    """The revision(s) the database is at, from whichever table holds dibs' (read-only)."""
    return set(legacy_revisions(conn, ours)) or set(migration_context(conn).get_current_heads())


def store_kind(conn: Connection, ours: set[str]) -> str:
    """What the database holds (read-only): "dibs" (a dibs revision is recorded), "empty" (no table or
    view at all) or "foreign" (tables of something else, which dibs must neither read nor add to)."""
    found = sa.inspect(conn)
    tables = found.get_table_names()
    if VERSION_TABLE in tables or legacy_revisions(conn, ours):
        return "dibs"
    return "foreign" if tables or found.get_view_names() else "empty"


def adopt_legacy_version(conn: Connection, ours: set[str]) -> None:
    """Move dibs' revision out of `alembic_version` into `dibs_alembic_version` (inside the caller's
    transaction); drop the legacy table if nothing else was in it."""
    mine = legacy_revisions(conn, ours)
    if not mine:
        return
    table = sa.Table(
        VERSION_TABLE,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
    )
    table.create(conn)
    conn.execute(table.insert(), [{"version_num": r} for r in mine])
    legacy = sa.table(LEGACY_VERSION_TABLE, sa.column("version_num"))
    conn.execute(legacy.delete().where(legacy.c.version_num.in_(mine)))
    if conn.execute(sa.select(sa.func.count()).select_from(legacy)).scalar_one() == 0:
        conn.execute(sa.text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))
