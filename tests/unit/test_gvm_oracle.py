"""gvm_oracle on a scripted engine: the large probe (n_oracle samples per prompt, not charged), the GVM
split with a floor of one, its recorded cost, config validation, the loop's accounting, the `dibs run`
warning and the dashboards' not budget-honest mark."""

import functools
import runpy

import numpy as np
import pytest
import torch
from probe_script import script_grad_norms, tiny_policy

from dibs.algorithms.allocation import gvm_allocate
from dibs.dashboards import compare
from dibs.dashboards.efficiency import DAGGER_NOTE, markdown_table, summarize
from dibs.platform.allocation.allocators import AllocContext, GVMOracleAllocator
from dibs.platform.allocation.factory import build_allocator
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig, ConfigError, TaskConfig, validate_dict
from dibs.platform.rollout.base import Rollouts, SamplingSpec
from dibs.platform.runtime.budget import Budget, account
from dibs.platform.runtime.loop import allocate
from dibs.platform.tasks.base import Problem
from dibs.platform.tasks.chain_sum import ChainSumTask
from dibs.platform.tasks.evaluate import score_groups

pytestmark = pytest.mark.unit

# The chain-sum task's rewards, as the loop hands them to allocators.
SCORE = functools.partial(score_groups, ChainSumTask(TaskConfig()))

# prompt: (answer, accept pattern cycled over the probe's samples, gradient norm of each of its samples)
SCRIPT = {
    "1+2=": (3, [1, 0], 2.0),  # p = 1/2, G = 2
    "5-9=": (-4, [0], 9.0),  # p = 0: no accepted sample, so G = 0 and weight 0
    "7+7=": (14, [1], 2.0),  # p = 1, G = 2
    "2-1=": (1, [0, 0, 1, 0], 4.0),  # p = 1/4, G = 4
}
NAMES = list(SCRIPT)
PROMPTS = [Problem(name, SCRIPT[name][0], 2) for name in NAMES]
SPEC = SamplingSpec(temperature=0.9, max_new_tokens=5)


class ScriptEngine:
    """Sample k of a prompt is right iff its pattern says so; sequences[:, 0] carries the prompt's index
    (for the stubbed norms); every sample has 3 response tokens."""

    def __init__(self, script=SCRIPT):
        self.script, self.calls = script, []

    def generate(self, prompts, counts, spec, *, seed):
        self.calls.append((list(prompts), list(counts), spec, seed))
        gids = [i for i, c in enumerate(counts) for _ in range(c)]
        ks = [k for c in counts for k in range(c)]
        texts = []
        for i, k in zip(gids, ks, strict=True):
            answer, pattern, _ = self.script[prompts[i]]
            texts.append(f"\\boxed{{{answer + (0 if pattern[k % len(pattern)] else 1)}}}")
        B = len(texts)
        seq = torch.tensor([NAMES.index(prompts[i]) for i in gids], dtype=torch.long)[:, None].repeat(1, 6)
        resp = torch.zeros(B, 5)
        resp[:, 2:] = 1.0
        return Rollouts(
            seq,
            torch.ones(B, 6, dtype=torch.long),
            resp,
            torch.zeros(B, 5),
            torch.tensor(gids, dtype=torch.long),
            texts,
            torch.ones(B, dtype=torch.bool),
        )


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


@pytest.fixture(autouse=True)
def scripted_norms(monkeypatch):
    script_grad_norms(monkeypatch, torch.tensor([SCRIPT[n][2] for n in NAMES]))


def ctx(engine, policy, seed=11):
    return AllocContext(engine, policy, SPEC, seed, score=SCORE)


ORACLE = AllocationConfig(allocator="gvm_oracle", n_per_prompt=4, n_oracle=8, n_probe=2)


