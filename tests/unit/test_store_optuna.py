"""A sweep keeps its Optuna study in the results database itself. Optuna's RDB storage keeps
its own revision in `alembic_version` and its own `trials` table, so dibs keeps its revision in
`dibs_alembic_version` and its trials in `sweep_trials`; a database from before that move (revision in
`alembic_version`) is adopted with every row kept."""

import optuna
import pytest
import sqlalchemy
from alembic import command

from dibs.platform.store import open_store
from dibs.platform.store.versioning import LEGACY_VERSION_TABLE, VERSION_TABLE, alembic_config

pytestmark = pytest.mark.unit


def new_run(store) -> str:
    return store.create_run(name="r", experiment="e.yaml", config={}, git_commit=None, versions={}, seed=0)


def tables(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def study_roundtrip(url: str, name: str) -> None:
    study = optuna.create_study(
        study_name=name, storage=optuna.storages.RDBStorage(url), direction="maximize"
    )
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 2


def test_store_and_optuna_share_one_database_both_ways(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path}/dibs.db"
    with open_store(url) as store:
        run_id = new_run(store)
        sweep = store.create_sweep(name="s", experiment="e.yaml", objective="eval/accuracy", mode="max")
        store.create_trial(sweep, {"x": 1})
    study_roundtrip(url, "after-store")
    assert {VERSION_TABLE, LEGACY_VERSION_TABLE, "trials", "sweep_trials", "runs", "studies"} <= tables(url)
    with open_store(url) as store:  # Optuna's alembic_version row is not dibs': the store opens at head
        assert store.get_run(run_id)["id"] == run_id and len(store.trials(sweep)) == 1
    study_roundtrip(url, "second")  # and Optuna still opens its own schema


def test_a_database_of_the_old_layout_is_adopted_and_then_takes_a_study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path}/old.db"
    legacy = alembic_config(url)
    legacy.attributes["version_table"] = LEGACY_VERSION_TABLE  # as dibs' revisions 0001-0003 kept it
    command.upgrade(legacy, "0002")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO runs (id, name, experiment, status, config, versions, seed, created_at) "
                "VALUES ('run-old', 'old', 'e.yaml', 'finished', '{}', '{}', 0, '2026-11-26 00:00:00')"
            )
        )
    engine.dispose()
    with open_store(url, upgrade=True) as store:
        assert store.get_run("run-old")["name"] == "old"
        assert store.revision() == store_head()
    assert VERSION_TABLE in tables(url) and LEGACY_VERSION_TABLE not in tables(url)
    study_roundtrip(url, "fresh")


def store_head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
