"""Where the budget went, on the compare page: per-prompt rollouts per visit against a reference pass rate
(each run's own seed's pre-pass, else the selected runs' pooled pass rate), bin means, the pre-pass
contract (`record_prepass`), pre-passes kept out of the curves, and `dibs export --table budget`.

Three runs in a SQLite store, with hand-made prompt rows (n_alloc / accepted by step):

    A uniform seed 0   step 1: p1 8/8, p2 8/4      step 2: p1 8/6, p3 8/0
    B greso   seed 0   step 1: p1 0/0, p2 12/6     step 2: p1 4/4, p4 16/2
    C greso   seed 1   step 1: p1 6/5, p2 10/5     step 2: p2 6/3, p4 8/2

Rollouts per visit: A p1 16/2 = 8, p2 8, p3 8; B p1 4/2 = 2, p2 12, p4 16; C p1 6, p2 16/2 = 8, p4 8.
B and C differ only in seed, so they are one setting.
"""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from fastapi.testclient import TestClient

from dibs.dashboards import budget
from dibs.dashboards.app import create_app
from dibs.platform.cli.main import main
from dibs.platform.core.config import ExperimentConfig, config_to_dict
from dibs.platform.core.metrics import PromptStat
from dibs.platform.store import MetricRow, ResultsStore
from dibs.platform.store.prepass import record_prepass

pytestmark = pytest.mark.unit

LOCAL = "http://127.0.0.1:8050"
RUNS = {  # run id -> (allocator, seed, {step: [(prompt, n_alloc, accepted), ...]})
    "run-a": ("uniform", 0, {1: [("p1", 8, 8), ("p2", 8, 4)], 2: [("p1", 8, 6), ("p3", 8, 0)]}),
    "run-b": ("greso", 0, {1: [("p1", 0, 0), ("p2", 12, 6)], 2: [("p1", 4, 4), ("p4", 16, 2)]}),
    "run-c": ("greso", 1, {1: [("p1", 6, 5), ("p2", 10, 5)], 2: [("p2", 6, 3), ("p4", 8, 2)]}),
}
ABC = "run=run-a&run=run-b&run=run-c"
# Pre-pass pass rates, accepted of 20 samples: p1 19, p2 10, p3 1, p4 3 at seed 0; p1 17, p2 11, p4 5 at
# seed 1.
PREPASS = {0: {"p1": 19, "p2": 10, "p3": 1, "p4": 3}, 1: {"p1": 17, "p2": 11, "p4": 5}}
CENTRES = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]


def _config(allocator: str, seed: int, **task: int) -> dict:
    data = {"name": f"{allocator}-s{seed}", "seed": seed, "algorithm": "grpo",
            "allocation": {"allocator": allocator}, "task": task}  # fmt: skip
    return config_to_dict(ExperimentConfig.model_validate(data))


def _stat(prompt: str, n: int, accepted: int) -> PromptStat:
    return PromptStat(prompt_id=prompt, p_hat=accepted / n if n else math.nan, g_hat=math.nan, n_alloc=n,
                      accepted=accepted, probed=False)  # fmt: skip


def _prepass_rows(seed: int) -> list[PromptStat]:
    return [_stat(prompt, 20, hits) for prompt, hits in PREPASS[seed].items()]


@pytest.fixture
def store(url):
    with ResultsStore(url) as opened:
        for run_id, (allocator, seed, steps) in RUNS.items():
            opened.create_run(name=run_id, experiment="experiments/zoo.yaml", config=_config(allocator, seed),
                              git_commit=None, versions={}, seed=seed, run_id=run_id)  # fmt: skip
            for step, rows in steps.items():
                opened.log_prompt_stats(run_id, step, [_stat(*row) for row in rows])
            opened.log_metrics(run_id, [MetricRow(step=s, name="eval/accuracy", value=0.1 * s,
                                                  rollouts_consumed=16 * s, tokens_generated=0,
                                                  wall_seconds=0.0) for s in (0, 1, 2)])  # fmt: skip
            opened.finish_run(run_id, "finished")
        yield opened


