"""The allocator zoo's report (bench/allocators_report.py) and the study's plumbing (bench/allocators.py):
endpoints, paired ratios, the ranking and its resolution, missing cells, on synthetic curves whose answers
are derived by hand; the order of the cells and the reuse of the GVM study's cells."""

import gzip
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import allocators as study
from allocators_report import build, missing, paired, ranking, summary, write_report

pytestmark = pytest.mark.unit

# Eval every 5 steps. Smoothed (3 evals): 0.2, 0.333, 0.467, 0.6, 0.6, 0.6; uniform's gain 0.4 (last 3 evals
# 0.6), 80% target 0.52, crossed at step 10 + 5 x (0.52 - 0.467) / (0.6 - 0.467) = 12.
RISE = [0.2, 0.2, 0.6, 0.6, 0.6, 0.6]
FLAT = [0.2] * 6


def cell(arm, seed, per_step, accs=RISE, tokens_per_rollout=10, algorithm="raftpp", **extra):
    """Eval points [step, rollouts, updates, acc, tokens] (no tokens column when tokens_per_rollout is
    None, as the GVM study's cells)."""
    curve = []
    for i, a in enumerate(accs):
        step = 5 * i
        p = [step, step * per_step, step, a]
        curve.append(p if tokens_per_rollout is None else [*p, step * per_step * tokens_per_rollout])
    steps = [[1, per_step, 0, 1] + ([] if tokens_per_rollout is None else [per_step * tokens_per_rollout])]
    return {
        "algorithm": algorithm,
        "arm": arm,
        "seed": seed,
        "curve": curve,
        "steps": steps,
        "wall_seconds": 1.0,
    } | extra


def zoo():
    """uniform 128 rollouts a step; a 64 (2x fewer); b 32, 32, 64 by seed; slow 256; d reaches only on
    seed 0; c never; b's seed-2 cell reused (no tokens); a's responses 3x longer."""
    cells = []
    for s in (0, 1, 2):
        cells += [cell("uniform", s, 128), cell("a", s, 64, tokens_per_rollout=30), cell("slow", s, 256)]
        cells.append(cell("c", s, 128, FLAT))
        cells.append(cell("d", s, 16, RISE if s == 0 else FLAT))
    cells += [cell("b", 0, 32), cell("b", 1, 32), cell("b", 2, 64, tokens_per_rollout=None, reused_from="x")]
    return cells


PLAN = {"raftpp": ["uniform", "a", "b", "slow", "c", "d", "e"]}


def test_summary_and_paired_ratios():
    assert summary([1.0, 3.0]) == {
        "mean": 2.0,
        "ci95": round(12.706 * math.sqrt(2) / math.sqrt(2), 1),
        "n": 2,
    }
    assert summary([math.nan, None]) == {"mean": None, "ci95": None, "n": 0}
    # per seed of den: num / den, None unless both reached (or den's cost is 0, or num lacks the seed)
    num = {0: (100.0, True), 1: (100.0, True), 2: (100.0, False)}
    den = {0: (50.0, True), 1: (0.0, True), 2: (50.0, True), 3: (50.0, True)}
    assert paired(num, den) == {0: 2.0, 1: None, 2: None, 3: None}


