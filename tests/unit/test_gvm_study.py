"""The GVM study's endpoints and go/no-go figure (bench/gvm_study_report.py, bench/gvm_study_prepass.py), on
curves and pools whose answers are derived by hand."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from gvm_study_prepass import pool_summary, predicted_gain, variance_proxy
from gvm_study_report import allocation_checks, auc, crossing, endpoints, geo_ratio, smoothed

pytestmark = pytest.mark.unit


def curve(accs, per_step=128, every=5, updates_per_step=1):
    """Eval points [step, rollouts, updates, accuracy] every `every` steps."""
    return [[i * every, i * every * per_step, i * every * updates_per_step, a] for i, a in enumerate(accs)]


def test_smoothing_is_a_centred_mean_of_three_cut_at_the_ends():
    np.testing.assert_allclose(smoothed([0.0, 0.3, 0.6, 0.3]), [0.15, 0.3, 0.4, 0.45])


def test_crossing_interpolates_between_evals_on_the_smoothed_curve():
    c = curve([0.2, 0.2, 0.5, 0.5, 0.5])  # smoothed: 0.2, 0.3, 0.4, 0.5, 0.5
    # target 0.45 lies halfway between the evals at steps 10 (0.4) and 15 (0.5): step 12.5, 1600 rollouts
    assert crossing(c, 0.45, 0) == (12.5, True)
    assert crossing(c, 0.45, 1) == (1600.0, True)
    assert crossing(c, 0.2, 0) == (0.0, True)  # reached at step 0
    assert crossing(c, 0.9, 1) == (2560.0, False)  # never: censored at the last point


def test_auc_is_the_mean_accuracy_over_the_budget_window():
    c = curve([0.2, 0.4, 0.4])  # rollouts 0, 640, 1280
    # [0, 640]: mean 0.3; [640, 960]: 0.4 -> (0.3 * 640 + 0.4 * 320) / 960 = 1/3
    assert auc(c, 960) == pytest.approx(1 / 3)
    assert math.isnan(auc(c, 2000))  # the curve does not reach the window's end


def test_geo_ratio_pools_logs_with_a_t_interval():
    r = geo_ratio([2.0, 0.5, 1.0])
    assert r["mean"] == pytest.approx(1.0) and r["n"] == 3
    # logs ln2, -ln2, 0: sd = ln2, half-width = 4.303 * ln2 / sqrt(3)
    half = 4.303 * math.log(2) / math.sqrt(3)
    assert r["ci95"] == [round(math.exp(-half), 3), round(math.exp(half), 3)]
    assert geo_ratio([]) == {"mean": None, "ci95": None, "n": 0}


def _cells(arm_accs, updates=1, per_step=128):
    return [
        {
            "algorithm": "raftpp",
            "arm": arm,
            "seed": seed,
            "curve": curve(accs, per_step=ps, updates_per_step=u),
        }
        for (arm, ps, u), by_seed in arm_accs.items()
        for seed, accs in by_seed.items()
    ]


def test_endpoints_ratios_are_uniform_cost_over_arm_cost_per_seed():
    # uniform: 0.2 -> 0.6 (gain 0.4, final = mean of the last 3 = 0.6); 80% target = 0.52
    base = [0.2, 0.2, 0.6, 0.6, 0.6, 0.6]  # smoothed 0.2, 0.333, 0.467, 0.6: crosses 0.52 at step 11.92
    fast = [0.2, 0.6, 0.6, 0.6, 0.6, 0.6]  # smoothed 0.4, 0.467, 0.6: crosses at step 5 + 5 * 0.4 = 7
    cells = _cells({("uniform", 128, 1): {0: base, 1: base}, ("gvm", 256, 32): {0: fast, 1: fast}})
    row = endpoints(cells)["raftpp"]["gvm"]
    steps = row["steps_to_80"]
    uniform_step = 10 + 5 * (0.52 - 0.4666667) / (0.6 - 0.4666667)
    assert steps["mean"] == 7 and steps["reached"] == "2/2"
    assert steps["ratio_vs_uniform"]["mean"] == pytest.approx(uniform_step / 7, abs=1e-3)
    # rollouts: the arm spends 2x per step, so its ratio is half the step ratio; updates: 32x per step
    assert row["rollouts_to_80"]["ratio_vs_uniform"]["mean"] == pytest.approx(uniform_step / 14, abs=1e-3)
    assert row["updates_to_80"]["ratio_vs_uniform"]["mean"] == pytest.approx(uniform_step / 224, abs=1e-3)
    assert row["budget_honest"] is True


def test_variance_proxy_counts_solvable_prompts_given_nothing():
    p, g = np.array([0.5, 0.1, 0.0]), np.array([2.0, 1.0, 3.0])
    # 4/(4*0.5) + 1/(0 -> skipped) ; the p = 0 prompt never counts
    assert variance_proxy(p, g, np.array([4, 0, 4])) == (2.0, 1)
    assert variance_proxy(p, g, np.array([4, 2, 0])) == (2.0 + 1 / (2 * 0.1), 0)


def test_oracle_gain_is_one_on_a_pool_of_identical_prompts_and_above_one_when_they_differ():
    same = predicted_gain([0.3] * 40, [5.0] * 40, m=8, n=8, n_probe=8, alpha=1e-3, beta=2.0, batches=50)
    assert same["oracle_gain"] == pytest.approx(1.0)
    # half the pool p = 0.9 and G = 1, half p = 0.05 and G = 10: weights differ by ~17x, so moving
    # rollouts to the hard half must cut Σ G²/(n p) well below uniform's
    mixed = predicted_gain(
        [0.9] * 20 + [0.05] * 20,
        [1.0] * 20 + [10.0] * 20,
        m=8,
        n=8,
        n_probe=8,
        alpha=1e-3,
        beta=2.0,
        batches=200,
    )
    assert mixed["oracle_gain"] > 1.3
    assert (
        predicted_gain([0.0] * 10, [0.0] * 10, m=4, n=8, n_probe=8, alpha=1e-3, beta=2.0)["oracle_gain"]
        is None
    )


def test_pool_summary_bands():
    s = pool_summary([0.0, 0.05, 0.3, 0.7, 1.0])
    assert s == {
        "p=0": 0.2,
        "0<p<=0.1": 0.2,
        "0.1<p<=0.5": 0.2,
        "0.5<p<=0.9": 0.2,
        "p>0.9": 0.2,
        "mean": 0.41,
    }


def test_allocation_checks_against_the_prepass(tmp_path):
    import gzip
    import json

    prepass = [{"seed": 0, "p": [0.5, 0.1, 0.0], "g": [2.0, 1.0, 3.0]}]
    # rows: [step, pool index, p̂, Ĝ, n, accepted, probed]
    uniform = [[1, 0, None, None, 8, 4, 0], [1, 1, None, None, 8, 1, 0], [1, 2, None, None, 8, 0, 0]]
    gvm = [[1, 0, 0.5, 2.0, 4, 2, 1], [1, 1, 0.0, 0.0, 0, 0, 1], [1, 2, 0.0, 0.0, 20, 0, 1]]
    path = tmp_path / "p.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for arm, rows in (("uniform", uniform), ("gvm", gvm)):
            f.write(
                json.dumps({"algorithm": "raftpp", "arm": arm, "seed": 0, "settings": "s", "rows": rows})
                + "\n"
            )
    out = allocation_checks(prepass, path, "s")["raftpp"]
    assert out["gvm"]["solvable_given_zero_frac"] == 0.5  # 1 of its 2 solvable rows got nothing
    assert out["uniform"]["solvable_given_zero_frac"] == 0.0
    # on the one solvable prompt gvm covered (index 0): uniform 4/(8*.5) = 1, gvm 4/(4*.5) = 2 -> 0.5
    assert out["gvm"]["variance_gain_on_covered"] == pytest.approx(0.5)
    assert out["uniform"]["variance_gain_on_covered"] == pytest.approx(1.0)


def test_update_count_control_separates_updates_from_allocation():
    from gvm_study_report import control

    base = [0.2, 0.2, 0.6, 0.6, 0.6, 0.6]  # crosses the 80% target (0.52) at step 11.92 (as above)
    fast = [0.2, 0.6, 0.6, 0.6, 0.6, 0.6]  # at step 7
    arms = {
        ("uniform", 128, 1): base,
        ("uniform_u4", 128, 4): base,
        ("gvm_u32", 256, 32): fast,
        ("uniform_u32", 128, 32): fast,
        ("gvm_u4", 256, 4): base,
        ("gvm", 256, 1): base,
    }
    out = control(_cells({k: {0: v, 1: v} for k, v in arms.items()}))
    uniform_step = 10 + 5 * (0.52 - 0.4666667) / (0.6 - 0.4666667)
    # here the whole 'paper' speed-up comes from the 32 updates: uniform at 32 is as fast as gvm at 32
    assert out["paper_setup"]["steps_to_80"]["mean"] == pytest.approx(uniform_step / 7, abs=1e-3)
    assert out["updates_alone"]["steps_to_80"]["mean"] == pytest.approx(uniform_step / 7, abs=1e-3)
    assert out["allocation_at_32_updates"]["steps_to_80"]["mean"] == 1.0
    assert out["allocation_at_4_updates"]["steps_to_80"]["mean"] == 1.0
    assert out["paper_setup"]["steps_to_80"]["per_seed"] == [round(uniform_step / 7, 4)] * 2
