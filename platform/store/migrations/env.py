"""Alembic environment of the results store.

Online mode reuses the connection that ``ResultsStore`` passes in ``config.attributes["connection"]``
(already inside its transaction, so the whole upgrade commits or rolls back as one); without one it
opens its own from ``sqlalchemy.url``. Offline mode (``--sql``) prints the DDL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from dibs.platform.store.models import Base
from dibs.platform.store.versioning import VERSION_TABLE

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs: object) -> None:
    # Batch mode lets later migrations alter SQLite tables (copy-and-move), see Alembic "batch". The
    # revision lives in dibs' own version table (versioning.py); tests may name another to build the
    # databases older versions of dibs made.
    table = config.attributes.get("version_table", VERSION_TABLE)
    context.configure(target_metadata=target_metadata, render_as_batch=True, version_table=table, **kwargs)


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    try:
        with engine.begin() as own:
            _run_on(own)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