def test_endpoints_per_arm_against_uniform():
    doc = build(zoo(), PLAN, [0, 1, 2], {"a": "uniform"})
    rows = doc["results"]["raftpp"]
    a = rows["a"]
    # 80%: step 12 -> uniform 12 x 128 = 1536 rollouts, a 12 x 64 = 768: ratio 2 in every seed
    assert a["rollouts_to_80"]["mean"] == 768 and a["rollouts_to_80"]["reached"] == "3/3"
    assert a["rollouts_to_80"]["ratio_vs_uniform"] == {"mean": 2.0, "ci95": [2.0, 2.0], "n": 3}
    assert a["steps_to_80"]["ratio_vs_uniform"]["mean"] == 1.0
    # 50% target 0.4: smoothed 0.333 -> 0.467 between steps 5 and 10: step 7.5; a at 7.5 x 64 = 480
    assert a["rollouts_to_50"]["mean"] == 480
    # tokens: uniform 1536 x 10, a 768 x 30: a needs 1.5x the tokens
    assert a["tokens_to_80"]["mean"] == 23040 and a["tokens_to_80"]["ratio_vs_uniform"]["mean"] == 0.667
    assert a["vs_reference"]["arm"] == "uniform" and a["vs_reference"]["rollouts_to_80"]["mean"] == 2.0
    # AUC: a's curve stops at 1600 of uniform's 25 x 128 = 3200 rollouts, so both are taken over [0, 1600]:
    # a (0.2 x 320 + 0.4 x 320 + 0.6 x 960) / 1600 = 0.48; uniform (0.2 x 640 + 0.4 x 640 + 0.6 x 320) / 1600
    # = 0.36
    assert a["auc"]["mean"] == 48.0 and a["auc_minus_uniform"] == {"mean": 12.0, "ci95": 0.0, "n": 3}
    # slow (256 a step) over [0, 3200]: (0.2 x 1280 + 0.4 x 1280 + 0.6 x 640) / 3200 = 0.36; uniform
    # (0.2 x 640 + 0.4 x 640 + 0.6 x 1920) / 3200 = 0.48
    slow = rows["slow"]
    assert slow["auc"]["mean"] == 36.0 and slow["auc_minus_uniform"] == {"mean": -12.0, "ci95": 0.0, "n": 3}
    assert slow["rollouts_to_80"]["ratio_vs_uniform"]["mean"] == 0.5
    # b: seed 2 reused without tokens -> rollouts on 3 seeds, tokens on 2, and a note
    b = rows["b"]
    assert b["reused_seeds"] == [2] and b["rollouts_to_80"]["reached"] == "3/3"
    assert b["tokens_to_80"]["reached"] == "2/2" and "tokens_note" in b
    assert "e" not in rows  # planned, never run: missing, not a row


def test_ranking_orders_by_pooled_ratio_and_checks_neighbours_pair_by_pair():
    r = build(zoo(), PLAN, [0, 1, 2], {})["ranking"]["raftpp"]
    # b: ratios 4, 4, 2 (geometric mean 32^(1/3) = 3.175); a 2; uniform 1; slow 0.5
    assert r["order"] == ["b", "a", "uniform", "slow"]
    assert r["unranked"] == {
        "c": "no seed where it and uniform both reached the target",
        "d": "reached the target in 1 of 3 seeds",
    }
    # b over a, per seed a's cost / b's: 2, 2, 1 -> logs ln2, ln2, 0: mean 2 ln2 / 3, sd ln2 / sqrt(3)
    first = r["neighbours"][0]
    mean, half = 2 * math.log(2) / 3, 4.303 * (math.log(2) / math.sqrt(3)) / math.sqrt(3)
    assert (first["better"], first["worse"]) == ("b", "a")
    assert first["ratio"]["mean"] == round(math.exp(mean), 3)
    assert first["ratio"]["ci95"] == [round(math.exp(mean - half), 3), round(math.exp(mean + half), 3)]
    assert first["ratio"]["ci95"][0] < 1 and not first["resolved"]  # b vs a: not resolved on 3 seeds
    assert [p["resolved"] for p in r["neighbours"]] == [False, True, True]  # a / uniform / slow: 2x exactly
    assert r["resolved"] is False and r["first_resolved"] is False
    assert r["vs_uniform"] == {
        "b": "fewer than uniform",
        "a": "fewer than uniform",
        "slow": "more than uniform",
    }
    assert "Not resolved: b over a" in r["statement"] and "First place not resolved" in r["statement"]


def test_a_ranking_with_exact_ratios_is_resolved_and_one_seed_is_not():
    cells = [cell(arm, s, n) for s in (0, 1) for arm, n in (("uniform", 128), ("a", 64), ("slow", 256))]
    r = ranking(build(cells, {"raftpp": ["uniform", "a", "slow"]}, [0, 1], {})["results"]["raftpp"])
    assert r["order"] == ["a", "uniform", "slow"] and r["resolved"] and r["first_resolved"]
    assert "Resolved: every neighbour's paired interval lies above 1." in r["statement"]
    one = build([c for c in cells if c["seed"] == 0], {"raftpp": ["uniform", "a"]}, [0], {})
    r1 = one["ranking"]["raftpp"]
    assert r1["order"] == ["a", "uniform"] and not r1["resolved"]
    assert r1["vs_uniform"] == {"a": "unresolved (fewer than 2 paired seeds)"}


