"""Results store on SQLite files in tmp_path: round trips, idempotent writes, lookup, errors,
migrations and exports (concurrent writers: tests/integration/test_store_backends.py)."""

from __future__ import annotations

import math

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from dibs.platform.store import MetricRow, ResultsStore, StoreError, open_store
from dibs.platform.store.export import run_to_csv, run_to_json
from dibs.platform.store.models import Base, Metric
from dibs.platform.store.versioning import alembic_config, migration_context

pytestmark = pytest.mark.unit

RUN_ID = "run-20261126-035301-ab12cd"
ROWS = [
    MetricRow(
        step=1, name="train/loss", value=1.25, rollouts_consumed=16, tokens_generated=2048, wall_seconds=3.5
    ),
    MetricRow(
        step=0, name="eval/accuracy", value=0.5, rollouts_consumed=0, tokens_generated=0, wall_seconds=0.0
    ),
    MetricRow(
        step=1,
        name="eval/accuracy",
        value=0.75,
        rollouts_consumed=16,
        tokens_generated=2048,
        wall_seconds=3.5,
    ),
]


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'db' / 'dibs.db'}"


@pytest.fixture
def store(url):
    with ResultsStore(url) as opened:
        yield opened


def _new_run(store: ResultsStore, name: str = "demo", run_id: str | None = RUN_ID) -> str:
    return store.create_run(
        name=name,
        experiment="experiments/demo.yaml",
        config={"lr": 0.001},
        git_commit="abc123",
        versions={"torch": "2.4.0"},
        seed=7,
        run_id=run_id,
    )


def test_round_trip(store):
    run_id = _new_run(store)
    assert store.log_metrics(run_id, ROWS) == 3
    store.finish_run(run_id, "finished", {"final": 0.75})
    run = store.get_run(run_id)
    assert run["status"] == "finished"
    assert run["started"].endswith("+00:00") and run["finished"].endswith("+00:00")
    assert (run["seed"], run["git_commit"], run["config"], run["versions"], run["summary"]) == (
        7, "abc123", {"lr": 0.001}, {"torch": "2.4.0"}, {"final": 0.75},
    )  # fmt: skip
    # Ordered by step, then name.
    assert [(m["step"], m["name"], m["value"]) for m in run["metrics"]] == [
        (0, "eval/accuracy", 0.5),
        (1, "eval/accuracy", 0.75),
        (1, "train/loss", 1.25),
    ]
    assert run["metrics"][2] == {
        "step": 1, "rollouts_consumed": 16, "tokens_generated": 2048, "wall_seconds": 3.5,
        "name": "train/loss", "value": 1.25,
    }  # fmt: skip
    assert store.metric_series(run_id, "eval/accuracy") == [(0, 0.5), (1, 0.75)]


def test_generated_id_and_list_order(store):
    first = _new_run(store, name="a", run_id=None)
    second = _new_run(store, name="b", run_id=None)
    assert first.startswith("run-") and len(first) == len("run-20261126-035301-ab12cd")
    runs = store.list_runs()
    assert [r["id"] for r in runs] == [second, first]  # newest first
    assert set(runs[0]) == {
        "id",
        "name",
        "experiment",
        "status",
        "started",
        "finished",
        "seed",
        "sweep_id",
        "trial_id",
    }
    assert runs[0]["status"] == "running" and runs[0]["finished"] is None


def test_log_is_idempotent(store, url, count_rows):
    run_id = _new_run(store)
    assert store.log_metrics(run_id, ROWS) == 3
    assert store.log_metrics(run_id, ROWS) == 0
    assert count_rows(url, Metric) == 3
    # A differing value for an existing key is not an overwrite; the new key alone is inserted.
    changed = MetricRow(
        step=0, name="eval/accuracy", value=0.9, rollouts_consumed=1, tokens_generated=1, wall_seconds=1.0
    )
    fresh = MetricRow(
        step=2, name="eval/accuracy", value=0.8, rollouts_consumed=32, tokens_generated=4096, wall_seconds=7.0
    )
    assert store.log_metrics(run_id, [changed, fresh]) == 1
    assert store.metric_series(run_id, "eval/accuracy") == [(0, 0.5), (1, 0.75), (2, 0.8)]
    assert count_rows(url, Metric) == 4
    assert store.log_metrics(run_id, []) == 0


def test_non_finite_value_is_kept_as_null(store):
    run_id = _new_run(store)
    rows = [MetricRow(step=s, name="train/loss", value=v, rollouts_consumed=0, tokens_generated=0,
                      wall_seconds=0.0) for s, v in [(1, math.nan), (2, math.inf)]]  # fmt: skip
    assert store.log_metrics(run_id, rows) == 2
    assert [m["value"] for m in store.get_run(run_id)["metrics"]] == [None, None]
    series = store.metric_series(run_id, "train/loss")
    assert [s for s, _ in series] == [1, 2] and all(math.isnan(v) for _, v in series)


def test_checkpoints_are_idempotent(store):
    run_id = _new_run(store)
    assert store.add_checkpoint(run_id, 10, "/ckpt/10") is True
    assert store.add_checkpoint(run_id, 10, "/elsewhere/10") is False
    assert store.checkpoints(run_id) == [(10, "/ckpt/10")]


def test_lookup_by_prefix_and_name(store):
    a = _new_run(store, name="alpha", run_id="run-1-aaa")
    _new_run(store, name="beta", run_id="run-1-abb")
    _new_run(store, name="beta", run_id="run-2-ccc")
    assert store.get_run("run-1-aa")["id"] == a
    assert store.get_run("run-2")["id"] == "run-2-ccc"
    assert store.get_run("alpha")["id"] == a
    with pytest.raises(StoreError, match="matches 2 runs"):
        store.get_run("run-1-a")
    with pytest.raises(StoreError, match="matches 2 runs"):
        store.get_run("beta")
    # LIKE wildcards in a reference are literal characters.
    with pytest.raises(StoreError, match="no run"):
        store.get_run("run-_-aaa")


