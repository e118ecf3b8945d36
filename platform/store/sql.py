"""Small helpers shared by the store's modules: dialect-specific inserts, value cleaning, messages."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, quote_plus

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from .models import Base


class StoreError(Exception):
    """A store that cannot be opened or a request it cannot answer. ``str(e)`` is one line."""


class UnknownRun(StoreError):
    """A run (or other row) a request names that the store does not hold. ``what`` says so without
    naming the store, for answers that must not show its path or URL (the dashboard)."""

    def __init__(self, what: str, shown: str) -> None:
        super().__init__(f"{what} in {shown}")
        self.what = what


def not_a_store(shown: str, kind: str) -> StoreError:
    """The error for a database that holds no dibs store: an empty one, or one of something else (left
    as it is: dibs neither reads it nor adds its tables to it)."""
    if kind == "empty":
        return StoreError(
            f"store {shown} is an empty database, not a dibs results store "
            "(`dibs run`, `dibs sweep` or `dibs db upgrade` make one)"
        )
    return StoreError(f"store {shown} is not a dibs results store (no dibs tables / alembic revision)")


def behind_head(shown: str, current: set[str], heads: set[str]) -> StoreError:
    """The error for a store whose schema is not at the migrations' head (docs/conventions.md: only
    `dibs db upgrade` changes a schema)."""
    found = ", ".join(sorted(current)) or "empty"
    return StoreError(
        f"store {shown} is at revision {found}, not {', '.join(sorted(heads))}: run `dibs db upgrade`"
    )


def insert_ignore(conn: Connection, model: type[Base], keys: list[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO NOTHING for the connection's dialect."""
    match conn.dialect.name:
        case "sqlite":
            return sqlite.insert(model).on_conflict_do_nothing(index_elements=keys)
        case "postgresql":
            return postgresql.insert(model).on_conflict_do_nothing(index_elements=keys)
    raise StoreError(f"unsupported database {conn.dialect.name!r}")


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None when missing or non-finite: JSON and PostgreSQL carry no nan/inf."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def count(name: str, value: Any, where: str) -> int:
    """``value`` as a non-negative int; ValueError "<where>: <name> must be ..." otherwise.

    ``operator.index`` takes ints (numpy and 0-d torch ones too) but refuses 2.5 rather than truncating it.
    """
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{where}: {name} must be an integer, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{where}: {name} must be >= 0, got {number}")
    return number


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None: PostgreSQL's JSON has no nan or inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


DB_ENV = "DIBS_DB_URL"  # the store URL with its password, where it may live: a shell, a cluster's nodes
MASK = "***"  # what display_url shows for a password

# `scheme://user:password@` anywhere in a text: what a URL that SQLAlchemy cannot parse still shows.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):(?P<password>[^@/\s]+)@")


def _parsed(url: str) -> URL | None:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return None


def display_url(url: str) -> str:
    """``url`` with its password as ``***``: the one form of a store (or any other) URL that dibs shows
    people, prints, logs or writes to a file."""
    parsed = _parsed(url)
    if parsed is not None and parsed.password is not None:
        return parsed.render_as_string(hide_password=True)
    return _USERINFO.sub(rf"\g<head>:{MASK}@", url)


def url_password(url: str) -> str | None:
    """The password inside ``url`` (None when it has none)."""
    parsed = _parsed(url)
    if parsed is not None:
        return parsed.password or None
    found = _USERINFO.search(url)
    return found["password"] if found else None


def without_password(url: str) -> str:
    """``url`` with no password at all (the server's own secret, e.g. .pgpass, supplies it)."""
    parsed = _parsed(url)
    if parsed is None or parsed.password is None:
        return _USERINFO.sub(r"\g<head>@", url)
    return URL.create(
        parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query
    ).render_as_string(hide_password=False)


def redact(text: str, *urls: str | None) -> str:
    """``text`` (an error message, a log line) with the password of each of ``urls``, and of any other
    ``user:password@`` in it, replaced by ``***``: drivers and parsers echo the URL they were given."""
    for url in urls:
        secret = url_password(url) if url else None
        if secret:
            for form in {secret, quote(secret, safe=""), quote_plus(secret, safe="")}:
                text = text.replace(form, MASK)
    return _USERINFO.sub(rf"\g<head>:{MASK}@", text)


def one_line(exc: BaseException, url: str | None = None) -> str:
    """The first line of a driver or SQLAlchemy error, with ``url``'s password (and any other) hidden."""
    text = str(exc.orig) if isinstance(exc, DBAPIError) and exc.orig is not None else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return redact(lines[0], url) if lines else type(exc).__name__


def run_head(run: Any) -> dict[str, Any]:
    """The columns of a ``runs`` row that list and table views show."""
    return {
        "id": run.id,
        "name": run.name,
        "experiment": run.experiment,
        "status": run.status,
        "started": iso(run.started_at),
        "finished": iso(run.finished_at),
        "seed": run.seed,
        "sweep_id": run.sweep_id,
        "trial_id": run.trial_id,
    }