def test_missing_cells_and_seeds_without_target_are_reported():
    cells = [c for c in zoo() if c["arm"] in ("uniform", "a")] + [cell("uniform", 3, 128, FLAT)]
    gaps = missing(cells, {"raftpp": ["uniform", "a"], "grpo": ["uniform"]}, [0, 1, 2, 3, 4])
    assert gaps["raftpp"] == {"cells": {"uniform": [4], "a": [3, 4]}, "seeds_without_target": [3, 4]}
    assert gaps["grpo"] == {"cells": {"uniform": [0, 1, 2, 3, 4]}, "seeds_without_target": [0, 1, 2, 3, 4]}


def head(plan):
    arms = {a: {"what": a, "overrides": [], "budget": "rollouts"} for a in plan["raftpp"]}
    return {"settings": "s", "plan": plan, "arms": arms, "references": {}, "seeds_planned": [0, 1, 2]}


def test_write_report_with_no_cells_and_with_cells(tmp_path):
    doc = write_report(tmp_path, head(PLAN), [], [], tmp_path / "none.jsonl.gz")
    assert doc["results"] == {} and doc["missing"]["raftpp"]["cells"]["a"] == [0, 1, 2]
    assert "Missing (not run yet): uniform seeds [0, 1, 2]" in (tmp_path / "allocators.md").read_text()
    assert not (tmp_path / "allocators.png").exists()
    doc = write_report(tmp_path, head(PLAN), zoo(), [], tmp_path / "none.jsonl.gz")
    md = (tmp_path / "allocators.md").read_text()
    assert "| a | rollouts | 3 | 480 (3/3) 2.00x [2.00, 2.00] | 768 (3/3) 2.00x [2.00, 2.00] |" in md
    assert "Missing (not run yet): e seeds [0, 1, 2]." in md
    assert json.loads((tmp_path / "allocators.json").read_text())["ranking"]["raftpp"]["order"][0] == "b"
    assert doc["uniform_step1_tokens"] == {f"raftpp seed {s}": 1280 for s in (0, 1, 2)}  # 128 x 10
    assert (tmp_path / "allocators.png").stat().st_size > 0


def test_cells_run_seed_by_seed_algorithm_by_algorithm_token_arms_last():
    todo = {
        (al, arm, s)
        for al in ("raftpp", "grpo")
        for arm in ("uniform", "dapo", "uniform_tok")
        for s in (0, 1)
    }
    todo = {k for k in todo if not (k[0] == "grpo" and k[1] == "uniform_tok")}  # not in grpo's plan
    assert study.order(todo, [0, 1], ["raftpp", "grpo"]) == [
        ("raftpp", "uniform", 0),
        ("raftpp", "dapo", 0),
        ("grpo", "uniform", 0),
        ("grpo", "dapo", 0),
        ("raftpp", "uniform", 1),
        ("raftpp", "dapo", 1),
        ("grpo", "uniform", 1),
        ("grpo", "dapo", 1),
        ("raftpp", "uniform_tok", 0),
        ("raftpp", "uniform_tok", 1),
    ]
    assert study.budget_mode("knapsack_tok") == "tokens" and study.budget_mode("knapsack") == "rollouts"
    assert "uniform_tok" not in study.PLAN["grpo"]


