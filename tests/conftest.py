"""Shared fixtures: a seeded results store (runs written through the store API, no training) and a
real PostgreSQL 15 server for the `services` tier.

The server is started once per session, only by tests that ask for it: `initdb` in a fresh temporary
directory, `pg_ctl start` on 127.0.0.1 at a free port, and `pg_ctl stop` of that data directory (the
only server this fixture started) at the end. PostgreSQL refuses to run as root, so as root the
binaries run as the `postgres` user that the Debian package creates. Without the binaries the tests
that need them are skipped, naming the apt package; `make test-services` (CI) installs it.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from dibs.platform.core.config import ExperimentConfig, config_to_dict
from dibs.platform.core.metrics import PromptStat
from dibs.platform.store import MetricRow, ResultsStore

XSS_NAME = "<script>alert(1)</script>"
SEEDS = (0, 1, 2)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite store URL in the test's own directory (the file is made on first open)."""
    return f"sqlite:///{tmp_path / 'dibs.db'}"


@pytest.fixture
def store(url: str) -> Iterator[ResultsStore]:
    with ResultsStore(url) as opened:
        yield opened


def _count_rows(url: str, model: type) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(model)).scalar_one()
    finally:
        engine.dispose()


@pytest.fixture
def count_rows() -> Callable[[str, type], int]:
    """``count_rows(url, Model)``: rows of the model's table, through a connection of its own."""
    return _count_rows


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A server URL without a database name: ``postgresql+psycopg://dibs@127.0.0.1:PORT``."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="dibs-pg-")
    if os.geteuid() == 0:  # initdb refuses root; the Debian package's system user runs it
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data, port = f"{root}/data", _free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        run(f"{bindir}/initdb", "-D", data, "-U", "dibs", "--auth=trust", "-E", "UTF8", "--no-locale")
        # fsync off: a test server holds nothing worth keeping, and fsync dominates its run time.
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
        run(f"{bindir}/pg_ctl", "-D", data, "-l", f"{root}/log", "-o", options, "-w", "-t", "60", "start")
        try:
            yield f"postgresql+psycopg://dibs@127.0.0.1:{port}"
        finally:
            run(f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped afterwards."""
    import psycopg

    name = f"dibs_{secrets.token_hex(4)}"
    admin = postgres_server.replace("postgresql+psycopg", "postgresql") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{postgres_server}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.integration),
                        pytest.param("postgresql", marks=pytest.mark.services)])  # fmt: skip
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses it runs on SQLite (integration tier) and on PostgreSQL (services tier)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dibs.db'}"
    return request.getfixturevalue("pg_url")


def _config(algorithm: str, allocator: str, seed: int, name: str) -> dict:
    cfg = ExperimentConfig.model_validate(
        {"name": name, "seed": seed, "algorithm": algorithm, "allocation": {"allocator": allocator}}
    )
    return config_to_dict(cfg)


def _curve(store: ResultsStore, run_id: str, *, skill: float, per_step: int) -> None:
    """eval/accuracy every 10 steps (0..50) rising with ``skill``, train/loss every step."""
    rows = [MetricRow(step=s, name="eval/accuracy", value=round(0.2 + skill * s / 50, 4),
                      rollouts_consumed=per_step * s, tokens_generated=20 * per_step * s,
                      wall_seconds=1.5 * s)
            for s in range(0, 51, 10)]  # fmt: skip
    rows += [MetricRow(step=s, name="train/loss", value=round(1.0 / s, 6), rollouts_consumed=per_step * s,
                       tokens_generated=20 * per_step * s, wall_seconds=1.5 * s)
             for s in range(1, 51)]  # fmt: skip
    store.log_metrics(run_id, rows)


def seed_store(url: str) -> dict[str, list[str]]:
    """Runs that a comparison needs, written through the store API; returns ids by setting.

    grpo/uniform and grpo/gvm with three seeds each (gvm spends 1.5x the rollouts per step: its probe),
    a raftpp run named like a script tag, per-prompt rows and evaluations for the gvm runs, and a sweep
    of four trials (two of them tagged on runs). Ids are fixed, so that two stores seeded alike match.
    """
    ids: dict[str, list[str]] = {"uniform": [], "gvm": [], "xss": [], "sweep": []}
    with ResultsStore(url) as store:
        for allocator, per_step, skill in (("uniform", 128, 0.3), ("gvm", 192, 0.4)):
            for seed in SEEDS:
                run_id = store.create_run(
                    name=f"grpo-{allocator}-s{seed}", experiment="experiments/gvm/grpo.yaml",
                    config=_config("grpo", allocator, seed, f"grpo-{allocator}-s{seed}"), git_commit="abc",
                    versions={}, seed=seed, run_id=f"run-{allocator}-{seed}",
                )  # fmt: skip
                _curve(store, run_id, skill=skill + 0.05 * seed, per_step=per_step)
                store.finish_run(run_id, "finished")
                ids[allocator].append(run_id)
        _seed_budget(store, ids["gvm"][0])
        xss = store.create_run(name=XSS_NAME, experiment="experiments/<b>x</b>.yaml",
                               config=_config("raftpp", "uniform", 0, XSS_NAME), git_commit=None, versions={},
                               seed=0, run_id="run-xss")  # fmt: skip
        _curve(store, xss, skill=0.1, per_step=128)
        ids["xss"].append(xss)
        ids["sweep"] = _seed_sweep(store)
    return ids


def _seed_budget(store: ResultsStore, run_id: str) -> None:
    for step in range(1, 6):
        stats = [PromptStat(prompt_id=f"{i}+{step}=", p_hat=i / 8, g_hat=1.0, n_alloc=(i * step) % 9,
                            accepted=min(i, (i * step) % 9), probed=i % 2 == 0)
                 for i in range(8)]  # fmt: skip
        store.log_prompt_stats(run_id, step, stats)
    for step, value in ((0, 0.25), (50, 0.5)):
        store.record_evaluation(run_id, step, "held-out", 8, 1.0, value, min(1.0, 2 * value), 400)


def _seed_sweep(store: ResultsStore) -> list[str]:
    sweep = store.create_sweep(name="lr sweep <i>", objective="eval/accuracy", mode="max",
                               space={"train.lr": [1e-5, 1e-4]}, experiment="experiments/gvm/grpo.yaml",
                               sweep_id="sweep-1")  # fmt: skip
    trials = []
    for i, (lr, allocator) in enumerate([(1e-5, "uniform"), (3e-5, "gvm"), (1e-4, "uniform"), (3e-4, "gvm")]):
        trial = store.create_trial(sweep, {"train.lr": lr, "allocation.allocator": allocator})
        store.update_trial(
            trial, status="finished", objective=0.3 + 0.1 * i + (0.05 if allocator == "gvm" else 0)
        )
        trials.append(trial)
    for trial in trials[:2]:
        run_id = store.create_run(name=f"trial {trial}", experiment="experiments/gvm/grpo.yaml",
                                  config=_config("grpo", "gvm", 0, trial), git_commit=None, versions={},
                                  seed=0, run_id=f"run-{trial}", sweep_id=sweep, trial_id=trial)  # fmt: skip
        store.finish_run(run_id, "finished")
    return trials


@pytest.fixture(scope="session")
def seeded() -> Callable[[str], dict[str, list[str]]]:
    """``seeded(url)`` fills the store at ``url`` as ``seed_store`` does."""
    return seed_store
