"""`dibs.platform.jobs.jobs` without a cluster: address and store URL checks, the runtime env,
entrypoints, bad inputs stopped before anything is uploaded, and the retry policy against a fake client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray.job_submission import JobStatus

from dibs.platform.cli.main import main
from dibs.platform.core.config import ConfigError
from dibs.platform.jobs import job_checks, jobs
from dibs.platform.store import StoreError, open_store

pytestmark = pytest.mark.unit

LOCAL = "http://127.0.0.1:8265"


class FakeClient:
    """Records submissions (checking the staged upload while it exists); plays back job statuses."""

    def __init__(self, statuses: dict[str, list[str]] | None = None):
        self.submitted: list[dict] = []
        self.statuses = statuses or {}
        self.infos: dict[str, object] = {}

    def submit_job(self, **kw) -> str:
        staged = Path(kw["runtime_env"]["working_dir"]) / "dibs"
        # a copy of the tracked files
        assert not staged.is_symlink() and (staged / "platform" / "cli" / "main.py").is_file()
        self.submitted.append(kw)
        return kw["submission_id"]

    def get_job_status(self, job_id: str) -> JobStatus:
        seq = self.statuses[job_id]
        return JobStatus(seq.pop(0) if len(seq) > 1 else seq[0])


def no_cluster(monkeypatch) -> list[str]:
    """Any attempt to reach a cluster is recorded (and refused)."""
    calls: list[str] = []

    def refuse(address):
        calls.append(address)
        raise AssertionError("the cluster must not be contacted")

    monkeypatch.setattr(jobs, "connect", refuse)
    return calls


@pytest.mark.parametrize("address", ["http://127.0.0.1:8265", "https://ray.example.org", "http://h:1/"])
def test_dashboard_address_accepts_urls(address):
    assert job_checks.dashboard_address(address) == address.rstrip("/")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:8265",
        "ray://h:10001",
        "http://:8265",
        "http://h:99999",
        "http://h:8265/api",
        "http://h:port",
    ],
)
def test_dashboard_address_rejects_others(address):
    with pytest.raises(jobs.JobsError, match="expected the Ray dashboard's URL"):
        job_checks.dashboard_address(address)


def test_dashboard_address_from_env(monkeypatch):
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", LOCAL)
    assert job_checks.dashboard_address(None) == LOCAL
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    with pytest.raises(jobs.JobsError, match="give --address"):
        job_checks.dashboard_address(None)


def test_loopback():
    assert (
        job_checks.is_loopback(LOCAL)
        and job_checks.is_loopback("http://localhost:1")
        and job_checks.is_loopback("http://[::1]:1")
    )
    assert not job_checks.is_loopback("http://10.0.0.5:8265") and not job_checks.is_loopback(
        "http://head.cluster:8265"
    )


def test_store_url_resolved_before_upload(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert job_checks.resolve_store_url(None) == f"sqlite:///{tmp_path}/runs/dibs.db"
    assert job_checks.resolve_store_url("x/d.db") == f"sqlite:///{tmp_path}/x/d.db"
    assert job_checks.resolve_store_url("sqlite:////abs/d.db") == "sqlite:////abs/d.db"
    pg = "postgresql://u@db.example.org/dibs"  # the password stays on the cluster (test_secrets.py)
    assert job_checks.resolve_store_url(pg) == pg
    for bad in ("sqlite://", "sqlite:///:memory:", "not a url://x", "postgresql://h:port/db"):
        with pytest.raises(jobs.JobsError, match="--db"):
            job_checks.resolve_store_url(bad)


def test_sqlite_with_a_remote_cluster_warns(tmp_path):
    assert job_checks.remote_warnings(LOCAL, "sqlite:////a/d.db", tmp_path) == []
    lines = job_checks.remote_warnings("http://10.0.0.5:8265", "sqlite:////a/d.db", tmp_path)
    assert len(lines) == 2 and "may not see it" in lines[0] and "PostgreSQL" in lines[0]
    only_dir = job_checks.remote_warnings("http://10.0.0.5:8265", "postgresql://h/db", tmp_path)
    assert len(only_dir) == 1 and str(tmp_path) in only_dir[0]


def test_runtime_env_file(tmp_path):
    good = tmp_path / "env.json"
    good.write_text(json.dumps({"env_vars": {"A": "1"}, "pip": ["rich"], "excludes": ["data/"]}))
    assert job_checks.read_runtime_env(str(good))["pip"] == ["rich"]
    assert job_checks.read_runtime_env(None) == {}
    cases = {
        "missing.yaml": "cannot read it",
        "list.yaml": "expected a mapping",
        "wd.yaml": "working_dir is set",
        "types.yaml": "env_vars",
        "broken.yaml": "cannot read it",
    }
    (tmp_path / "list.yaml").write_text("- a\n")
    (tmp_path / "wd.yaml").write_text("working_dir: .\n")
    (tmp_path / "types.yaml").write_text("env_vars: {A: 1}\n")
    (tmp_path / "broken.yaml").write_text("env_vars: {A: [\n")
    for name, message in cases.items():
        with pytest.raises(jobs.JobsError, match=message) as e:
            job_checks.read_runtime_env(str(tmp_path / name))
        assert "\n" not in str(e.value)


def test_runtime_env_merge():
    user = {"env_vars": {"A": "1", "TOKENIZERS_PARALLELISM": "true"}, "pip": ["rich"], "excludes": ["data/"]}
    env = job_checks.build_runtime_env(user, experiment="e.yaml")
    assert env["pip"] == ["rich"] and env["excludes"] == ["data/"]
    assert job_checks.DB_ENV not in env["env_vars"] and env["env_vars"]["DIBS_EXPERIMENT"] == "e.yaml"
    assert env["env_vars"]["A"] == "1" and env["env_vars"]["TOKENIZERS_PARALLELISM"] == "true"  # user's wins
    assert "working_dir" not in env


def test_entrypoints():
    assert (
        jobs.entrypoint("run", "run-1", Path("/o"), store="sqlite:////a.db")
        == "cd dibs && python -m dibs.platform.cli.job_entry --store sqlite:////a.db -- resume run-1"
    )
    assert jobs.entrypoint(
        "sweep", "sweep-1", Path("/o d"), store="postgresql://u@h/d", db_file="/etc/u"
    ) == (
        "cd dibs && python -m dibs.platform.cli.job_entry --db-file /etc/u --store postgresql://u@h/d -- "
        "sweep --resume sweep-1 --output-dir '/o d'"
    )


def test_submit_creates_the_run_then_its_job(tmp_path):
    client = FakeClient()
    url = f"sqlite:///{tmp_path}/d.db"
    sub = jobs.submit(
        "experiments/smoke.yaml",
        address=LOCAL,
        db=url,
        overrides=["train.steps=2"],
        output_dir=str(tmp_path / "out"),
        client=client,
    )
    [call] = client.submitted
    assert call["submission_id"] == sub.dibs_id == sub.submission_id and sub.kind == "run"
    assert call["entrypoint"] == jobs.entrypoint("run", sub.dibs_id, tmp_path / "out", store=url)
    assert call["metadata"] == {
        "dibs_kind": "run",
        "dibs_id": sub.dibs_id,
        "dibs_attempt": "0",
        "dibs_include": "[]",
    }
    assert job_checks.DB_ENV not in call["runtime_env"]["env_vars"]
    run = open_store(url).get_run(sub.dibs_id)
    assert run["status"] == "submitted" and run["config"]["train"]["steps"] == 2
    assert run["config"]["runtime"]["output_dir"] == str(tmp_path / "out")


def test_a_refused_submission_fails_its_run(tmp_path):
    client = FakeClient()

    def refuse(**kw):
        raise RuntimeError("Request failed with status code 500: boom")

    client.submit_job = refuse
    url = f"sqlite:///{tmp_path}/d.db"
    with pytest.raises(jobs.JobsError, match="submission failed: Request failed"):
        jobs.submit("experiments/smoke.yaml", address=LOCAL, db=url, client=client, output_dir=str(tmp_path))
    assert [r["status"] for r in open_store(url).list_runs()] == ["failed"]


def test_submit_sweep_submits_its_resume(tmp_path, monkeypatch):
    from dibs.platform.sweeps import sweep_driver

    monkeypatch.setattr(sweep_driver, "start_spec", lambda path, db_url, out: {"sweep_id": "sweep-x"})
    client = FakeClient()
    sub = jobs.submit(
        "experiments/sweeps/smoke.yaml",
        address=LOCAL,
        db=f"sqlite:///{tmp_path}/d.db",
        output_dir=str(tmp_path),
        client=client,
    )
    assert (sub.kind, client.submitted[0]["submission_id"]) == ("sweep", "sweep-x")
    assert f"sweep --resume sweep-x --output-dir {tmp_path}" in client.submitted[0]["entrypoint"]
    with pytest.raises(ConfigError, match="--set applies to experiments"):
        jobs.submit("experiments/sweeps/smoke.yaml", address=LOCAL, overrides=["a=1"], client=client)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"path": "bad"}, ConfigError),
        ({"overrides": ["train.steps=-1"]}, ConfigError),
        ({"runtime_env_file": "missing.yaml"}, jobs.JobsError),
        ({"db": "mysql://h/db"}, StoreError),
        ({"db": "sqlite:///:memory:"}, jobs.JobsError),
        ({"address": "localhost:8265"}, jobs.JobsError),
    ],
)
def test_bad_input_fails_before_the_cluster(tmp_path, monkeypatch, kwargs, error):
    (tmp_path / "bad").write_text("train: {stepz: 3}\n")
    calls = no_cluster(monkeypatch)
    kw = {"path": "experiments/smoke.yaml", "address": LOCAL, "db": f"sqlite:///{tmp_path}/d.db"} | kwargs
    if kw["path"] == "bad":
        kw["path"] = str(tmp_path / "bad")
    if "runtime_env_file" in kw:
        kw["runtime_env_file"] = str(tmp_path / kw["runtime_env_file"])
    with pytest.raises(error):
        jobs.submit(kw.pop("path"), **kw)
    assert calls == []
    if kwargs.get("db") is None:
        assert open_store(f"sqlite:///{tmp_path}/d.db").list_runs() == []  # and no run row was created


def test_cli_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    no_cluster(monkeypatch)
    (tmp_path / "bad.yaml").write_text("train: {steps: -1}\n")
    assert main(["submit", str(tmp_path / "bad.yaml"), "--address", LOCAL, "--db", f"{tmp_path}/d.db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dibs: error:") and "train.steps" in err and len(err.splitlines()) == 1


def test_unreachable_dashboard_is_one_line(tmp_path, capsys):
    from ray_cluster import free_port

    url = f"sqlite:///{tmp_path}/d.db"
    code = main(
        ["submit", "experiments/smoke.yaml", "--address", f"http://127.0.0.1:{free_port()}", "--db", url]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and err.startswith("dibs: error: cannot reach the Ray dashboard")
        and len(err.splitlines()) == 1
    )
    assert open_store(url).list_runs() == []


def sub0() -> jobs.Submission:
    return jobs.Submission("run", "run-1", "cd dibs && true", {"env_vars": {}})


@pytest.mark.parametrize(
    ("statuses", "retries", "final", "submitted"),
    [
        ({"run-1": ["RUNNING", "FAILED"], "run-1-retry1": ["PENDING", "SUCCEEDED"]}, 1, ("SUCCEEDED", 1), 1),
        (
            {"run-1": ["FAILED"], "run-1-retry1": ["FAILED"], "run-1-retry2": ["SUCCEEDED"]},
            2,
            ("SUCCEEDED", 2),
            2,
        ),
        ({"run-1": ["FAILED"], "run-1-retry1": ["FAILED"]}, 1, ("FAILED", 1), 1),
        ({"run-1": ["FAILED"]}, 0, ("FAILED", 0), 0),
        ({"run-1": ["STOPPED"]}, 3, ("STOPPED", 0), 0),  # stopped on purpose: not retried
        ({"run-1": ["SUCCEEDED"]}, 3, ("SUCCEEDED", 0), 0),
    ],
)
def test_retry_policy(statuses, retries, final, submitted):
    client, out = FakeClient(statuses), []
    status, last = jobs.supervise(client, sub0(), max_retries=retries, poll=0, follow=False, write=out.append)
    assert (status, last.attempt) == final
    ids = [c["submission_id"] for c in client.submitted]
    assert ids == [f"run-1-retry{k}" for k in range(1, submitted + 1)]
    assert all(
        c["entrypoint"] == sub0().entrypoint and c["metadata"]["dibs_id"] == "run-1" for c in client.submitted
    )
    assert len(out) == submitted and all("resumes run run-1 from its checkpoint" in line for line in out)


class Info:
    def __init__(self, sid: str, status: str, attempt: int | None, start: int):
        self.submission_id, self.status, self.start_time, self.end_time = sid, JobStatus(status), start, None
        self.entrypoint, self.message = "cd dibs && true", ""
        self.metadata = (
            {} if attempt is None else {"dibs_kind": "run", "dibs_id": "run-1", "dibs_attempt": str(attempt)}
        )
        self.runtime_env = {"working_dir": "gcs://_ray_pkg_x.zip", "env_vars": {"A": "1"}}


def test_retry_command_submits_the_next_attempt():
    client = FakeClient()
    infos = [
        Info("run-1", "FAILED", 0, 1000),
        Info("run-1-retry1", "FAILED", 1, 2000),
        Info("other", "RUNNING", None, 3),
    ]
    client.list_jobs = lambda: infos
    client.get_job_info = lambda sid: next(i for i in infos if i.submission_id == sid)
    sub = jobs.retry(client, "run-1")
    assert sub.submission_id == "run-1-retry2" and client.submitted[0]["runtime_env"]["env_vars"] == {
        "A": "1"
    }
    rows = jobs.list_jobs(client)
    assert [r["submission_id"] for r in rows] == ["other", "run-1", "run-1-retry1"]
    assert rows[1]["start_time"] == "1970-01-01T00:00:01+00:00" and rows[0]["dibs_id"] is None
    infos[1] = Info("run-1-retry1", "RUNNING", 1, 2000)
    with pytest.raises(jobs.JobsError, match="is RUNNING"):
        jobs.retry(client, "run-1")
    with pytest.raises(jobs.JobsError, match="not submitted by dibs"):
        jobs.retry(client, "other")