def test_only_arms_with_the_gvm_studys_overrides_and_settings_are_reused(tmp_path):
    assert study.gvm_twin("uniform") == "uniform" and study.gvm_twin("gvm") == "gvm"
    assert study.gvm_twin("dapo") is None and study.gvm_twin("uniform_tok") is None
    src, out = tmp_path / "gvm", tmp_path / "out"
    src.mkdir(), out.mkdir()
    theirs = [
        {"algorithm": "raftpp", "arm": "uniform", "seed": 0, "settings": "k", "arm_overrides": []},
        {"algorithm": "raftpp", "arm": "gvm", "seed": 0, "settings": "other", "arm_overrides": []},
        {"algorithm": "raftpp", "arm": "uniform", "seed": 9, "settings": "k", "arm_overrides": []},
        {"algorithm": "grpo", "arm": "uniform16", "seed": 0, "settings": "k", "arm_overrides": ["x"]},
    ]
    (src / "gvm_study_cells.jsonl").write_text("".join(json.dumps(c) + "\n" for c in theirs))
    with gzip.open(src / "gvm_study_prompts.jsonl.gz", "wt") as f:
        f.write(json.dumps({"algorithm": "raftpp", "arm": "uniform", "seed": 0, "settings": "k", "rows": []}))
    files = {k: out / f"allocators_{k}" for k in ("cells.jsonl", "prompts.jsonl.gz")}
    a = SimpleNamespace(gvm_study=src, arms=list(study.ARMS), algorithms=["raftpp", "grpo"], seeds=[0, 1])
    cells: list[dict] = []
    assert study.reuse(a, "k", cells, files, write=False)[0].startswith("1 cells of uniform can be reused")
    assert cells == [] and not files["cells.jsonl"].exists()
    notes = study.reuse(a, "k", cells, files)
    assert [(c["arm"], c["seed"], c["reused_from"]) for c in cells] == [
        ("uniform", 0, str(src / "gvm_study_cells.jsonl"))
    ]
    assert "reused 1 cells of uniform" in notes[0] and files["cells.jsonl"].read_text().count("\n") == 1
    assert study.reuse(a, "k", cells, files) == []  # already copied: nothing more


def test_db_records_the_prepass_and_cells_known_only_from_the_files(tmp_path):
    from allocators_store import Recording

    url = f"sqlite:///{tmp_path}/d.db"
    pp = {"seed": 0, "samples": 4, "prompts": ["1+2=", "3+4="], "p": [0.25, 0.0], "g": [0.5, 0.0]}
    c = cell("uniform", 0, 128, settings="k", arm_overrides=[], rollouts_consumed=128, reused_from="x")
    c["steps"] = [[1, 128.0, 0.0, 1]]  # a GVM study cell: no tokens column
    prompts = tmp_path / "p.jsonl.gz"
    with gzip.open(prompts, "wt") as f:
        row = {"algorithm": "raftpp", "arm": "uniform", "seed": 0, "settings": "k"}
        f.write(json.dumps(row | {"rows": [[1, 1, 0.5, None, 8, 4, 0]]}) + "\n")
    rec = Recording(url, "k", [])
    rec.catch_up([pp], [c], prompts)
    pre = rec.store.get_run("allocators-k-prepass-s0")
    assert pre["summary"]["kind"] == "prepass" and pre["seed"] == 0 and pre["status"] == "finished"
    assert [
        (r["prompt_id"], r["p_hat"], r["n_alloc"], r["accepted"], r["step"]) for r in pre["prompt_stats"]
    ] == [
        ("1+2=", 0.25, 4, 1, 0),
        ("3+4=", 0.0, 4, 0, 0),
    ]
    run = rec.store.get_run("allocators-k-raftpp-uniform-s0")
    assert run["config"]["task"] == pre["config"]["task"] and run["summary"]["from_files"] is True
    assert run["summary"]["reused_from"] == "x"
    acc = [
        (m["step"], m["value"], m["rollouts_consumed"])
        for m in run["metrics"]
        if m["name"] == "eval/accuracy"
    ]
    assert acc[:3] == [(0, 0.2, 0), (5, 0.2, 640), (10, 0.6, 1280)]
    [ps] = run["prompt_stats"]
    assert (ps["prompt_id"], ps["p_hat"], ps["g_hat"], ps["n_alloc"], ps["accepted"]) == (
        "3+4=",
        0.5,
        None,
        8,
        4,
    )
    Recording(url, "k", []).catch_up([pp], [c], prompts)  # a rerun stores nothing twice
    assert len(rec.store.list_runs()) == 2
