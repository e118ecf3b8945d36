"""Read commands never write, and nothing makes a store by accident: `runs`, `sweeps`, `export` and
`dashboard` on a foreign SQLite file, a missing path or an empty file end in one error line with the
file's bytes (and its folder) as they were; `run`, `resume` and `db upgrade` refuse a foreign database;
an invalid experiment or sweep YAML is refused before its --db is made."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from dibs.dashboards.app import create_app
from dibs.platform.cli.main import main
from dibs.platform.store import ResultsStore, StoreError, open_store

pytestmark = pytest.mark.unit

READ_COMMANDS = [["runs"], ["runs", "--json"], ["sweeps"], ["export", "run-x"], ["dashboard"]]
FOREIGN = "is not a dibs results store (no dibs tables / alembic revision)"
EMPTY = "is an empty database, not a dibs results store"


def _foreign(path: Path) -> Path:
    """A SQLite file of some other program: one table with one row."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO notes (text) VALUES ('mine')")
    conn.close()
    return path


def _state(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` (a -wal or -shm file appearing counts) with the hash of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _one_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured
    assert captured.err.startswith("dibs: error: ")
    return captured.err.strip()


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_read_commands_refuse_a_foreign_database_and_leave_it_alone(tmp_path, capsys, command):
    path = _foreign(tmp_path / "x.sqlite")
    before = _state(tmp_path)
    assert main([*command, "--db", str(path)]) == 2
    assert _one_error(capsys) == f"dibs: error: store sqlite:///{path} {FOREIGN}"
    assert _state(tmp_path) == before


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_read_commands_refuse_a_missing_path_and_make_nothing(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--db", "tmp/nope/x.db"]) == 2
    assert (
        _one_error(capsys)
        == "dibs: error: cannot open store sqlite:///tmp/nope/x.db: no database file 'tmp/nope/x.db'"
    )
    assert list(tmp_path.iterdir()) == []  # not even tmp/


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_read_commands_refuse_an_empty_file(tmp_path, capsys, command):
    path = tmp_path / "empty.db"
    path.touch()
    assert main([*command, "--db", str(path)]) == 2
    assert (
        _one_error(capsys) == f"dibs: error: store sqlite:///{path} {EMPTY} "
        "(`dibs run`, `dibs sweep` or `dibs db upgrade` make one)"
    )
    assert _state(tmp_path) == {"empty.db": hashlib.sha256(b"").hexdigest()}


def test_read_commands_default_store_is_not_made(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 2
    assert "no database file 'runs/dibs.db'" in _one_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_create_app_refuses_what_is_not_a_store(tmp_path):
    foreign = _foreign(tmp_path / "x.sqlite")
    (tmp_path / "empty.db").touch()
    before = _state(tmp_path)
    for path, reason in [(foreign, FOREIGN), (tmp_path / "empty.db", EMPTY),
                         (tmp_path / "nope" / "x.db", "no database file")]:  # fmt: skip
        with pytest.raises(StoreError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            create_app(f"sqlite:///{path}")
    assert _state(tmp_path) == before


def test_read_commands_still_read_a_store(tmp_path, capsys, url, seeded):
    seeded(url)
    path = Path(url.removeprefix("sqlite:///"))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["runs", "--db", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9 and lines[0].split()[:2] == ["run-sweep-1-t0002", "finished"]  # newest first
    assert main(["runs", "--json", "--db", url]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert list(listed[0]) == ["id", "name", "experiment", "status", "started", "finished", "seed",
                               "sweep_id", "trial_id"]  # fmt: skip
    assert main(["sweeps", "--json", "--db", url]) == 0
    (sweep,) = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in sweep["trials"]] == [f"sweep-1-t000{i}" for i in range(1, 5)]
    assert sweep["trials"][1]["runs"] == [{"run": "run-sweep-1-t0002", "seed": 0, "status": "finished",
                                           "final": {}, "rollouts_consumed": None}]  # fmt: skip
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@pytest.mark.parametrize(
    "command", [["run", "experiments/smoke.yaml"], ["db", "upgrade"], ["resume", "run-x"]], ids=" ".join
)
def test_writers_refuse_a_foreign_database(tmp_path, capsys, command):
    path = _foreign(tmp_path / "x.sqlite")
    before = _state(tmp_path)
    assert main([*command, "--db", str(path)]) == 2
    assert _one_error(capsys) == f"dibs: error: store sqlite:///{path} {FOREIGN}"
    assert _state(tmp_path) == before


def test_resume_never_makes_a_store(tmp_path, capsys):
    assert main(["resume", "run-x", "--db", str(tmp_path / "nope" / "x.db")]) == 2
    assert "no database file" in _one_error(capsys)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty.db").touch()
    assert main(["resume", "run-x", "--db", str(tmp_path / "empty.db")]) == 2
    assert EMPTY in _one_error(capsys)
    assert (tmp_path / "empty.db").stat().st_size == 0


def test_an_empty_database_becomes_a_store_for_writers(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    with open_store(str(path)) as store:
        assert store.revision() is not None and store.list_runs() == []
    with pytest.raises(StoreError, match=FOREIGN.replace("(", r"\(").replace(")", r"\)")):
        ResultsStore(f"sqlite:///{_foreign(tmp_path / 'x.sqlite')}")


def test_invalid_yaml_makes_no_store(tmp_path, capsys):
    bad_run = tmp_path / "bad.yaml"
    bad_run.write_text("algorithm: nope\n")
    bad_sweep = tmp_path / "sweep.yaml"
    bad_sweep.write_text("base: ../../experiments/smoke.yaml\nspace: {}\nsearch: {bogus: 1}\n")
    db = tmp_path / "tmp" / "new.db"
    assert main(["run", str(bad_run), "--db", str(db)]) == 2
    assert _one_error(capsys).startswith(f"dibs: error: {bad_run}")
    assert main(["sweep", str(bad_sweep), "--db", str(db), "--output-dir", str(tmp_path / "out")]) == 2
    assert _one_error(capsys).startswith(f"dibs: error: {bad_sweep}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "sweep.yaml"]  # no tmp/, no out/
    # `dibs submit` of the sweep: refused before the store is opened or a cluster is asked
    assert main(["submit", str(bad_sweep), "--address", "http://127.0.0.1:1", "--db", str(db)]) == 2
    assert _one_error(capsys).startswith(f"dibs: error: {bad_sweep}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "sweep.yaml"]