def _spread(url: str, runs: str = ABC, bins: int = 10) -> dict:
    with TestClient(create_app(url), base_url=LOCAL) as client:
        response = client.get(f"/api/compare/budget?{runs}&bins={bins}")
        assert response.status_code == 200, response.text
        return response.json()


def _points(trace: dict) -> list[tuple[float, float]]:
    return list(zip(trace["x"], trace["y"], strict=True))


def test_each_run_uses_its_own_seeds_prepass(store, url):
    ids = {
        seed: record_prepass(store, _config("uniform", seed), seed, _prepass_rows(seed)) for seed in (0, 1)
    }
    fig = _spread(url)
    assert fig["layout"]["meta"] == {
        "reference": "prepass",
        "label": f"pre-pass pass rate (seed 0: {ids[0]}, seed 1: {ids[1]})",
    }
    assert fig["layout"]["xaxis"]["title"]["text"] == "reference pass rate (pre-pass)"
    uniform, uniform_bins, greso, greso_bins = fig["data"]
    assert uniform["name"] == "grpo/uniform k=8 T=1.0 (prompts)"
    assert greso_bins["name"] == "grpo/greso k=8 T=1.0 (mean per bin)"
    assert _points(uniform) == [(0.95, 8), (0.5, 8), (0.05, 8)]  # p1, p2, p3 at seed 0's rates
    # B at seed 0's rates, then C at seed 1's: p1 0.85, p2 0.55, p4 0.25.
    assert _points(greso) == [(0.95, 2), (0.5, 12), (0.15, 16), (0.85, 6), (0.55, 8), (0.25, 8)]
    assert greso_bins["x"] == pytest.approx(CENTRES)
    # bin 1: [16]; bin 2: [8]; bin 5: 0.5 and 0.55 -> (12 + 8) / 2 = 10; bin 8: [6]; bin 9: [2].
    assert greso_bins["y"] == [None, 16, 8, None, None, 10, None, None, 6, 2]
    assert uniform_bins["y"] == [8, None, None, None, None, 8, None, None, None, 8]
    # Five bins: 0.05 and 0.15 share [0, 0.2); 0.5 and 0.55 share [0.4, 0.6).
    five = _spread(url, bins=5)["data"]
    assert five[3]["x"] == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    # greso at 5 bins: [0, 0.2): 16 (0.15); [0.2, 0.4): 8 (0.25); [0.4, 0.6): 10; [0.8, 1]: (6 + 2) / 2.
    assert five[3]["y"] == [16, 8, 10, None, 4]


def test_without_a_prepass_the_pooled_training_pass_rate_is_the_reference(store, url):
    fig = _spread(url)
    assert fig["layout"]["meta"]["reference"] == "pooled"
    assert fig["layout"]["meta"]["label"] == (
        "pooled pass rate of the selected runs (accepted / rollouts over all their visits)"
    )
    assert fig["layout"]["xaxis"]["title"]["text"] == "reference pass rate (pooled training)"
    # Accepted / rollouts over all visits of A, B and C: p1 (14 + 4 + 5) / (16 + 4 + 6) = 23/26,
    # p2 18/36 = 0.5, p3 0/8 = 0, p4 (2 + 2) / (16 + 8) = 1/6.
    uniform, uniform_bins, greso, greso_bins = fig["data"]
    assert _points(uniform) == [(pytest.approx(23 / 26), 8), (0.5, 8), (0.0, 8)]
    assert greso["x"] == pytest.approx([23 / 26, 0.5, 1 / 6, 23 / 26, 0.5, 1 / 6])
    assert greso["y"] == [2, 12, 16, 6, 8, 8]
    # bin 1: (16 + 8) / 2 = 12; bin 5: (12 + 8) / 2 = 10; bin 8: (2 + 6) / 2 = 4.
    assert greso_bins["y"] == [None, 12, None, None, None, 10, None, None, 4, None]
    assert uniform_bins["y"] == [8, None, None, None, None, 8, None, None, 8, None]
    # Pooled over the selected runs only: A alone has p1 14/16, p2 4/8, p3 0/8.
    assert _points(_spread(url, "run=run-a")["data"][0]) == [(14 / 16, 8), (0.5, 8), (0.0, 8)]