def test_oracle_probes_n_oracle_each_uncharged_and_splits_by_hand(policy):
    engine = ScriptEngine()
    alloc = build_allocator(ORACLE).allocate(PROMPTS, ctx(engine, policy))
    # One probe: n_oracle = 8 samples per prompt (not n_probe = 2), the step's spec, the context's seed.
    assert engine.calls == [(NAMES, [8] * 4, SPEC, 11)]
    # Charged nothing (the loop charges probe_*); the cost is in the oracle metrics: 4 x 8 = 32 rollouts
    # of 3 response tokens each.
    assert (alloc.probe_rollouts, alloc.probe_tokens) == (0, 0)
    assert alloc.stats[M.ALLOC_ORACLE_ROLLOUTS] == 32.0 == 4 * ORACLE.n_oracle
    assert alloc.stats[M.ALLOC_ORACLE_TOKENS] == 96.0
    assert alloc.p_hat.tolist() == [0.5, 0.0, 1.0, 0.25] and alloc.g_hat.tolist() == [2.0, 0.0, 2.0, 4.0]
    # w = G / sqrt(p + 1e-3 / p) = [2/sqrt(.502), 0, 2/sqrt(1.001), 4/sqrt(.254)] = [2.82278, 0, 1.99900,
    # 7.93675], sum 12.75853; shares of N = 16: [3.540, 0, 2.507, 9.953]. The floor of 1 fixes prompt 1 at 1
    # and splits the other 15 by weight: 15 / 12.75853 x w = [3.31868, -, 2.35020, 9.33112]. Floors
    # [3, 1, 2, 9] sum to 15; the largest residual (.350, prompt 2) gets the last one -> [3, 1, 3, 9].
    # (gvm's floor of 0 gives [4, 0, 2, 10] on the same estimates.)
    assert alloc.counts.tolist() == [3, 1, 3, 9] and alloc.counts.sum() == 16
    assert alloc.probed.tolist() == [True] * 4
    assert alloc.stats == pytest.approx(
        {
            M.ALLOC_N_MIN: 1.0,
            M.ALLOC_N_MAX: 9.0,
            M.ALLOC_ZERO_PROMPTS: 0.0,
            M.ALLOC_P_MEAN: (0.5 + 0 + 1 + 0.25) / 4,
            M.ALLOC_G_MEAN: (2 + 2 + 4) / 3,
            M.ALLOC_GRAD_TIED: 1.0,
            M.ALLOC_PROBED_PROMPTS: 4.0,
            M.ALLOC_ORACLE_ROLLOUTS: 32.0,
            M.ALLOC_ORACLE_TOKENS: 96.0,
        }
    )


def test_a_higher_configured_floor_wins(policy):
    cfg = ORACLE.model_copy(update={"min_per_prompt": 2})
    counts = build_allocator(cfg).allocate(PROMPTS, ctx(ScriptEngine(), policy)).counts
    # Floor 2: prompt 1 fixed at 2, the other 14 split as 14 / 12.75853 x w = [3.09745, -, 2.19351, 8.70903];
    # floors [3, 2, 2, 8] = 15, the last one to the largest residual (.709, prompt 3) -> [3, 2, 2, 9].
    assert counts.tolist() == [3, 2, 2, 9]
    assert (
        counts.tolist()
        == gvm_allocate([2.0, 0.0, 2.0, 4.0], [0.5, 0.0, 1.0, 0.25], 16, min_per_prompt=2).tolist()
    )


def test_filters_never_drop_a_prompt_below_one(policy):
    # filter_threshold 0.9 drops prompt 2 (p = 1) under gvm; the oracle's floor still gives it one.
    cfg = ORACLE.model_copy(update={"filter_threshold": 0.9})
    counts = build_allocator(cfg).allocate(PROMPTS, ctx(ScriptEngine(), policy)).counts
    assert counts.min() >= 1 and counts.sum() == 16
    gvm = gvm_allocate([2.0, 0.0, 2.0, 4.0], [0.5, 0.0, 1.0, 0.25], 16, filter_threshold=0.9)
    assert gvm[2] == 0 and counts[2] == 1


def test_no_accepted_probe_sample_gives_the_uniform_split(policy):
    engine = ScriptEngine({n: (a, [0], g) for n, (a, _, g) in SCRIPT.items()})
    alloc = build_allocator(ORACLE).allocate(PROMPTS, ctx(engine, policy))
    assert alloc.counts.tolist() == [4, 4, 4, 4]  # every weight 0: gvm_allocate's uniform split
    assert alloc.stats[M.ALLOC_P_MEAN] == 0.0 and alloc.stats[M.ALLOC_ORACLE_ROLLOUTS] == 32.0


def test_default_probe_is_32_samples_and_keeps_no_state(policy):
    engine = ScriptEngine()
    oracle = build_allocator(AllocationConfig(allocator="gvm_oracle", n_per_prompt=4))
    assert isinstance(oracle, GVMOracleAllocator)
    alloc = oracle.allocate(PROMPTS, ctx(engine, policy))
    assert engine.calls[0][1] == [32] * 4 and alloc.stats[M.ALLOC_ORACLE_ROLLOUTS] == 128.0
    oracle.observe(PROMPTS, alloc.counts, np.ones(4), np.ones(4))
    assert oracle.state_dict() == {}
    with pytest.raises(ValueError, match="GVMOracleAllocator keeps no state"):
        oracle.load_state_dict({"estimates": {}})


