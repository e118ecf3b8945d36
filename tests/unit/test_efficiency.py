"""dashboards/efficiency.py on hand-made curves: the target rule, first crossing, censoring, t intervals,
ratios to uniform and their bounds, and the benchmark's results format."""

import json
import math
import runpy
import subprocess
import sys

import pytest

from dibs.dashboards.efficiency import first_reach, markdown_table, mean_ci, summarize, target_accuracy

pytestmark = pytest.mark.unit

# (step, rollouts_consumed, accuracy)
U0 = [(0, 0, 0.50), (10, 1000, 0.60), (20, 2000, 0.70)]
U1 = [(0, 0, 0.50), (10, 1000, 0.66), (20, 2000, 0.74)]
G0 = [(0, 0, 0.50), (10, 1500, 0.70), (20, 3000, 0.72)]
G1 = [(0, 0, 0.50), (10, 1500, 0.60), (20, 3000, 0.65)]  # never reaches the target


def cell(alloc, seed, curve, algorithm="grpo"):
    return {"algorithm": algorithm, "allocator": alloc, "seed": seed, "curve": curve}


def test_target_is_start_plus_fraction_of_uniform_gain():
    # start 0.50, final mean 0.72: 0.50 + 0.8 * 0.22 = 0.676
    assert target_accuracy([U0, U1], 0.8) == pytest.approx(0.676)


def test_first_reach_and_censoring():
    assert first_reach(U0, 0.676) == (20, 2000, True)
    assert first_reach(U1, 0.676) == (20, 2000, True)  # 0.66 at step 10 is below
    assert first_reach(G0, 0.676) == (10, 1500, True)
    assert first_reach(G1, 0.676) == (20, 3000, False)  # what it spent: a lower bound


def test_mean_ci_uses_student_t():
    # mean 2, sample std 1, n = 3: half-width 4.303 / sqrt(3) = 2.4843
    out = mean_ci([1.0, 2.0, 3.0])
    assert out["mean"] == 2.0 and out["ci95"] == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(mean_ci([5.0])["ci95"])


def test_summary_rows_ratios_and_bounds():
    rows = summarize([cell("uniform", 0, U0), cell("uniform", 1, U1), cell("gvm", 0, G0), cell("gvm", 1, G1)])
    assert [r["allocator"] for r in rows] == ["uniform", "gvm"]
    uni, gvm = rows
    assert uni["reached"] == "2/2" and uni["rollouts_to_target"]["mean"] == 2000
    assert gvm["reached"] == "1/2" and gvm["rollouts_to_target"] == pytest.approx(
        {"mean": 2250.0, "ci95": 12.706 * 1060.66 / math.sqrt(2), "censored": True}, rel=1e-4)
    # uniform 2000 / gvm >= 2250: the ratio is at most 0.889
    assert gvm["rollouts_to_target_ratio_vs_uniform"] == {"value": 0.889, "kind": "<="}
    assert gvm["steps_to_target_ratio_vs_uniform"] == {"value": round(20 / 15, 3), "kind": "<="}
    assert uni["rollouts_to_target_ratio_vs_uniform"] == {"value": 1.0, "kind": "="}
    assert gvm["final_accuracy"]["mean"] == pytest.approx(0.685)
    table = markdown_table(rows)
    assert "| grpo | gvm | 67.6% | 1/2 | >=2250 ± 9529 | ≤ 0.89x | >=15 ± 64 | ≤ 1.33x |" in table  # 12.706 x 750 = 9529.5


def test_summary_needs_a_uniform_baseline():
    with pytest.raises(ValueError, match="raftpp: no uniform cells"):
        summarize([cell("gvm", 0, G0, "raftpp")])


def test_benchmark_summary_only_writes_the_results_files(tmp_path):
    """The benchmark script's results format, from a cells file (no training)."""
    script = "bench/sample_efficiency.py"
    settings = runpy.run_path(script)["settings_key"]([])  # run_path: module globals, main() not run
    cells = [cell("uniform", 0, U0), cell("uniform", 1, U1), cell("gvm", 0, G0), cell("gvm", 1, G1)]
    (tmp_path / "sample_efficiency_cells.jsonl").write_text(
        "".join(json.dumps(c | {"settings": settings}) + "\n" for c in cells))
    subprocess.run([sys.executable, script, "--summary-only", "--out", str(tmp_path), "--seeds", "0", "1"],
                   check=True, capture_output=True, text=True)
    doc = json.loads((tmp_path / "sample_efficiency.json").read_text())
    assert "80%" in doc["target_rule"] and doc["settings"] == settings
    row = doc["rows"][1]
    assert set(row) >= {"algorithm", "allocator", "seeds", "target_accuracy", "rollouts_to_target",
                        "steps_to_target", "final_accuracy"}
    assert row["seeds"] == [0, 1] and row["target_accuracy"] == 0.676
    assert (tmp_path / "sample_efficiency.md").read_text().startswith("| algorithm | allocator |")
