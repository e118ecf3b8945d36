"""The results store on each database it supports: SQLite (integration tier) and a real PostgreSQL
server (services tier), through the ``db_url`` fixture of tests/conftest.py.

Eight concurrent writers lose no row, and a database left at an older schema revision with rows in it
upgrades with `dibs db upgrade` keeping every one.
"""

from __future__ import annotations

import threading

import pytest
from alembic import command
from sqlalchemy import create_engine, insert, select

from dibs.platform.cli.main import main
from dibs.platform.core.metrics import PromptStat
from dibs.platform.store import MetricRow, ResultsStore, StoreError, open_store
from dibs.platform.store.models import Checkpoint, Evaluation, Experiment, Metric, PromptStatRow, Run
from dibs.platform.store.versioning import alembic_config

WRITERS, ROWS = 8, 40


def _writer(url: str, worker: int, shared_run: str) -> None:
    with ResultsStore(url) as own:  # each writer opens its own store (engine, pool, migration check)
        # Every writer creates a run of the same experiment at once: one experiments row must result.
        run_id = own.create_run(name=f"w{worker}", experiment="experiments/shared.yaml", config={"w": worker},
                                git_commit=None, versions={}, seed=worker,
                                run_id=f"run-w{worker}")  # fmt: skip
        rows = [MetricRow(step=s, name=f"w{worker}", value=float(s), rollouts_consumed=s, tokens_generated=s,
                          wall_seconds=0.0) for s in range(ROWS)]  # fmt: skip
        for i in range(0, ROWS, 10):  # several transactions per writer, interleaved with the others
            assert own.log_metrics(shared_run, rows[i : i + 10]) == 10
            assert own.log_metrics(shared_run, rows[i : i + 10]) == 0  # idempotent under contention too
        stats = [PromptStat(prompt_id=f"p{worker}", p_hat=0.5, g_hat=1.0, n_alloc=4, accepted=2, probed=True)]
        assert own.log_prompt_stats(run_id, 1, stats) == 1
        assert own.record_evaluation(run_id, 0, "held-out", 8, 1.0, 0.5, 0.75, 100) is True


def test_concurrent_writers_lose_no_row(db_url, count_rows):
    with ResultsStore(db_url) as store:
        shared = store.create_run(name="shared", experiment="experiments/shared.yaml", config={},
                                  git_commit=None, versions={}, seed=0)  # fmt: skip
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            start.wait()
            _writer(db_url, worker, shared)
        except BaseException as exc:  # noqa: BLE001 - reported on the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert count_rows(db_url, Metric) == WRITERS * ROWS
    assert count_rows(db_url, Run) == WRITERS + 1
    assert count_rows(db_url, Experiment) == 1
    assert count_rows(db_url, PromptStatRow) == WRITERS
    assert count_rows(db_url, Evaluation) == WRITERS


def _old_database(url: str, revision: str) -> None:
    """A store as an older dibs left it: schema at ``revision``, with a run, metric rows, a checkpoint and
    (from 0002) per-prompt rows, written with the columns that revision had."""
    command.upgrade(alembic_config(url), revision)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for i, experiment in enumerate(
                ["experiments/a.yaml", "experiments/b.yaml", "experiments/a.yaml"]
            ):
                when = f"2026-11-2{i}T10:00:00+00:00"
                conn.execute(insert(Run).values(
                    id=f"old-{i}", name=f"old {i}", experiment=experiment, status="finished", config={"i": i},
                    git_commit=None, versions={}, seed=i, created_at=_utc(when), started_at=_utc(when),
                    finished_at=_utc(when), summary=None,
                ))  # fmt: skip
                conn.execute(insert(Metric), [
                    {"run_id": f"old-{i}", "step": s, "name": "eval/accuracy", "value": s / 10,
                     "rollouts_consumed": 8 * s, "tokens_generated": 80 * s, "wall_seconds": float(s)}
                    for s in range(5)
                ])  # fmt: skip
                conn.execute(
                    insert(Checkpoint).values(
                        run_id=f"old-{i}", step=4, path=f"/c/{i}", created_at=_utc(when)
                    )
                )
                if revision >= "0002":
                    conn.execute(insert(PromptStatRow).values(run_id=f"old-{i}", step=1, prompt_id="1+1=",
                                                              p_hat=0.5, g_hat=None, n_alloc=4, accepted=2,
                                                              probed=True))  # fmt: skip
    finally:
        engine.dispose()


def _utc(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


@pytest.mark.parametrize("revision", ["0001", "0002"])
def test_old_database_upgrades_keeping_rows(db_url, revision, count_rows, capsys):
    _old_database(db_url, revision)
    tables = (Run, Metric, Checkpoint) + ((PromptStatRow,) if revision >= "0002" else ())
    before = {model: count_rows(db_url, model) for model in tables}
    with pytest.raises(StoreError, match="run `dibs db upgrade`"):
        open_store(db_url)  # never silently changed, let alone recreated
    assert main(["db", "upgrade", "--db", db_url]) == 0
    assert "schema at head" in capsys.readouterr().out
    assert {model: count_rows(db_url, model) for model in before} == before
    with open_store(db_url) as store:
        assert store.revision() == "0004"
        run = store.get_run("old-2")
        assert (run["name"], run["config"], run["finished"]) == (
            "old 2",
            {"i": 2},
            "2026-11-22T10:00:00+00:00",
        )
        assert [m["value"] for m in run["metrics"]] == [0.0, 0.1, 0.2, 0.3, 0.4]
        assert store.checkpoints("old-0") == [(4, "/c/0")]
        store.log_metrics("old-0", [MetricRow(4, "eval/accuracy", 0.9, 32, 320, 4.0)])  # still idempotent
        assert store.metric_series("old-0", "eval/accuracy")[-1] == (4, 0.4)
    # The experiments the old runs named became rows, and each run points at its own.
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = select(Run.id, Experiment.name).join(Experiment, Experiment.id == Run.experiment_id)
            pairs = conn.execute(query.order_by(Run.id)).all()
    finally:
        engine.dispose()
    assert [tuple(p) for p in pairs] == [("old-0", "experiments/a.yaml"), ("old-1", "experiments/b.yaml"),
                                         ("old-2", "experiments/a.yaml")]  # fmt: skip
    assert main(["db", "upgrade", "--db", db_url]) == 0  # at head: a second upgrade changes nothing
    assert count_rows(db_url, Experiment) == 2
