"""The dashboard without a browser: every page and data endpoint on a store seeded through the store API
(tests/conftest.py), escaping of user strings, read-only access, seed pooling with 95% intervals,
budget to target, parameter importance, and `dibs export` of comparisons."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dibs.dashboards import compare
from dibs.dashboards.app import create_app
from dibs.dashboards.sweeps import param_importance
from dibs.platform.cli.main import main
from dibs.platform.store import MetricRow, ResultsStore

pytestmark = pytest.mark.unit

XSS = "<script>alert(1)</script>"
UNIFORM = ["run-uniform-0", "run-uniform-1", "run-uniform-2"]
LOCAL = "http://127.0.0.1:8050"  # the Host the app answers by default (a loopback name, any port)


@pytest.fixture
def seeded_url(url, seeded):
    seeded(url)
    return url


@pytest.fixture
def client(seeded_url):
    with TestClient(create_app(seeded_url), base_url=LOCAL) as opened:
        yield opened


def _runs(*ids: str) -> str:
    return "&".join(f"run={i}" for i in ids)


def test_pages_render_and_escape_user_strings(client):
    pages = ["/", "/?allocator=gvm&status=finished", f"/compare?{_runs(*UNIFORM, 'run-xss')}",
             "/run/run-gvm-0", "/run/run-xss", "/sweep/sweep-1"]  # fmt: skip
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        assert XSS not in response.text and "<b>x</b>" not in response.text and "<i>" not in response.text, (
            page
        )
        # Scripts come from this server only, never inline (the CSP forbids inline ones too).
        assert re.findall(r"<script(?![^>]*\ssrc=)", response.text) == [], page
        assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/").text
    assert "lr sweep &lt;i&gt;" in client.get("/sweep/sweep-1").text


def test_runs_table_filters(client):
    def names(page: str) -> list[str]:  # the run ids the table offers to compare
        return re.findall(r'name="run" value="([^"]+)"', client.get(page).text)

    assert len(names("/")) == 9  # 3 uniform + 3 gvm + the script-named one + 2 sweep runs
    assert sorted(names("/?algorithm=grpo&allocator=uniform")) == UNIFORM
    assert names("/?algorithm=raftpp") == ["run-xss"]
    assert sorted(names("/?sweep=sweep-1")) == ["run-sweep-1-t0001", "run-sweep-1-t0002"]
    assert names("/?status=running") == ["run-xss"]
    assert len(names("/?experiment=experiments/gvm/grpo.yaml")) == 8


def test_static_plotly_is_served_locally(client):
    response = client.get("/static/plotly.min.js")
    assert response.status_code == 200 and b"plotly.js" in response.content[:2000]
    assert client.get("/static/dashboard.js").status_code == 200
    assert client.get("/static/..%2Fapp.py").status_code == 404


def test_compare_curves_pool_seeds_and_switch_axis(client):
    by_step = client.get(f"/api/compare?{_runs(*UNIFORM, 'run-gvm-0')}&metric=eval/accuracy&x=step").json()
    band, mean, single = by_step["data"]
    assert mean["name"] == "grpo/uniform k=8 T=1.0 (mean of 3 seeds, 95% CI)"
    assert single["name"] == "grpo/gvm k=8 T=1.0" and "fill" not in single
    assert mean["x"] == [0, 10, 20, 30, 40, 50]
    # Step 50: seeds score 0.2 + skill, skill = 0.30, 0.35, 0.40 -> mean 0.55, sd 0.05,
    # half-width t(2) * sd / sqrt(3) = 4.303 * 0.05 / 1.7321 = 0.12422.
    assert mean["y"][-1] == pytest.approx(0.55)
    upper, lower = band["y"][5], band["y"][6]  # the band runs along the upper edge, then back along the lower
    assert (upper, lower) == (
        pytest.approx(0.55 + 0.12422, abs=1e-4),
        pytest.approx(0.55 - 0.12422, abs=1e-4),
    )
    by_rollouts = client.get(f"/api/compare?{_runs(*UNIFORM, 'run-gvm-0')}&x=rollouts_consumed").json()
    assert by_rollouts["data"][1]["x"] == [0, 1280, 2560, 3840, 5120, 6400]  # 128 rollouts a step
    assert by_rollouts["data"][2]["x"][-1] == 9600  # gvm: 192 a step, its probe included
    assert by_rollouts["layout"]["xaxis"]["title"]["text"] == "rollouts consumed (probe included)"
    assert client.get(f"/api/compare?{_runs('run-xss')}").json()["data"][0]["name"] == (
        "raftpp/uniform k=8 T=1.0"
    )
    assert client.get(f"/api/compare?{_runs('run-xss')}&x=epoch").status_code == 400
    assert client.get(f"/api/compare?{_runs('nope')}").status_code == 404


def test_compare_against_optimizer_updates(seeded_url, capsys):
    # gvm-0 made 3 optimizer updates a step (budget/updates = 3 s), so its evaluations at steps 0, 10,
    # ..., 50 sit at 0, 30, ..., 150 updates; the page offers the axis.
    with ResultsStore(seeded_url) as store:
        updates = [MetricRow(step=s, name="budget/updates", value=3.0 * s, rollouts_consumed=192 * s,
                             tokens_generated=0, wall_seconds=0.0) for s in range(1, 51)]  # fmt: skip
        store.log_metrics("run-gvm-0", updates)
    with TestClient(create_app(seeded_url), base_url=LOCAL) as client:
        fig = client.get(f"/api/compare?{_runs('run-gvm-0')}&metric=eval/accuracy&x=updates").json()
        assert fig["data"][0]["x"] == [0, 30, 60, 90, 120, 150]
        assert fig["layout"]["xaxis"]["title"]["text"] == "optimizer updates"
        assert 'value="updates" selected' in client.get(f"/compare?{_runs('run-gvm-0')}&x=updates").text
        # A run without budget/updates rows (recorded before the metric): its points after step 0 have no x.
        old = client.get(f"/api/compare?{_runs('run-gvm-1')}&metric=eval/accuracy&x=updates").json()
        assert old["data"][0]["x"] == [0] + [None] * 5
    assert main(["export", "run-gvm-0", "--table", "compare", "--x", "updates", "--format", "csv",
                 "--db", seeded_url]) == 0  # fmt: skip
    curve = capsys.readouterr().out.splitlines()
    assert len(curve) == 7 and curve[-1].split(",")[-5:-3] == ["50", "150.0"]


def test_budget_to_target(client):
    rows = client.get(f"/api/targets?{_runs(*UNIFORM, 'run-gvm-0')}&target=0.45").json()
    # Uniform seeds first reach 0.45 at steps 50, 40, 40 (0.2 + skill * s / 50): 6400, 5120, 5120 rollouts,
    # mean 5546.7, sd 739.0, half-width 4.303 * 739.0 / sqrt(3) = 1835.9.
    assert rows[0] == {"group": "grpo/uniform k=8 T=1.0", "runs": 3, "reached": "3/3",
                       "rollouts": "5547 ± 1836", "steps": "43 ± 14"}  # fmt: skip
    # gvm seed 0: 0.2 + 0.4 * 30 / 50 = 0.44 < 0.45, then 0.52 at step 40, 192 rollouts a step.
    assert (rows[1]["rollouts"], rows[1]["steps"]) == ("7680", "40")
    never = client.get(f"/api/targets?{_runs(*UNIFORM)}&target=0.99").json()[0]
    assert (never["reached"], never["rollouts"]) == ("0/3", "≥ 6400 ± 0")  # censored: what they spent in all
    assert client.get(f"/api/targets?{_runs(*UNIFORM)}&target=nan").status_code == 400


def test_run_and_sweep_figures(client):
    scatter = client.get("/api/run/run-gvm-0/budget?step=3").json()
    assert sum(len(trace["x"]) for trace in scatter["data"]) == 8  # one point per prompt
    heat = client.get("/api/run/run-gvm-0/allocation").json()["data"][0]
    assert heat["x"] == [1, 2, 3, 4, 5] and len(heat["y"]) == 11
    parcoords = client.get("/api/sweep/sweep-1/parcoords").json()["data"][0]
    assert [d["label"] for d in parcoords["dimensions"]] == [
        "allocation.allocator",
        "train.lr",
        "eval/accuracy",
    ]
    assert client.get("/api/sweep/sweep-1/importance").status_code == 200
    assert client.get("/api/sweep/nope/parcoords").status_code == 404
    page = client.get("/run/run-gvm-0").text
    assert "held-out" in page and "allocation.allocator" in page  # evaluations and the resolved config


def test_dashboard_never_writes(seeded_url):
    path = Path(seeded_url.removeprefix("sqlite:///"))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    app = create_app(seeded_url)
    methods = {m for route in app.routes for m in getattr(route, "methods", set())}
    assert methods <= {"GET", "HEAD"}
    with TestClient(app, base_url=LOCAL) as client:
        for page in [
            "/",
            "/run/run-gvm-0",
            f"/api/compare?{_runs(*UNIFORM)}",
            "/api/sweep/sweep-1/importance",
        ]:
            assert client.get(page).status_code == 200
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_seeds_pool_only_when_the_setting_matches():
    base = {"seed": 0, "name": "a", "algorithm": "grpo", "allocation": {"allocator": "gvm"},
            "eval": {"k": 8, "temperature": 1.0}, "train": {"lr": 1e-5},
            "runtime": {"executor": "ray"}}  # fmt: skip
    other_seed = {**base, "seed": 1, "name": "b", "runtime": {"executor": "inline"}}
    other_k = {**base, "eval": {"k": 4, "temperature": 1.0}}
    other_lr = {**base, "train": {"lr": 3e-5}}
    groups = compare.group_runs(
        [{"id": str(i), "config": c} for i, c in enumerate([base, other_seed, other_k, other_lr])]
    )
    assert [[r["id"] for r in g.runs] for g in groups] == [["0", "1"], ["2"], ["3"]]
    # k and T are always in the label; other keys only where settings of one algorithm/allocator differ.
    assert [g.label for g in groups] == ["grpo/gvm k=8 T=1.0 train.lr=1e-05",
                                         "grpo/gvm k=4 T=1.0 train.lr=1e-05",
                                         "grpo/gvm k=8 T=1.0 train.lr=3e-05"]  # fmt: skip


def test_param_importance_finds_the_parameter_that_matters():
    trials = [{"params": {"lr": lr, "noise": noise}, "objective": lr * 1000, "status": "finished"}
              for lr, noise in [(1e-4, 3), (2e-4, 1), (3e-4, 4), (4e-4, 1), (5e-4, 5), (6e-4, 9), (7e-4, 2),
                                (8e-4, 6), (9e-4, 5), (1e-3, 3)]]  # fmt: skip
    found = param_importance(trials, "max")
    assert set(found) == {"lr", "noise"} and found["lr"] > found["noise"]
    assert param_importance(trials[:3], "max") == {}  # too few trials to rank


def test_cli_export_comparisons(seeded_url, capsys):
    assert main(["export", *UNIFORM, "--format", "csv", "--db", seeded_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "run_id,step,rollouts_consumed,tokens_generated,wall_seconds,name,value"
    assert len(lines) == 1 + 3 * 56 and lines[1].startswith("run-uniform-0,0,")
    assert main(["export", *UNIFORM, "--table", "compare", "--x", "rollouts_consumed", "--format", "csv",
                 "--db", seeded_url]) == 0  # fmt: skip
    curve = capsys.readouterr().out.splitlines()
    assert curve[0] == "group,runs,step,x,mean,ci_low,ci_high" and len(curve) == 7
    assert curve[-1].startswith(
        '"grpo/uniform k=8 T=1.0 (mean of 3 seeds, 95% CI)",run-uniform-0 run-uniform-1 '
    )
    assert curve[-1].split(",")[-5:-3] == ["50", "6400.0"]
    assert main(["export", "--experiment", "experiments/gvm/grpo.yaml", "--table", "targets",
                 "--target", "0.45", "--db", seeded_url]) == 0  # fmt: skip
    table = json.loads(capsys.readouterr().out)
    assert [(s["group"].split(" ")[0], s["reached"]) for s in table["settings"]][:2] == [
        ("grpo/uniform", "3/3"),
        ("grpo/gvm", "3/3"),
    ]
    assert main(["export", "--table", "targets", "run-xss", "--db", seeded_url]) == 2
    assert capsys.readouterr().err.strip() == "dibs: error: export --table targets needs --target ACCURACY"
    assert main(["export", "--sweep", "nope", "--db", seeded_url]) == 2
    assert "dibs: error: export: no runs" in capsys.readouterr().err


def test_cli_dashboard_errors(tmp_path, capsys):
    assert main(["dashboard", "--db", str(tmp_path / "missing.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dibs: error: cannot open store") and err.count("\n") == 1
