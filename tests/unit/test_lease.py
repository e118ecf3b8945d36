"""Run leases: one owner at a time, `dibs resume` refuses a live lease (and `--force` too), takes an expired
one only with `--force`, atomically; the heartbeat renews it and stops a driver whose lease was taken; a
store at revision 0003 upgrades with its rows (kill and resume of a real run:
tests/integration/test_signals.py)."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy
from alembic import command

from dibs.platform.cli import main as cli
from dibs.platform.core.config import config_to_dict, load_config
from dibs.platform.jobs.jobs import retry_entrypoint
from dibs.platform.runtime.heartbeat import Heartbeat, Stopped, stop_signals
from dibs.platform.store import ResultsStore, StoreError, open_store
from dibs.platform.store.lease import LeaseHeld
from dibs.platform.store.versioning import alembic_config

pytestmark = pytest.mark.unit

OTHER = "elsewhere:4242:cafe"


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'dibs.db'}"


def _run(store: ResultsStore, owner: str | None = OTHER, seconds: float = 60.0) -> str:
    cfg = config_to_dict(load_config("experiments/smoke.yaml"))
    return store.create_run(
        name="leased",
        experiment="experiments/smoke.yaml",
        config=cfg,
        git_commit=None,
        versions={},
        seed=0,
        owner=owner,
        lease_seconds=seconds,
    )


def _expire(url: str, run_id: str) -> None:
    engine = sqlalchemy.create_engine(url)
    past = (datetime.now(timezone.utc) - timedelta(seconds=5)).strftime("%Y-%m-%d %H:%M:%S.%f")
    with engine.begin() as conn:  # as a crashed owner leaves it: no beat for longer than the lease
        conn.execute(
            sqlalchemy.text("UPDATE runs SET lease_expires = :t WHERE id = :id"), {"t": past, "id": run_id}
        )
    engine.dispose()


def _row(store: ResultsStore, run_id: str) -> tuple[dict, dict]:
    return store.get_run(run_id), store.lease(run_id)


def test_create_run_takes_the_lease(url):
    with open_store(url) as store:
        run_id = _run(store)
        lease = store.lease(run_id)
        assert lease["owner"] == OTHER
        assert 55 < (lease["lease_expires"] - datetime.now(timezone.utc)).total_seconds() <= 60
        assert store.lease(_run(store, owner=None)) == {
            "owner": None,
            "lease_expires": None,
            "heartbeat_at": None,
        }


def test_live_lease_is_refused_with_and_without_force(url):
    with open_store(url) as store:
        run_id = _run(store)
        before = _row(store, run_id)
        for force, tail in (
            (False, "; a second process must not write it: stop that one first"),
            (True, "; --force takes over only an expired lease, and this one is live"),
        ):
            with pytest.raises(LeaseHeld) as err:
                store.take_lease(run_id, "me:1:aa", force=force)
            assert str(err.value).startswith(f"run {run_id} is running (owner {OTHER}, lease until 20")
            assert tail in str(err.value)
        assert _row(store, run_id) == before  # nothing written


def test_expired_lease_needs_force(url):
    with open_store(url) as store:
        run_id = _run(store)
        _expire(url, run_id)
        with pytest.raises(
            LeaseHeld,
            match=rf"which has expired: if that process is dead, `dibs resume {run_id} "
            r"--force` takes the run over$",
        ):
            store.take_lease(run_id, "me:1:aa")
        store.take_lease(run_id, "me:1:aa", force=True)
        assert store.lease(run_id)["owner"] == "me:1:aa" and store.get_run(run_id)["status"] == "running"


def test_only_the_holder_renews_and_releases(url):
    with open_store(url) as store:
        run_id = _run(store, seconds=1.0)
        first = store.lease(run_id)["lease_expires"]
        assert store.renew_lease(run_id, "me:1:aa", 60.0) is False
        assert store.release_run(run_id, "me:1:aa", "stopped") is False
        assert store.get_run(run_id)["status"] == "running" and store.lease(run_id)["lease_expires"] == first
        assert store.renew_lease(run_id, OTHER, 60.0) is True
        assert store.lease(run_id)["lease_expires"] > first
        assert store.release_run(run_id, OTHER, "stopped") is True
        assert store.get_run(run_id)["status"] == "stopped"
        assert store.lease(run_id)["owner"] is None and store.lease(run_id)["lease_expires"] is None
        store.take_lease(run_id, "me:1:aa")  # a stopped run is free: no --force needed
        assert store.lease(run_id)["owner"] == "me:1:aa"


def test_finished_run_is_not_taken(url):
    with open_store(url) as store:
        run_id = _run(store)
        store.release_run(run_id, OTHER, "finished", {"final": {}})
        with pytest.raises(StoreError, match=f"^run {run_id} already finished; nothing to resume$"):
            store.take_lease(run_id, "me:1:aa", force=True)


def test_concurrent_takeovers_have_one_winner(url):
    with open_store(url) as store:
        run_id = _run(store)
    _expire(url, run_id)
    stores = [ResultsStore(url) for _ in range(4)]  # one engine each, as separate processes would have
    start, won, refused = threading.Barrier(len(stores)), [], []

    def take(store: ResultsStore, owner: str) -> None:
        start.wait()
        try:
            store.take_lease(run_id, owner, force=True)
            won.append(owner)
        except LeaseHeld:
            refused.append(owner)

    threads = [threading.Thread(target=take, args=(s, f"p:{i}:x")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 3
    assert stores[0].lease(run_id)["owner"] == won[0]
    for s in stores:
        s.close()


def test_heartbeat_renews_and_stops_a_driver_whose_lease_was_taken(url):
    with open_store(url) as store:
        run_id = _run(store, owner="me:1:aa", seconds=0.5)
        with Heartbeat(store, run_id, "me:1:aa", every=0.05, seconds=0.5):
            first = store.lease(run_id)["heartbeat_at"]
            time.sleep(0.3)
            assert store.lease(run_id)["heartbeat_at"] > first
        _expire(url, run_id)
        beat = Heartbeat(store, run_id, "me:1:aa", every=0.05, seconds=0.5)
        with stop_signals(), pytest.raises(Stopped) as err, beat:
            store.take_lease(run_id, OTHER, force=True)
            time.sleep(5)  # the heartbeat interrupts this
        assert beat.lost and err.value.signum == 15
        assert store.lease(run_id)["owner"] == OTHER


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_loop_and_releases_the_run(url, tmp_path, capsys, monkeypatch, signum, code):
    from dibs.platform.runtime import runner

    def loop(cfg, payload, on_progress):  # the inline executor, signalled while it trains
        os.kill(os.getpid(), signum)
        time.sleep(5)
        pytest.fail("the signal did not stop the loop")

    monkeypatch.setattr(runner, "run_inline", loop)
    cfg = load_config("experiments/smoke.yaml", ["runtime.executor=inline", f"runtime.output_dir={tmp_path}"])
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    with open_store(url) as store:
        run_id = _run(store, owner="me:1:aa")
        assert cli._execute(cfg, store, run_id, "me:1:aa", resume_from=None) == code
        assert store.get_run(run_id)["status"] == "stopped"
        assert store.lease(run_id)["owner"] is None and store.lease(run_id)["lease_expires"] is None
    name = signal.Signals(signum).name
    err = capsys.readouterr().err  # the live display may leave a blank line as it closes
    assert err.split() and [line for line in err.splitlines() if line.strip()] == [
        (
            f"dibs: error: run {run_id} stopped ({name}); its rows and checkpoints so far are in the store "
            f"(dibs resume {run_id})"
        )
    ]
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers  # put back


def test_cli_resume_of_a_live_run_is_one_line_and_writes_nothing(url, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_execute", lambda *a, **k: pytest.fail("a refused resume must not run"))
    with open_store(url) as store:
        run_id = _run(store)
        before = _row(store, run_id)
        assert cli.main(["resume", run_id, "--db", url]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dibs: error: run {run_id} is running (owner {OTHER}, lease until ")
        assert len(err.splitlines()) == 1
        assert cli.main(["resume", run_id, "--db", url, "--force"]) == 2
        err = capsys.readouterr().err
        assert "--force takes over only an expired lease" in err and len(err.splitlines()) == 1
        assert _row(store, run_id) == before


def test_cli_resume_force_takes_an_expired_lease(url, capsys, monkeypatch):
    seen = {}
    monkeypatch.setattr(
        cli, "_execute", lambda cfg, store, run_id, owner, **kw: seen.update(owner=owner) or 0
    )
    with open_store(url) as store:
        run_id = _run(store)
        _expire(url, run_id)
        assert cli.main(["resume", run_id, "--db", url]) == 2
        assert "takes the run over" in capsys.readouterr().err
        assert cli.main(["resume", run_id, "--db", url, "--force"]) == 0
        assert f"run {run_id}: resuming smoke from the start" in capsys.readouterr().out
        assert store.lease(run_id)["owner"] == seen["owner"] != OTHER


def test_wait_lease_waits_for_a_dead_owners_lease(url, monkeypatch):
    monkeypatch.setattr(cli, "_execute", lambda *a, **k: 0)
    with open_store(url) as store:
        run_id = _run(store, seconds=1.0)
        began = time.monotonic()
        assert cli.main(["resume", run_id, "--db", url, "--force", "--wait-lease", "10"]) == 0
        assert 0.5 < time.monotonic() - began < 5
        assert store.lease(run_id)["owner"] != OTHER


def test_retry_entrypoint_forces_after_the_lease():
    first = 'cd dibs && python -m dibs.platform.cli resume run-1 --db "$DIBS_DB_URL"'
    assert retry_entrypoint(first) == f"{first} --force --wait-lease 90"
    assert retry_entrypoint(retry_entrypoint(first)) == retry_entrypoint(first)
    sweep = "cd dibs && python -m dibs.platform.cli sweep --resume sweep-1 --output-dir /o"
    assert retry_entrypoint(sweep) == sweep


def test_store_at_0003_upgrades_with_its_rows(url, capsys):
    command.upgrade(alembic_config(url), "0003")  # as dibs before leases left it, with a run in flight
    engine = sqlalchemy.create_engine(url)
    now = "2026-12-01 10:00:00.000000"
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO runs "
                "(id, name, experiment, status, config, versions, seed, created_at, started_at) "
                "VALUES ('run-old', 'old', 'e.yaml', 'running', '{}', '{}', 3, :t, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO metrics "
                "(run_id, step, name, value, rollouts_consumed, tokens_generated, wall_seconds) "
                "VALUES ('run-old', 1, 'train/loss', 0.5, 32, 100, 1.5)"
            )
        )
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO checkpoints (run_id, step, path, created_at) "
                "VALUES ('run-old', 2, '/c/step-2', :t)"
            ),
            {"t": now},
        )
    engine.dispose()
    with pytest.raises(StoreError, match=r"is at revision 0003, not 0004: run `dibs db upgrade`$"):
        open_store(url)
    assert cli.main(["db", "upgrade", "--db", url]) == 0
    with open_store(url) as store:
        assert store.revision() == "0004"
        run = store.get_run("run-old")
        assert (run["status"], run["seed"], run["experiment"]) == ("running", 3, "e.yaml")
        assert [(m["step"], m["name"], m["value"]) for m in run["metrics"]] == [(1, "train/loss", 0.5)]
        assert store.checkpoints("run-old") == [(2, "/c/step-2")]
        assert store.lease("run-old") == {"owner": None, "lease_expires": None, "heartbeat_at": None}
        store.take_lease("run-old", "me:1:aa")  # a pre-lease run nobody holds resumes as before
        assert store.lease("run-old")["owner"] == "me:1:aa"
