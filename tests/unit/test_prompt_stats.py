"""Per-prompt telemetry in the results store (SQLite files in tmp_path): round trip, idempotent writes,
bad rows, CSV export, the 0001 -> 0002 migration and `dibs export --table prompts`."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest
from alembic import command
from sqlalchemy import create_engine, insert, inspect

from dibs.platform.cli.main import main
from dibs.platform.core.metrics import PromptStat
from dibs.platform.runtime.recording import StoreRecorder
from dibs.platform.store import ResultsStore, StoreError, open_store
from dibs.platform.store.export import prompt_stats_to_csv
from dibs.platform.store.models import Metric, PromptStatRow, Run
from dibs.platform.store.versioning import LEGACY_VERSION_TABLE, alembic_config

pytestmark = pytest.mark.unit

RUN_ID = "run-20261127-101500-ef34ab"
# Logged in this order: step 2 first, and at step 2 "3+4=" before "1+1=", so that reading back by
# (step, insertion) differs from both logging order and prompt-text order.
STEP_2 = [
    PromptStat(prompt_id="3+4=", p_hat=0.5, g_hat=0.125, n_alloc=8, accepted=4, probed=True),
    PromptStat(prompt_id="1+1=", p_hat=math.nan, g_hat=math.nan, n_alloc=0, accepted=0, probed=False),
]
STEP_1 = [PromptStat(prompt_id="9-2=", p_hat=0.25, g_hat=math.inf, n_alloc=4, accepted=1, probed=True)]
EXPECTED = [
    {"step": 1, "prompt_id": "9-2=", "p_hat": 0.25, "g_hat": None,
     "n_alloc": 4, "accepted": 1, "probed": True},
    {"step": 2, "prompt_id": "3+4=", "p_hat": 0.5, "g_hat": 0.125,
     "n_alloc": 8, "accepted": 4, "probed": True},
    {"step": 2, "prompt_id": "1+1=", "p_hat": None, "g_hat": None,
     "n_alloc": 0, "accepted": 0, "probed": False},
]  # fmt: skip


def _new_run(store: ResultsStore) -> str:
    return store.create_run(
        name="demo", experiment="experiments/demo.yaml", config={}, git_commit=None, versions={}, seed=7,
        run_id=RUN_ID,
    )  # fmt: skip


def test_round_trip(store):
    run_id = _new_run(store)
    assert store.log_prompt_stats(run_id, 2, STEP_2) == 2
    assert store.log_prompt_stats(run_id, 1, STEP_1) == 1
    assert store.prompt_stats(run_id) == EXPECTED
    assert store.prompt_stats("run-20261127") == EXPECTED  # a unique prefix names the run
    run = store.get_run(run_id)
    assert run["prompt_stats"] == EXPECTED
    assert run["metrics"] == []


def test_log_is_idempotent(store, url, count_rows):
    run_id = _new_run(store)
    assert store.log_prompt_stats(run_id, 2, STEP_2) == 2
    assert store.log_prompt_stats(run_id, 2, STEP_2) == 0
    # A differing row for an existing (run, step, prompt) is not an overwrite; only the new key goes in.
    changed = PromptStat(prompt_id="3+4=", p_hat=0.9, g_hat=0.9, n_alloc=1, accepted=1, probed=False)
    fresh = PromptStat(prompt_id="5+5=", p_hat=0.75, g_hat=0.5, n_alloc=2, accepted=2, probed=False)
    assert store.log_prompt_stats(run_id, 2, [changed, fresh]) == 1
    assert store.prompt_stats(run_id) == [
        EXPECTED[1],
        EXPECTED[2],
        {"step": 2, "prompt_id": "5+5=", "p_hat": 0.75, "g_hat": 0.5,
         "n_alloc": 2, "accepted": 2, "probed": False},
    ]  # fmt: skip
    # The same prompt at another step is another row.
    assert store.log_prompt_stats(run_id, 3, [changed]) == 1
    assert store.log_prompt_stats(run_id, 4, []) == 0
    assert count_rows(url, PromptStatRow) == 4


def test_unknown_run(store, url):
    with pytest.raises(StoreError) as err:
        store.log_prompt_stats("nope", 1, STEP_1)
    assert str(err.value) == f"no run with id 'nope' in {url}"
    with pytest.raises(StoreError, match="no run with id 'nope'"):
        store.prompt_stats("nope")


AT_1 = "prompt stat at step 1, prompt '9-2=': "


@pytest.mark.parametrize(
    ("step", "row", "message"),
    [
        (-1, STEP_1[0], "prompt stat at step -1: step must be >= 0, got -1"),
        (1, PromptStat("9-2=", 0.25, 0.5, 2, 3, True), AT_1 + "accepted=3 exceeds n_alloc=2"),
        (1, PromptStat("9-2=", 0.25, 0.5, 2.5, 1, True), AT_1 + "n_alloc must be an integer, got 2.5"),
        (1, PromptStat("9-2=", 0.25, 0.5, 4, -1, True), AT_1 + "accepted must be >= 0, got -1"),
        (1, PromptStat("9-2=", "high", 0.5, 4, 1, True), AT_1 + "p_hat must be a number, got 'high'"),
        (1, PromptStat("", 0.25, 0.5, 4, 1, True),
         "prompt stat at step 1, prompt '': prompt_id must be a non-empty string"),
    ],
)  # fmt: skip
def test_bad_rows_are_refused_before_any_write(store, url, count_rows, step, row, message):
    run_id = _new_run(store)
    with pytest.raises(ValueError) as err:
        store.log_prompt_stats(run_id, step, [STEP_2[0], row])  # the good row is not written either
    assert str(err.value) == message
    assert count_rows(url, PromptStatRow) == 0


def test_csv_export():
    # Two rows as get_run returns them; a comma or quote in a prompt is quoted, None is an empty field.
    run = {
        "prompt_stats": [
            {"step": 1, "prompt_id": 'say "hi", 2+2=', "p_hat": 0.25, "g_hat": None,
             "n_alloc": 4, "accepted": 1, "probed": True},
            {"step": 2, "prompt_id": "1+1=", "p_hat": None, "g_hat": None, "n_alloc": 0, "accepted": 0,
             "probed": False},
        ]
    }  # fmt: skip
    assert prompt_stats_to_csv(run) == (
        "step,prompt_id,p_hat,g_hat,n_alloc,accepted,probed\n"
        '1,"say ""hi"", 2+2=",0.25,,4,1,1\n'
        "2,1+1=,,,0,0,0\n"
    )
    assert prompt_stats_to_csv({"prompt_stats": []}) == "step,prompt_id,p_hat,g_hat,n_alloc,accepted,probed\n"


def _database_at_0001(url: str) -> None:
    """A store as the previous dibs left it: schema 0001 with its revision in Alembic's default
    `alembic_version` table (versioning.py), one run with two metric rows."""
    legacy = alembic_config(url)
    legacy.attributes["version_table"] = LEGACY_VERSION_TABLE
    command.upgrade(legacy, "0001")
    moment = datetime(2026, 11, 26, 3, 53, 1, tzinfo=timezone.utc)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Run).values(
                id=RUN_ID, name="old", experiment="e.yaml", status="finished", config={}, git_commit=None,
                versions={}, seed=3, created_at=moment, started_at=moment, finished_at=moment, summary=None,
            ))  # fmt: skip
            conn.execute(insert(Metric), [
                {"run_id": RUN_ID, "step": s, "name": "eval/accuracy", "value": v,
                 "rollouts_consumed": 16 * s, "tokens_generated": 0, "wall_seconds": 0.0}
                for s, v in [(0, 0.5), (1, 0.75)]
            ])  # fmt: skip
    finally:
        engine.dispose()


def test_upgrade_from_0001_keeps_rows(url):
    _database_at_0001(url)
    with pytest.raises(StoreError) as err:
        open_store(url)  # without upgrade an old schema is refused, not changed
    assert str(err.value) == f"store {url} is at revision 0001, not 0004: run `dibs db upgrade`"
    with open_store(url, upgrade=True) as store:
        assert store.revision() == "0004"
        assert store.metric_series(RUN_ID, "eval/accuracy") == [(0, 0.5), (1, 0.75)]
        assert store.prompt_stats(RUN_ID) == []
        assert store.log_prompt_stats(RUN_ID, 1, STEP_1) == 1
        assert store.prompt_stats(RUN_ID) == EXPECTED[:1]
    with open_store(url) as store:  # at head now, so a plain open works
        assert store.get_run(RUN_ID)["name"] == "old"


def test_downgrade_drops_only_the_new_table(url, count_rows):
    _database_at_0001(url)
    open_store(url, upgrade=True).close()  # `dibs db upgrade`: the revision moves to dibs' own table
    command.downgrade(alembic_config(url), "0001")
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert tables == {"dibs_alembic_version", "runs", "metrics", "checkpoints"}
    finally:
        engine.dispose()
    assert count_rows(url, Metric) == 2


def test_cli_export_prompts(store, url, capsys):
    run_id = _new_run(store)
    store.log_prompt_stats(run_id, 2, STEP_2)
    store.log_prompt_stats(run_id, 1, STEP_1)
    assert main(["export", run_id, "--format", "csv", "--table", "prompts", "--db", url]) == 0
    assert capsys.readouterr().out == (
        "step,prompt_id,p_hat,g_hat,n_alloc,accepted,probed\n"
        "1,9-2=,0.25,,4,1,1\n"
        "2,3+4=,0.5,0.125,8,4,1\n"
        "2,1+1=,,,0,0,0\n"
    )
    assert main(["export", run_id, "--format", "json", "--table", "prompts", "--db", url]) == 0
    assert json.loads(capsys.readouterr().out) == EXPECTED
    assert main(["export", run_id, "--db", url]) == 0  # json of the whole run carries the rows too
    assert json.loads(capsys.readouterr().out)["prompt_stats"] == EXPECTED
    assert main(["export", run_id, "--format", "csv", "--db", url]) == 0  # metrics stay the default table
    assert capsys.readouterr().out == "step,rollouts_consumed,tokens_generated,wall_seconds,name,value\n"


def test_store_recorder_records_prompts(store):
    run_id = _new_run(store)
    recorder = StoreRecorder(store, run_id)
    recorder.record_prompts(1, STEP_1)
    recorder.record_prompts(1, STEP_1)  # a resumed step writes nothing twice
    assert store.prompt_stats(run_id) == EXPECTED[:1]
