"""What `dibs submit` checks on this machine before anything is uploaded (jobs.py): the Ray dashboard's
address, the store URL a job will use, what a cluster off this machine may not see, the `--runtime-env`
file, and whether a YAML is an experiment or a sweep. Each bad input is one `JobsError` line."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from dibs.platform.core import strict_yaml
from dibs.platform.core.config import read_yaml_mapping
from dibs.platform.store.sql import DB_ENV, display_url, redact  # DB_ENV: never in a runtime_env

LOOPBACK_NAMES = ("localhost",)


class JobsError(Exception):
    """A bad address, runtime env or job request. ``str(e)`` is one line."""


def dashboard_address(address: str | None) -> str:
    """`--address`, else RAY_API_SERVER_ADDRESS (as the `ray job` CLI reads it): http(s)://HOST[:PORT]."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address:
        raise JobsError("no cluster: give --address http://HOST:8265 (the Ray dashboard)")
    parts = urlsplit(address)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or parts.path not in ("", "/")
    ):
        raise JobsError(
            f"--address {display_url(address)!r}: expected the Ray dashboard's URL, http://HOST:8265"
        )
    return address.rstrip("/")


def is_loopback(address: str) -> bool:
    host = urlsplit(address).hostname or ""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_store_url(db: str | None) -> str:
    """The store URL the cluster will use: a relative SQLite path made absolute on this machine."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from dibs.platform.store.store import store_url

    url = store_url(db)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise JobsError(f"--db {display_url(url)!r}: not a database URL ({redact(str(exc), url)})") from exc
    if parsed.password is not None:
        # Short: error lines are capped. docs/guide.md, "Ray Jobs", has the longer story.
        raise JobsError(
            f"--db {display_url(url)}: a job must not carry the store password (the Ray dashboard "
            f"shows it); drop it from --db and give it on the cluster: ${DB_ENV} where `ray start` "
            "ran, --db-file PATH, or ~/.pgpass"
        )
    if parsed.get_backend_name() != "sqlite":
        return url
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or parsed.query.get("mode") == "memory":
        raise JobsError(f"--db {url!r}: a job needs a store it can reach; give a file or a PostgreSQL URL")
    return parsed.set(database=str(Path(database).expanduser().resolve())).render_as_string(
        hide_password=False
    )


def remote_warnings(address: str, db_url: str, output_dir: Path) -> list[str]:
    """What a cluster off this machine may not see: a SQLite file, the output directory."""
    if is_loopback(address):
        return []
    out = [
        (
            f"checkpoints and sweep state go to {output_dir} on the cluster's nodes: pass --output-dir on a "
            "filesystem they share"
        )
    ]
    if db_url.startswith("sqlite"):
        out.insert(
            0,
            f"the store {display_url(db_url)} is a file on this machine; workers of "
            f"{display_url(address)} may not see it: use PostgreSQL (--db postgresql://USER@HOST/DB)",
        )
    return out


def read_runtime_env(path: str | None) -> dict[str, Any]:
    """A `--runtime-env` YAML/JSON mapping, checked by Ray's own RuntimeEnv; working_dir is dibs'."""
    if path is None:
        return {}
    try:
        data = strict_yaml.load(Path(path).read_text())  # no alias bombs, no recursion past its depth cap
    except (OSError, yaml.YAMLError) as exc:
        raise JobsError(f"--runtime-env {path}: cannot read it ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise JobsError(f"--runtime-env {path}: expected a mapping such as {{env_vars: {{KEY: value}}}}")
    if "working_dir" in data:
        raise JobsError(f"--runtime-env {path}: working_dir is set by dibs (the project); remove it")
    if DB_ENV in (data.get("env_vars") or {}):
        raise JobsError(
            f"--runtime-env {path}: env_vars.{DB_ENV} would show the store URL to anyone who can "
            f"reach the Ray dashboard; export {DB_ENV} where `ray start` ran, or use --db-file"
        )
    from ray.runtime_env import RuntimeEnv

    try:
        RuntimeEnv(**data)
    except Exception as exc:  # Ray raises TypeError/ValueError/... for a bad field
        raise JobsError(f"--runtime-env {path}: {str(exc).splitlines()[0]}") from exc
    return data


def build_runtime_env(user: dict[str, Any], *, experiment: str) -> dict[str, Any]:
    """The user's runtime env with dibs' env vars merged (the user's keys win). No store URL: the
    entrypoint finds it on the cluster (job_entry.py)."""
    env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "DIBS_EXPERIMENT": experiment}
    return user | {"env_vars": env | user.get("env_vars", {})}


def is_sweep_file(path: str) -> bool:
    data = read_yaml_mapping(path, "an experiment or a sweep (base, space, search)")
    return "base" in data and "space" in data
