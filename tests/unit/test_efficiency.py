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

# (step, rollouts_consumed, accuracy); seeds 0 and 1 start from different warm starts (0.50, 0.40).
U0 = [(0, 0, 0.50), (10, 1000, 0.60), (20, 2000, 0.66), (30, 3000, 0.70), (40, 4000, 0.74)]
U1 = [(0, 0, 0.40), (10, 1000, 0.45), (20, 2000, 0.55), (30, 3000, 0.60), (40, 4000, 0.65)]
G0 = [(0, 0, 0.50), (10, 1500, 0.67), (20, 3000, 0.70), (30, 4500, 0.72), (40, 6000, 0.73)]
G1 = [(0, 0, 0.40), (10, 1500, 0.45), (20, 3000, 0.50), (30, 4500, 0.52), (40, 6000, 0.55)]  # never there


def cell(alloc, seed, curve, algorithm="grpo"):
    return {"algorithm": algorithm, "allocator": alloc, "seed": seed, "curve": curve}


def test_target_is_start_plus_fraction_of_the_seeds_uniform_gain():
    # seed 0: final level = mean(.66, .70, .74) = .70 -> .50 + .8 x .20 = .66
    assert target_accuracy(U0, 0.8) == pytest.approx(0.66)
    # seed 1: final level = mean(.55, .60, .65) = .60 -> .40 + .8 x .20 = .56
    assert target_accuracy(U1, 0.8) == pytest.approx(0.56)


def test_first_reach_and_censoring():
    assert first_reach(U0, 0.66) == (20, 2000, True)
    assert first_reach(U1, 0.56) == (30, 3000, True)  # 0.55 at step 20 is below
    assert first_reach(G0, 0.66) == (10, 1500, True)
    assert first_reach(G1, 0.56) == (40, 6000, False)  # what it spent: a lower bound


def test_mean_ci_uses_student_t():
    # mean 2, sample std 1, n = 3: half-width 4.303 / sqrt(3) = 2.4843
    out = mean_ci([1.0, 2.0, 3.0])
    assert out["mean"] == 2.0 and out["ci95"] == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(mean_ci([5.0])["ci95"])


def test_summary_rows_ratios_and_bounds():
    rows = summarize([cell("uniform", 0, U0), cell("uniform", 1, U1), cell("gvm", 0, G0), cell("gvm", 1, G1)])
    assert [r["allocator"] for r in rows] == ["uniform", "gvm"]
    uni, gvm = rows
    assert uni["targets_by_seed"] == {"0": 0.66, "1": 0.56} and uni["target_accuracy"] == 0.61
    # uniform: 2000 and 3000 rollouts (std 707.1): 2500 ± 12.706 x 707.1 / sqrt(2) = 6353
    assert uni["reached"] == "2/2" and uni["rollouts_to_target"] == pytest.approx(
        {"mean": 2500.0, "ci95": 6353.0, "censored": False}, rel=1e-3
    )
    # gvm: 1500 and >= 6000 (censored): >= 3750 ± 12.706 x 3182.0 / sqrt(2) = 28589
    assert gvm["reached"] == "1/2" and gvm["rollouts_to_target"] == pytest.approx(
        {"mean": 3750.0, "ci95": 28589.0, "censored": True}, rel=1e-3
    )
    # uniform 2500 / gvm >= 3750: the ratio is at most 0.667
    assert gvm["rollouts_to_target_ratio_vs_uniform"] == {"value": 0.667, "kind": "<="}
    assert gvm["steps_to_target_ratio_vs_uniform"] == {"value": 1.0, "kind": "<="}  # 25 / >= 25
    assert uni["rollouts_to_target_ratio_vs_uniform"] == {"value": 1.0, "kind": "="}
    assert gvm["final_accuracy"]["mean"] == pytest.approx(0.64)
    assert gvm["final_gain"]["mean"] == pytest.approx(0.19)  # (.23 + .15) / 2
    table = markdown_table(rows)
    assert (
        "| grpo | gvm | 61.0% | 1/2 | >=3750 ± 28588 | ≤ 0.67x | >=25 ± 191 | ≤ 1.00x "
        "| 64.0 ± 114.4 | 19.0 ± 50.8 |" in table
    )  # 28588.7


def test_a_seed_without_uniform_has_no_target():
    with pytest.raises(ValueError, match="grpo/gvm: no uniform cell for seeds \\[1\\]"):
        summarize([cell("uniform", 0, U0), cell("gvm", 1, G1)])


def test_summary_needs_a_uniform_baseline():
    with pytest.raises(ValueError, match="raftpp: no uniform cells"):
        summarize([cell("gvm", 0, G0, "raftpp")])


def test_benchmark_summary_only_writes_the_results_files(tmp_path):
    """The benchmark script's results format, from a cells file (no training)."""
    script = "bench/sample_efficiency.py"
    settings = runpy.run_path(script)["settings_key"]([])  # run_path: module globals, main() not run
    cells = [cell("uniform", 0, U0), cell("uniform", 1, U1), cell("gvm", 0, G0), cell("gvm", 1, G1)]
    (tmp_path / "sample_efficiency_cells.jsonl").write_text(
        "".join(json.dumps(c | {"settings": settings}) + "\n" for c in cells)
    )
    subprocess.run(
        [sys.executable, script, "--summary-only", "--out", str(tmp_path), "--seeds", "0", "1"],
        check=True,
        capture_output=True,
        text=True,
    )
    doc = json.loads((tmp_path / "sample_efficiency.json").read_text())
    assert "80%" in doc["target_rule"] and doc["settings"] == settings
    row = doc["rows"][1]
    assert set(row) >= {
        "algorithm",
        "allocator",
        "seeds",
        "target_accuracy",
        "rollouts_to_target",
        "steps_to_target",
        "final_accuracy",
    }
    assert row["seeds"] == [0, 1] and row["target_accuracy"] == 0.61
    assert (tmp_path / "sample_efficiency.md").read_text().startswith("| algorithm | allocator |")