def test_unknown_run(store, url):
    with pytest.raises(StoreError) as err:
        store.get_run("nope")
    assert str(err.value) == f"no run with id 'nope' in {url}"
    with pytest.raises(StoreError, match="no run with id 'nope'"):
        store.log_metrics("nope", ROWS)
    with pytest.raises(StoreError, match="no run with id 'nope'"):
        store.finish_run("nope", "failed")


def test_duplicate_id_and_bad_status(store):
    _new_run(store)
    with pytest.raises(StoreError, match="already exists"):
        _new_run(store)
    with pytest.raises(StoreError, match="is not one of"):
        store.finish_run(RUN_ID, "done")


@pytest.mark.parametrize(
    "bad",
    [
        "nosuchdb://x",
        "sqlite:////proc/nope/x.db",
        "this is :// not a url",
        "postgresql://user@127.0.0.1:1/dibs",  # nothing listens on port 1 (or no driver)
    ],
)
def test_bad_url(bad):
    with pytest.raises(StoreError) as err:
        ResultsStore(bad)
    message = str(err.value)
    assert bad in message and "\n" not in message


def test_directory_as_database(tmp_path):
    bad = f"sqlite:///{tmp_path}"
    with pytest.raises(StoreError, match="cannot open store") as err:
        ResultsStore(bad)
    assert bad in str(err.value)


def test_reopen_keeps_rows(url):
    with ResultsStore(url) as store:
        run_id = _new_run(store)
        store.log_metrics(run_id, ROWS)
    with ResultsStore(url) as store:
        assert store.revision() == "0004"
        assert len(store.get_run(run_id)["metrics"]) == 3
        assert store.log_metrics(run_id, ROWS) == 0


def test_database_at_0001_reports_head(url, tmp_path):
    (tmp_path / "db").mkdir()
    command.upgrade(alembic_config(url), "0001")  # as an old dibs would have left it
    with ResultsStore(url) as store:  # opening it again upgrades it to head
        run_id = _new_run(store)
    with ResultsStore(url) as store:
        assert store.get_run(run_id)["id"] == run_id
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert migration_context(conn).get_current_revision() == "0004"
    finally:
        engine.dispose()
    assert ScriptDirectory.from_config(alembic_config(url)).get_heads() == ["0004"]


def test_migrations_match_models(store, url):
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(migration_context(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_no_upgrade_creates_empty_database_but_refuses_an_old_one(url):
    # A brand-new database gets its schema through the migrations (at head) ...
    with ResultsStore(url, upgrade=False) as store:
        assert store.revision() == "0004"
        run_id = store.create_run(
            name="r", experiment="e.yaml", config={}, git_commit=None, versions={}, seed=0
        )
    # ... but one at another revision is left alone until `dibs db upgrade`.
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE dibs_alembic_version SET version_num = '0000'"))
    engine.dispose()
    with pytest.raises(StoreError, match="dibs db upgrade"):
        ResultsStore(url, upgrade=False)
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE dibs_alembic_version SET version_num = '0004'"))
    engine.dispose()
    with ResultsStore(url, upgrade=False) as store:
        assert [r["id"] for r in store.list_runs()] == [run_id]  # nothing lost


def test_open_store_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store(None) as store:
        assert store.url == "sqlite:///runs/dibs.db"
    assert (tmp_path / "runs" / "dibs.db").is_file()
    with open_store(str(tmp_path / "bare.db")) as store:
        assert store.list_runs() == []
    assert (tmp_path / "bare.db").is_file()


EXPECTED_JSON = """{
  "config": {
    "lr": 0.001
  },
  "experiment": "experiments/demo.yaml",
  "finished": "2026-11-26T04:00:00+00:00",
  "git_commit": "abc123",
  "id": "run-20261126-035301-ab12cd",
  "metrics": [
    {
      "name": "eval/accuracy",
      "rollouts_consumed": 0,
      "step": 0,
      "tokens_generated": 0,
      "value": 0.5,
      "wall_seconds": 0.0
    },
    {
      "name": "eval/accuracy",
      "rollouts_consumed": 16,
      "step": 1,
      "tokens_generated": 2048,
      "value": 0.75,
      "wall_seconds": 3.5
    },
    {
      "name": "train/loss",
      "rollouts_consumed": 16,
      "step": 1,
      "tokens_generated": 2048,
      "value": 1.25,
      "wall_seconds": 3.5
    }
  ],
  "name": "demo",
  "prompt_stats": [],
  "seed": 7,
  "started": "2026-11-26T03:53:01+00:00",
  "status": "finished",
  "summary": {
    "final": 0.75
  },
  "sweep_id": null,
  "trial_id": null,
  "versions": {
    "torch": "2.4.0"
  }
}"""

EXPECTED_CSV = """step,rollouts_consumed,tokens_generated,wall_seconds,name,value
0,0,0,0.0,eval/accuracy,0.5
1,16,2048,3.5,eval/accuracy,0.75
1,16,2048,3.5,train/loss,1.25
"""


def test_export(store):
    run_id = _new_run(store)
    store.log_metrics(run_id, ROWS)
    store.finish_run(run_id, "finished", {"final": 0.75})
    run = store.get_run(run_id)
    # Timestamps are "now"; pin them so the text is fixed.
    run.update(started="2026-11-26T03:53:01+00:00", finished="2026-11-26T04:00:00+00:00")
    assert run_to_json(run) == EXPECTED_JSON
    assert run_to_csv(run) == EXPECTED_CSV