def test_a_prepass_of_another_seed_or_task_is_not_used(store, url):
    seed0 = record_prepass(store, _config("uniform", 0), 0, _prepass_rows(0))
    record_prepass(store, _config("uniform", 2), 2, _prepass_rows(1))  # a seed no run has
    record_prepass(store, _config("uniform", 1, max_terms=5), 1, _prepass_rows(1))  # another task
    fig = _spread(url)  # C (seed 1) has no pre-pass of its task: all fall back to the pooled rate
    assert fig["layout"]["meta"]["reference"] == "pooled"
    assert fig["layout"]["meta"]["label"].endswith("; no pre-pass of this task for seed 1")
    assert _points(fig["data"][0])[0] == (pytest.approx(23 / 26), 8)
    only_seed0 = _spread(url, "run=run-a&run=run-b")["layout"]["meta"]
    assert only_seed0 == {"reference": "prepass", "label": f"pre-pass pass rate (seed 0: {seed0})"}


def test_prompts_without_a_reference_are_left_off_and_counted(store, url):
    record_prepass(store, _config("uniform", 0), 0, [_stat("p1", 20, 19), _stat("p2", 20, 10)])
    fig = _spread(url, "run=run-a&run=run-b")
    assert _points(fig["data"][0]) == [(0.95, 8), (0.5, 8)]  # p3 is not in the pre-pass
    assert _points(fig["data"][2]) == [(0.95, 2), (0.5, 12)]  # nor p4
    assert fig["layout"]["title"]["text"].endswith(" · 2 prompt(s) without a reference left off")


def test_prepass_runs_are_kept_out_of_the_curves(store, url):
    prepass = record_prepass(store, _config("uniform", 0), 0, _prepass_rows(0))
    with TestClient(create_app(url), base_url=LOCAL) as client:
        picked = f"run=run-a&run={prepass}"
        curves = client.get(f"/api/compare?{picked}&metric=eval/accuracy").json()["data"]
        assert [c["name"] for c in curves] == ["grpo/uniform k=8 T=1.0"]
        assert [r["group"] for r in client.get(f"/api/targets?{picked}&target=0.1").json()] == [
            "grpo/uniform k=8 T=1.0"
        ]
        page = client.get(f"/compare?{picked}").text
        assert page.count("pre-pass: a reference, no curve") == 1 and 'id="spread"' in page
        assert '<span class="muted prepass">pre-pass</span>' in client.get("/").text
        # The pre-pass's own rows are no setting's points, and the runs still find it by seed.
        spread = client.get(f"/api/compare/budget?{picked}").json()
        assert len(spread["data"]) == 2 and spread["layout"]["meta"]["reference"] == "prepass"
        assert client.get(f"/api/compare/budget?{ABC}&bins=0").status_code == 400
        assert client.get("/api/compare/budget?run=nope").status_code == 404


def test_any_allocator_name_can_be_filtered_and_compared(store, url):
    with TestClient(create_app(url), base_url=LOCAL) as client:
        page = client.get("/").text
        assert '<option value="greso">greso</option>' in page
        assert page.count('name="run" value="run-b"') == 1
        filtered = client.get("/?allocator=greso").text
        assert 'value="run-b"' in filtered and 'value="run-c"' in filtered and 'value="run-a"' not in filtered
        curves = client.get(f"/api/compare?{ABC}&metric=eval/accuracy").json()["data"]
        assert [c["name"] for c in curves if "fill" not in c] == [
            "grpo/uniform k=8 T=1.0",
            "grpo/greso k=8 T=1.0 (mean of 2 seeds, 95% CI)",
        ]


