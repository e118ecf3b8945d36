"""A sweep on PostgreSQL with a password in its URL: the password is in no file under the output
directory (sweep.json, Tune's tuner.pkl and searcher state), and `--resume` takes it from --db or
$DIBS_DB_URL, in one line when neither gives it. The test server trusts every login, so any password
works and the check is only where "hunter2" ends up."""

from __future__ import annotations

import os
import pickle
import textwrap
from pathlib import Path

import pytest

from dibs.platform.cli.main import main
from dibs.platform.store import StoreError
from dibs.platform.sweeps.sweep_storage import SweepStorage, store_url_for_restore

pytestmark = pytest.mark.services

SECRET = "hunter2"


@pytest.fixture
def secret_url(pg_url: str) -> str:
    return pg_url.replace("://dibs@", f"://dibs:{SECRET}@")


def files_holding(root: Path, text: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and text in p.read_bytes()]


def test_sweep_storage_pickles_the_masked_url(secret_url):
    state = pickle.dumps(SweepStorage(secret_url))
    assert SECRET.encode() not in state and b"dibs:***@" in state
    with pytest.raises(StoreError, match="restored without its store URL"):
        pickle.loads(state)
    with store_url_for_restore(secret_url):
        assert pickle.loads(state).url == secret_url


def test_a_sweep_leaves_no_password_in_its_files(secret_url, tmp_path, capsys, monkeypatch):
    (tmp_path / "sweep.yaml").write_text(
        textwrap.dedent(f"""
        name: tiny
        base: {os.path.abspath("experiments/gvm-smoke.yaml")}
        fixed:
          model.cache_dir: {tmp_path}/models
          runtime.output_dir: {tmp_path}/runs
          train.steps: 1
          eval.every: 1
          eval.k: 1
          task.test_size: 8
          warm_start.steps: 5
        space:
          allocation.alpha: {{loguniform: [1.0e-4, 1.0e-1]}}
        search: {{algorithm: optuna, num_samples: 1, seed: 0, metric: eval/accuracy, mode: max}}
        """)
    )
    out_dir = tmp_path / "runs"
    assert (
        main(["sweep", str(tmp_path / "sweep.yaml"), "--db", secret_url, "--output-dir", str(out_dir)]) == 0
    )
    out = capsys.readouterr()
    sweep_id = out.out.split()[1].rstrip(":")
    assert SECRET not in out.out + out.err and (out_dir / "sweeps" / sweep_id / "tuner.pkl").is_file()
    assert files_holding(tmp_path, SECRET.encode()) == []

    monkeypatch.delenv("DIBS_DB_URL", raising=False)
    assert main(["sweep", "--resume", sweep_id, "--output-dir", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dibs: error: --resume {sweep_id}: its store ") and "needs the password" in err
    monkeypatch.setenv("DIBS_DB_URL", secret_url)  # Tune's pickles are restored with it
    assert main(["sweep", "--resume", sweep_id, "--output-dir", str(out_dir)]) == 0
    out = capsys.readouterr()
    assert f"sweep {sweep_id}: 1/1 trials finished" in out.out and SECRET not in out.out + out.err
    assert files_holding(tmp_path, SECRET.encode()) == []
