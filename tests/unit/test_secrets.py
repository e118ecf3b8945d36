"""No store password leaves the machine: every command's output on a URL with a password (its error
paths included), the sweep's files, a job's entrypoint and runtime_env; and `dibs submit` uploads only
the files git tracks, plus `--include` paths."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dibs.platform.cli import job_entry
from dibs.platform.cli.main import main
from dibs.platform.core.config import ConfigError
from dibs.platform.jobs import job_checks, job_upload, jobs
from dibs.platform.store.sql import display_url, redact, url_password, without_password
from dibs.platform.sweeps.sweep_driver import resume_spec, resume_url, start_spec

pytestmark = pytest.mark.unit

SECRET = "hunter2"
PG = f"postgresql+psycopg://dibs:{SECRET}@127.0.0.1:1/x"  # nothing listens on port 1: connecting fails
SHOWN = "postgresql+psycopg://dibs:***@127.0.0.1:1/x"
LOCAL = "http://127.0.0.1:8265"


def test_display_url_masks_parsed_and_unparsable_urls():
    assert display_url(PG) == SHOWN
    assert display_url("postgresql://u:p%40ss@h:port/db") == "postgresql://u:***@h:port/db"  # no int port
    assert display_url("http://user:secret@head:8265") == "http://user:***@head:8265"
    assert display_url("sqlite:////a/d.db") == "sqlite:////a/d.db"
    assert url_password("postgresql://u:p%40ss@h/db") == "p@ss" and url_password("sqlite:////a.db") is None
    assert without_password(PG) == "postgresql+psycopg://dibs@127.0.0.1:1/x"
    assert (
        redact(
            f"could not parse 'x://a:{SECRET}@h' nor {SECRET} nor p%40ss", PG, "postgresql://u:p%40ss@h/db"
        )
        == "could not parse 'x://a:***@h' nor *** nor ***"
    )


def one_error_line(capsys) -> str:
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert out.err.startswith("dibs: error: ") and len(out.err.splitlines()) == 1, out.err
    return out.err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "experiments/smoke.yaml", "--db", PG],
        ["resume", "abc", "--db", PG],
        ["db", "upgrade", "--db", PG],
        ["runs", "--db", PG],
        ["export", "abc", "--db", PG],
        ["sweeps", "--db", PG],
        ["sweep", "experiments/sweeps/smoke.yaml", "--db", PG],
        ["dashboard", "--db", PG],
        ["run", "experiments/smoke.yaml", "--db", f"postgresql+psycopg://dibs:{SECRET}@127.0.0.1:port/x"],
    ],
)
def test_a_store_that_fails_is_one_line_without_the_password(argv, capsys):
    assert main(argv) == 2
    assert "dibs:***@127.0.0.1" in one_error_line(capsys)


def test_eval_store_error_is_masked(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    data = Path("tests/fixtures/math_eval").resolve()
    assert main(["eval", str(tmp_path), "--db", PG, "--data-dir", str(data), "--limit", "1"]) == 2
    assert SHOWN in one_error_line(capsys)


def test_submit_refuses_a_password_before_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(jobs, "connect", lambda address: pytest.fail("the cluster must not be contacted"))
    assert main(["submit", "experiments/smoke.yaml", "--address", LOCAL, "--db", PG]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"dibs: error: --db {SHOWN}: a job must not carry the store password")
    assert "--db-file PATH" in err and "DIBS_DB_URL" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "experiments/smoke.yaml", "--address", f"http://u:{SECRET}@h:1/api"],
        ["jobs", "list", "--address", f"http://u:{SECRET}@127.0.0.1:1"],
        ["jobs", "status", "x", "--address", f"http://u:{SECRET}@h:port"],
    ],
)
def test_dashboard_address_is_masked_in_errors(argv, capsys, tmp_path):
    db = ["--db", f"sqlite:///{tmp_path}/d.db"] if argv[0] == "submit" else []  # not the repo's runs/ store
    assert main(argv + db) == 2
    assert "u:***@" in one_error_line(capsys)


def test_remote_warnings_mask_the_address(tmp_path):
    lines = job_checks.remote_warnings(f"http://u:{SECRET}@10.0.0.5:8265", "sqlite:////a/d.db", tmp_path)
    assert "workers of http://u:***@10.0.0.5:8265 may not see it" in lines[0]
    assert all(SECRET not in line for line in lines)


def test_runtime_env_may_not_carry_the_store_url(tmp_path):
    env = tmp_path / "env.yaml"
    env.write_text(f"env_vars: {{DIBS_DB_URL: '{PG}'}}\n")
    with pytest.raises(jobs.JobsError, match="env_vars.DIBS_DB_URL would show the store URL") as e:
        job_checks.read_runtime_env(str(env))
    assert SECRET not in str(e.value)


class Client:
    def __init__(self):
        self.calls: list[dict] = []
        self.staged: list[str] = []

    def submit_job(self, **kw) -> str:
        root = Path(kw["runtime_env"]["working_dir"]) / "dibs"
        self.staged = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        self.calls.append(kw)
        return kw["submission_id"]


def test_a_job_carries_no_url_with_a_password_and_retries_upload_the_same(tmp_path, capsys):
    client, url = Client(), f"sqlite:///{tmp_path}/d.db"
    sub = jobs.submit(
        "experiments/smoke.yaml",
        address=LOCAL,
        db=url,
        output_dir=str(tmp_path),
        client=client,
        include=["tests/fixtures/math_eval"],
        db_file="/etc/dibs/db_url",
    )
    [call] = client.calls
    assert job_checks.DB_ENV not in call["runtime_env"]["env_vars"]
    assert call["entrypoint"] == (
        "cd dibs && python -m dibs.platform.cli.job_entry "
        f"--db-file /etc/dibs/db_url --store {url} -- resume {sub.dibs_id}"
    )
    assert client.staged == job_upload.upload_list(jobs.PROJECT_ROOT, ["tests/fixtures/math_eval"])
    assert json.loads(call["metadata"]["dibs_include"]) == ["tests/fixtures/math_eval"]
    jobs.submit_attempt(client, sub.next_attempt())  # what `supervise` and `dibs jobs retry` submit
    assert client.calls[1]["submission_id"] == f"{sub.dibs_id}-retry1"
    assert client.calls[1]["entrypoint"] == jobs.retry_entrypoint(call["entrypoint"])  # may take a dead lease
    assert client.calls[1]["metadata"]["dibs_include"] == call["metadata"]["dibs_include"]


def test_job_entry_takes_the_cluster_secret_first(tmp_path):
    file = tmp_path / "db_url"
    file.write_text(f"{PG}\n")
    store = "postgresql+psycopg://dibs@127.0.0.1:1/x"
    assert (
        job_entry.cluster_store_url(str(file), store, environ={"DIBS_DB_URL": "sqlite:////e.db"})
        == "sqlite:////e.db"
    )
    assert job_entry.cluster_store_url(str(file), store, environ={}) == PG
    assert job_entry.cluster_store_url(None, store, environ={}) == store
    with pytest.raises(ValueError, match=f"--db-file {tmp_path}/gone: cannot read it on this node"):
        job_entry.cluster_store_url(str(tmp_path / "gone"), store, environ={})


def test_job_entry_runs_the_command_with_the_url(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DIBS_DB_URL", raising=False)
    (tmp_path / "db_url").write_text(PG)
    assert job_entry.main(["--db-file", str(tmp_path / "db_url"), "--", "resume", "abc"]) == 2
    assert SHOWN in one_error_line(capsys)  # the URL from the file reached `dibs resume`


def test_sweep_resume_takes_the_password_from_db_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("DIBS_DB_URL", raising=False)
    with pytest.raises(
        ConfigError, match=r"--resume s: its store .*:\*\*\*@.* needs the password: pass --db"
    ):
        resume_url(SHOWN, None, "s")
    assert resume_url(SHOWN, PG, "s") == PG
    assert resume_url("sqlite:///runs/d.db", None, "s") == "sqlite:///runs/d.db"
    assert resume_url("sqlite:///runs/d.db", "runs/d.db", "s") == "sqlite:///runs/d.db"
    with pytest.raises(ConfigError, match="is not the sweep's store") as e:
        resume_url(SHOWN, f"postgresql+psycopg://dibs:{SECRET}@127.0.0.1:1/other", "s")
    assert SECRET not in str(e.value)
    # A real spec (resume checks every field of it), recorded on SQLite and then pointed at the PG store
    spec = start_spec("experiments/sweeps/smoke.yaml", f"sqlite:///{tmp_path}/d.db", str(tmp_path))
    spec_file = Path(spec["dir"]) / "sweep.json"
    spec_file.write_text(json.dumps(json.loads(spec_file.read_text()) | {"db_url": SHOWN}))
    monkeypatch.setenv("DIBS_DB_URL", PG)
    assert resume_spec(spec["sweep_id"], str(tmp_path))["db_url"] == PG


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_staging_holds_exactly_the_tracked_files_and_includes(tmp_path):
    repo = tmp_path / "project"
    tracked = ["platform/cli/main.py", "experiments/smoke.yaml", ".ci/run", "README.md"]
    planted = [".env", "key.pem", "experiments/private/x.yaml", "a.sqlite", ".ci/foo", "data/big/y.bin"]
    for rel in [*tracked, ".gitignore", *planted, "data/keep.txt"]:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(rel)
    (repo / ".gitignore").write_text("data/\n")
    git(repo, "init", "-q")
    git(repo, "add", *tracked, ".gitignore")
    with job_upload.staged_project(repo, job_upload.project_paths(repo, [str(repo / "data")])) as stage:
        root = Path(stage) / "dibs"
        got = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())
        assert (root / "platform/cli/main.py").read_text() == "platform/cli/main.py"
    assert got == sorted(
        [*tracked, "data/big/y.bin", "data/keep.txt"]
    )  # .gitignore stays: Ray would apply it
    assert not Path(stage).exists()


def test_upload_refuses_what_it_cannot_vouch_for(tmp_path):
    with pytest.raises(job_upload.UploadError, match="not a git work tree"):
        job_upload.upload_list(tmp_path)
    git(tmp_path, "init", "-q")
    with pytest.raises(job_upload.UploadError, match="--include gone: no such file or directory"):
        job_upload.upload_list(tmp_path, ["gone"])
    with pytest.raises(job_upload.UploadError, match="not inside the project"):
        job_upload.project_paths(tmp_path, ["/etc/passwd"])
    (tmp_path / "link").symlink_to("/etc/hostname")
    git(tmp_path, "add", "link")
    with pytest.raises(job_upload.UploadError, match="link: a link to /etc/hostname, outside the project"):
        job_upload.upload_list(tmp_path)


def test_submit_outside_a_git_work_tree_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(jobs, "PROJECT_ROOT", tmp_path)
    assert main(["submit", "experiments/smoke.yaml", "--address", LOCAL, "--db", f"{tmp_path}/d.db"]) == 2
    assert "dibs submit uploads only the files git tracks" in one_error_line(capsys)
    assert not (tmp_path / "d.db").exists()