def test_export_budget_table(store, url, capsys):
    ids = {
        seed: record_prepass(store, _config("uniform", seed), seed, _prepass_rows(seed)) for seed in (0, 1)
    }
    assert (
        main(["export", "run-a", "run-b", "run-c", "--table", "budget", "--format", "csv", "--db", url]) == 0
    )
    lines = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(lines) == 20 and list(lines[0]) == [
        "group", "runs", "reference", "bin_low", "bin_high", "points", "visits", "rollouts",
        "rollouts_per_visit",
    ]  # fmt: skip
    # greso's bin 5: B's p2 (1 visit, 12 rollouts) and C's p2 (2 visits, 16): the mean of 12 and 8.
    assert lines[15] == {"group": "grpo/greso k=8 T=1.0", "runs": "run-b run-c", "reference": "prepass",
                         "bin_low": "0.5", "bin_high": "0.6", "points": "2", "visits": "3", "rollouts": "28",
                         "rollouts_per_visit": "10.0"}  # fmt: skip
    assert [line["rollouts_per_visit"] for line in lines[:10]] == ["8.0", "", "", "", "", "8.0", "", "", "",
                                                                    "8.0"]  # fmt: skip
    assert main(["export", "run-a", "run-b", "run-c", "--table", "budget", "--bins", "5", "--db", url]) == 0
    table = json.loads(capsys.readouterr().out)
    label = f"pre-pass pass rate (seed 0: {ids[0]}, seed 1: {ids[1]})"
    assert table["reference"] == {"kind": "prepass", "prepasses": {"0": ids[0], "1": ids[1]}, "label": label}
    greso = table["settings"][1]
    assert (greso["group"], greso["runs"], greso["unreferenced"]) == ("grpo/greso k=8 T=1.0",
                                                                      ["run-b", "run-c"], 0)  # fmt: skip
    assert [b["mean"] for b in greso["bins"]] == [16, 8, 10, None, 4]
    assert main(["export", "run-a", "--table", "budget", "--bins", "0", "--db", url]) == 2
    assert capsys.readouterr().err.strip() == "dibs: error: export --bins must be in 1..100, got 0"


def test_record_prepass_checks_its_rows_before_writing(store):
    good = _prepass_rows(0)
    bad = {
        "given twice": [*good, _stat("p1", 20, 1)],
        "n_alloc must be >= 1": [_stat("p1", 0, 0)],
        "p_hat must be a pass rate in [0, 1]": [PromptStat("p1", 1.5, math.nan, 4, 2, False)],
        "no prompt rows": [],
        "accepted=5 exceeds n_alloc=4": [PromptStat("p1", 0.5, math.nan, 4, 5, False)],
    }
    for message, rows in bad.items():
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            record_prepass(store, _config("uniform", 0), 0, rows)
    with pytest.raises(ValueError, match="'task' section"):
        record_prepass(store, {"seed": 0}, 0, good)
    assert len(store.list_runs()) == 3  # nothing was written
    # A config model is taken as its JSON form; the run is finished, summarised, its rows at step 0.
    run_id = record_prepass(store.url, ExperimentConfig.model_validate({"seed": 0}), 0, good)
    run = store.get_run(run_id)
    assert run["status"] == "finished" and run["name"] == "prepass-reasoning_gym-s0" and run["metrics"] == []
    assert run["summary"] == {"kind": "prepass", "prompts": 4, "samples": 80, "accepted": 33,
                              "pass_rate": 33 / 80}  # fmt: skip
    assert [(r["step"], r["prompt_id"], r["p_hat"]) for r in run["prompt_stats"]] == [
        (0, "p1", 0.95), (0, "p2", 0.5), (0, "p3", 0.05), (0, "p4", 0.15)
    ]  # fmt: skip


def test_match_prepasses_takes_the_newest_with_the_same_seed_and_task():
    task = {"kind": "math"}
    runs = [{"id": "r", "seed": 1, "config": {"task": task}}]
    kind = {"kind": "prepass"}
    candidates = [  # newest first, as StoreReader.runs lists them
        {"id": "other-task", "seed": 1, "config": {"task": {"kind": "reasoning_gym"}}, "summary": kind},
        {"id": "not-a-prepass", "seed": 1, "config": {"task": task}, "summary": {"final": {}}},
        {"id": "newest", "seed": 1, "config": {"task": task}, "summary": kind},
        {"id": "older", "seed": 1, "config": {"task": task}, "summary": kind},
    ]
    assert budget.match_prepasses(runs, candidates) == {"r": candidates[2]}
    assert [budget.bin_index(p, 10) for p in (0.0, 0.3, 3 / 10, 0.7, 0.999, 1.0)] == [0, 3, 3, 7, 9, 9]
