"""Sweeps, trials, evaluations and experiments in the results store (SQLite in tmp_path), and the
read-only reader the dashboard and exports use."""

from __future__ import annotations

import math

import pytest
import sqlalchemy
from sqlalchemy import create_engine, func, select

from dibs.platform.store import ResultsStore, StoreError
from dibs.platform.store.models import Experiment
from dibs.platform.store.reader import StoreReader, open_reader

pytestmark = pytest.mark.unit


def _run(store: ResultsStore, run_id: str, experiment: str = "e.yaml", **tags: str) -> str:
    return store.create_run(name=run_id, experiment=experiment, config={}, git_commit=None, versions={},
                            seed=0, run_id=run_id, **tags)  # fmt: skip


def test_sweep_trials_and_tagged_runs(store, url):
    sweep = store.create_sweep(name="lr", objective="eval/accuracy", space={"train.lr": [1e-5, 1e-4]},
                               experiment="e.yaml")  # fmt: skip
    assert sweep.startswith("sweep-")
    first = store.create_trial(sweep, {"train.lr": 1e-5})
    second = store.create_trial(sweep, {"train.lr": 1e-4}, trial_id="custom")
    assert (first, second) == (f"{sweep}-t0001", "custom")
    store.update_trial(first, status="running")
    store.update_trial(first, status="finished", objective=0.5)
    store.update_trial(second, objective=math.nan)  # a non-finite objective is kept as NULL
    _run(store, "r1", sweep_id=sweep, trial_id=first)
    trials = store.trials(sweep)
    assert [(t["id"], t["status"], t["objective"]) for t in trials] == [
        (first, "finished", 0.5),
        ("custom", "pending", None),
    ]
    assert trials[0]["finished"] is not None and trials[1]["finished"] is None
    assert trials[0]["params"] == {"train.lr": 1e-5}
    [listed] = store.sweeps()
    assert (listed["id"], listed["experiment"], listed["trials"], listed["mode"]) == (
        sweep,
        "e.yaml",
        2,
        "max",
    )
    with open_reader(url) as reader:
        [run] = reader.runs(sweep_id=sweep)
        assert (run["id"], run["sweep_id"], run["trial_id"]) == ("r1", sweep, first)
        assert reader.runs(sweep_id="other") == []


def test_sweep_errors(store):
    with pytest.raises(StoreError, match="sweep mode 'best' is not one of max, min"):
        store.create_sweep(name="s", objective="eval/accuracy", mode="best")
    store.create_sweep(name="s", objective="eval/accuracy", sweep_id="s1")
    with pytest.raises(StoreError, match="already exists"):
        store.create_sweep(name="s", objective="eval/accuracy", sweep_id="s1")
    with pytest.raises(StoreError, match="no sweep with id 'nope'"):
        store.create_trial("nope", {})
    trial = store.create_trial("s1", {})
    with pytest.raises(StoreError, match="already exists"):
        store.create_trial("s1", {}, trial_id=trial)
    with pytest.raises(StoreError, match="trial status 'done' is not one of"):
        store.update_trial(trial, status="done")
    with pytest.raises(StoreError, match="no trial with id 'nope'"):
        store.update_trial("nope", status="failed")
    # Tags must name an existing sweep and one of its trials, on SQLite too (which leaves foreign keys alone).
    with pytest.raises(StoreError, match="no sweep with id 'nope'"):
        _run(store, "r", sweep_id="nope")
    with pytest.raises(StoreError, match="no trial with id 'nope' in sweep 's1'"):
        _run(store, "r", sweep_id="s1", trial_id="nope")
    with pytest.raises(StoreError, match="needs its sweep_id"):
        _run(store, "r", trial_id=trial)


def test_one_experiment_row_per_name(store, url):
    _run(store, "a")
    _run(store, "b")
    _run(store, "c", experiment="other.yaml")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = conn.execute(select(Experiment.name).order_by(Experiment.name)).scalars().all()
    finally:
        engine.dispose()
    assert names == ["e.yaml", "other.yaml"]


def test_record_evaluation(store):
    run_id = _run(store, "r")
    assert store.record_evaluation(run_id, 0, "held-out", 8, 1.0, 0.25, 0.5, 400) is True
    assert store.record_evaluation(run_id, 0, "held-out", 8, 1.0, 0.99, 0.99, 1) is False  # kept as it was
    assert store.record_evaluation(run_id, 0, "held-out", 1, 0.0, math.nan, None, 400) is True
    assert store.evaluations(run_id) == [
        {"step": 0, "set_name": "held-out", "k": 1, "temperature": 0.0, "mean_at_k": None, "pass_at_k": None,
         "n_problems": 400},
        {"step": 0, "set_name": "held-out", "k": 8, "temperature": 1.0, "mean_at_k": 0.25, "pass_at_k": 0.5,
         "n_problems": 400},
    ]  # fmt: skip
    with pytest.raises(ValueError, match="k must be >= 1"):
        store.record_evaluation(run_id, 1, "held-out", 0, 1.0, 0.5, 0.5, 10)
    with pytest.raises(ValueError, match="step must be an integer"):
        store.record_evaluation(run_id, 1.5, "held-out", 8, 1.0, 0.5, 0.5, 10)
    with pytest.raises(ValueError, match="set_name must be a non-empty string"):
        store.record_evaluation(run_id, 1, "", 8, 1.0, 0.5, 0.5, 10)
    with pytest.raises(StoreError, match="no run with id 'nope'"):
        store.record_evaluation("nope", 1, "held-out", 8, 1.0, 0.5, 0.5, 10)


def test_reader_is_read_only(store, url):
    _run(store, "r")
    with open_reader(url) as reader:
        assert reader.get_run("r")["id"] == "r"
        with (
            reader._engine.connect() as conn,
            pytest.raises(sqlalchemy.exc.OperationalError, match="readonly"),
        ):
            conn.execute(sqlalchemy.text("DELETE FROM runs"))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(sqlalchemy.table("runs"))).scalar_one() == 1
    finally:
        engine.dispose()


def test_reader_refuses_missing_and_old_stores(tmp_path, url, store):
    with pytest.raises(StoreError, match="no database file"):
        StoreReader(f"sqlite:///{tmp_path / 'nope.db'}")
    store.close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE dibs_alembic_version SET version_num = '0002'"))
    engine.dispose()
    with pytest.raises(StoreError, match=r"is at revision 0002, not 0004: run `dibs db upgrade`"):
        StoreReader(url)