def test_the_loop_charges_only_the_training_rollouts(policy):
    budget, engine = Budget(), ScriptEngine()
    alloc = allocate(build_allocator(ORACLE), PROMPTS, ctx(engine, policy), budget)
    assert (budget.rollouts, budget.probe_rollouts, budget.tokens) == (0, 0, 0)  # the probe is not charged
    ro = engine.generate(NAMES, alloc.counts.tolist(), SPEC, seed=0)
    ones = torch.ones(len(ro.texts))
    spent = account(budget, alloc, ro, ones, ones, ones.bool())
    # 3 + 1 + 3 + 9 = 16 training rollouts of 3 tokens, nothing else.
    assert spent[M.BUDGET_ROLLOUTS] == 16 == spent[M.BUDGET_TRAIN_ROLLOUTS] and spent[M.BUDGET_TOKENS] == 48
    assert spent[M.BUDGET_PROBE_ROLLOUTS] == 0 == spent[M.STEP_PROBE_ROLLOUTS]
    assert spent[M.STEP_ROLLOUTS] == 16


# ---------------------------------------------------------------- config


def test_n_oracle_default_and_bounds():
    assert AllocationConfig().n_oracle == 32
    assert validate_dict({"allocation": {"allocator": "gvm_oracle", "n_oracle": 1}}).allocation.n_oracle == 1
    with pytest.raises(ConfigError) as e:
        validate_dict({"allocation": {"allocator": "gvm_oracle", "n_oracle": 0}}, "exp.yaml")
    assert str(e.value).startswith(
        "exp.yaml: allocation.n_oracle: Input should be greater than or equal to 1 (got 0)"
    )
    with pytest.raises(ConfigError, match="allocation.n_oracle: Input should be a valid integer"):
        validate_dict({"allocation": {"allocator": "gvm_oracle", "n_oracle": 2.5}}, "exp.yaml")


@pytest.mark.parametrize("allocator, warned", [("gvm_oracle", 1), ("gvm", 0)])
def test_dibs_run_warns_once_that_the_probe_is_not_charged(allocator, warned, tmp_path, monkeypatch, capsys):
    from dibs.platform.cli import main as cli

    monkeypatch.setattr(cli, "_execute", lambda *a, **k: 0)  # the warning comes before any training
    args = [
        "run",
        "experiments/gvm-smoke.yaml",
        "--set",
        f"allocation.allocator={allocator}",
        "--db",
        f"sqlite:///{tmp_path}/d.db",
    ]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert err.count("dibs: warning: gvm_oracle's probe is not charged to the rollout budget") == warned


# ---------------------------------------------------------------- dashboards


def _curve(rollouts_per_step):
    return [(s, s * rollouts_per_step, 0.5 + 0.01 * s) for s in range(0, 50, 10)]


def test_efficiency_table_marks_the_oracle_and_leaves_other_rows_alone():
    cells = [
        {"algorithm": "grpo", "allocator": a, "seed": 0, "curve": _curve(100)} for a in ("uniform", "gvm")
    ]
    plain = markdown_table(summarize(cells))
    oracle = {"algorithm": "grpo", "allocator": "gvm_oracle", "seed": 0, "curve": _curve(100)}
    marked = markdown_table(summarize([*cells, oracle]))
    lines = marked.splitlines()
    assert lines[:4] == plain.splitlines()  # header, rule, uniform, gvm: unchanged
    assert lines[4].startswith("| grpo | gvm_oracle † |") and lines[-1] == DAGGER_NOTE
    assert "†" not in plain and DAGGER_NOTE not in plain


def test_budget_to_target_labels_the_oracle_group():
    def run(i, allocator):
        config = {
            "seed": i,
            "algorithm": "grpo",
            "allocation": {"allocator": allocator},
            "eval": {"k": 4, "temperature": 1.0},
        }
        return {"id": str(i), "config": config}

    def rows(run_id):
        return [{"step": 10, "rollouts_consumed": 1000, "name": M.EVAL_ACCURACY, "value": 0.6}]

    groups = compare.group_runs([run(0, "gvm"), run(1, "gvm_oracle")])
    table = compare.budget_to_target(
        groups, {g.runs[0]["id"]: rows(g.runs[0]["id"]) for g in groups}, M.EVAL_ACCURACY, 0.5
    )
    assert [r["group"] for r in table] == ["grpo/gvm k=4 T=1.0", "grpo/gvm_oracle k=4 T=1.0 †"]
    assert [r["rollouts"]["mean"] for r in table] == [1000.0, 1000.0]  # numbers untouched


def test_benchmark_runs_the_oracle_only_on_request_as_gvm_with_the_allocator_swapped():
    bench = runpy.run_path("bench/sample_efficiency.py")  # module globals; main() not run
    assert "gvm_oracle" not in bench["ALLOCATORS"]  # never a default cell, nor in the settings key
    oracle, gvm = (bench["load"]("grpo", a, 0, []) for a in ("gvm_oracle", "gvm"))
    assert (oracle.allocation.allocator, gvm.allocation.allocator) == ("gvm_oracle", "gvm")
    same = {"allocation": {"allocator"}}
    assert oracle.model_dump(exclude=same) == gvm.model_dump(exclude=same)
