"""The two store backends agree: the same runs, recorded into SQLite and into a real PostgreSQL, show
identically in the dashboard: every page and every data endpoint returns the same bytes, once the
wall-clock times of the recording (when each run was created) are set aside."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from dibs.dashboards.app import create_app

pytestmark = pytest.mark.services

SIX = "&".join(f"run=run-{a}-{s}" for a in ("uniform", "gvm") for s in range(3))
PATHS = [
    "/", "/?allocator=gvm", "/?sweep=sweep-1", f"/compare?{SIX}&run=run-xss", "/run/run-gvm-0",
    "/run/run-xss", "/sweep/sweep-1", f"/api/compare?{SIX}",
    f"/api/compare?{SIX}&x=tokens_generated&metric=train/loss",
    f"/api/targets?{SIX}&target=0.45", "/api/run/run-gvm-0/budget?step=2", "/api/run/run-gvm-0/allocation",
    "/api/sweep/sweep-1/parcoords", "/api/sweep/sweep-1/importance",
]  # fmt: skip
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")


def _render(url: str) -> dict[str, str]:
    with TestClient(create_app(url), base_url="http://127.0.0.1") as client:  # a loopback Host
        pages = {path: client.get(path) for path in PATHS}
    assert all(r.status_code == 200 for r in pages.values()), {p: r.status_code for p, r in pages.items()}
    return {path: ISO_TIME.sub("<time>", r.text) for path, r in pages.items()}


def test_sqlite_and_postgresql_show_the_same(tmp_path, pg_url, seeded):
    sqlite_url = f"sqlite:///{tmp_path / 'dibs.db'}"
    assert seeded(sqlite_url) == seeded(pg_url)
    on_sqlite, on_postgres = _render(sqlite_url), _render(pg_url)
    for path in PATHS:
        assert on_sqlite[path] == on_postgres[path], path
    names = [trace.get("name") for trace in json.loads(on_postgres[f"/api/compare?{SIX}"])["data"]]
    assert "grpo/gvm k=8 T=1.0 (mean of 3 seeds, 95% CI)" in names
