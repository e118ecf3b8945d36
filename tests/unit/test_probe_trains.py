"""probe_trains on a scripted engine (docs/method.md §8, probe_trains): the probe is trained on, the rest
of the step's budget is split by GVM, the loop merges the probe into the batch and charges each probe
rollout once as a training rollout, GRPO groups span probe and allocated samples, and the probe's
behaviour log-probs reach the loss unchanged."""

import functools

import numpy as np
import pytest
import torch
from probe_script import script_grad_norms, tiny_policy

from dibs.algorithms.allocation import gvm_allocate
from dibs.platform.allocation.allocators import AllocContext, StepBudget
from dibs.platform.allocation.factory import build_allocator
from dibs.platform.allocation.probe_trains import ProbeTrainsAllocator
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig, ConfigError, TaskConfig, validate_dict
from dibs.platform.rollout.base import Rollouts
from dibs.platform.runtime import loop
from dibs.platform.runtime.budget import Budget, account, prompt_stats
from dibs.platform.tasks.base import Problem
from dibs.platform.tasks.chain_sum import ChainSumTask
from dibs.platform.tasks.evaluate import score_groups

pytestmark = pytest.mark.unit

TASK = ChainSumTask(TaskConfig())
SCORE = functools.partial(score_groups, TASK)

# prompt: (answer, accept pattern cycled over a call's samples of it, gradient norm of each sample)
SCRIPT = {
    "1+2=": (3, [1, 0], 2.0),  # p = 1/2, G = 2
    "5-9=": (-4, [0], 9.0),  # p = 0: G = 0, weight 0
    "7+7=": (14, [1], 2.0),  # p = 1, G = 2
    "2-1=": (1, [0, 0, 1, 0], 4.0),  # p = 1/4, G = 4
}
NAMES = list(SCRIPT)
PROMPTS = [Problem(name, SCRIPT[name][0], 2) for name in NAMES]
# GVM weights of the probe's estimates p = [1/2, 0, 1, 1/4], G = [2, 0, 2, 4] (alpha 1e-3, beta 2):
# w = G / sqrt(p + 1e-3 / p) = [2.82278, 0, 1.99900, 7.93675], sum 12.75853.
P_HAT, G_HAT = [0.5, 0.0, 1.0, 0.25], [2.0, 0.0, 2.0, 4.0]


class ScriptEngine:
    """Call c's samples: prompt width 5 + c (so merged batches need left padding), 3 response tokens
    whose behaviour log-prob is -(c + 1) / 10, sequences[:, 0] = the prompt's index (for the norms)."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, counts, spec, *, seed):
        c = len(self.calls)
        self.calls.append((list(prompts), list(counts), spec, seed))
        gids = [i for i, k in enumerate(counts) for _ in range(k)]
        ks = [k for n in counts for k in range(n)]
        texts = []
        for i, k in zip(gids, ks, strict=True):
            answer, pattern, _ = SCRIPT[prompts[i]]
            texts.append(f"\\boxed{{{answer + (0 if pattern[k % len(pattern)] else 1)}}}")
        B, L = len(texts), 8 + c
        seq = torch.tensor([NAMES.index(prompts[i]) for i in gids], dtype=torch.long)[:, None].repeat(1, L)
        resp = torch.zeros(B, L - 1)
        resp[:, -3:] = 1.0
        return Rollouts(
            seq,
            torch.ones(B, L, dtype=torch.long),
            resp,
            resp * -(c + 1) / 10,
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


def experiment(**allocation):
    return validate_dict(
        {"allocation": {"allocator": "probe_trains", **allocation}, "rollout": {"max_new_tokens": 5}}
    )


def ctx(engine, policy, cfg, budget=None, seed=11):
    return AllocContext(engine, policy, loop.sampling_spec(cfg), seed, score=SCORE, budget=budget)


def test_the_probe_is_trained_on_and_the_rest_split_by_gvm_by_hand(policy):
    # N = 4 x 6 = 24; the probe takes 4 x 4 = 16, so 8 are split: 8 w / 12.75853 = [1.770, 0, 1.253,
    # 4.977] -> floors [1, 0, 1, 4] (6), the two largest residuals (.977, .770) -> [2, 0, 1, 5].
    cfg = experiment(n_per_prompt=6, n_probe=4)
    engine = ScriptEngine()
    alloc = build_allocator(cfg.allocation).allocate(PROMPTS, ctx(engine, policy, cfg))
    assert engine.calls == [(NAMES, [4] * 4, loop.sampling_spec(cfg), 11)]
    assert alloc.counts.tolist() == [2, 0, 1, 5] == gvm_allocate(G_HAT, P_HAT, 8).tolist()
    assert alloc.p_hat.tolist() == P_HAT and alloc.g_hat.tolist() == G_HAT
    # The probe is handed over to be trained on, and charged as a probe nowhere.
    assert alloc.trained.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert (alloc.probe_rollouts, alloc.probe_tokens) == (0, 0)
    assert alloc.stats == pytest.approx(
        {
            M.ALLOC_N_MIN: 4.0,  # totals, probe included: [6, 4, 5, 9]
            M.ALLOC_N_MAX: 9.0,
            M.ALLOC_ZERO_PROMPTS: 0.0,
            M.ALLOC_P_MEAN: 0.4375,
            M.ALLOC_G_MEAN: 8 / 3,
            M.ALLOC_GRAD_TIED: 1.0,
            M.ALLOC_PROBED_PROMPTS: 4.0,
            M.PROBE_TRAINS_PROBE_ROLLOUTS: 16.0,
            M.PROBE_TRAINS_PROBE_TOKENS: 48.0,
            M.PROBE_TRAINS_SPLIT_ROLLOUTS: 8.0,
            M.PROBE_TRAINS_CLAMPED: 0.0,
        }
    )


def test_the_loop_merges_the_probe_and_charges_it_once(policy):
    cfg = experiment(n_per_prompt=6, n_probe=4)
    engine, budget = ScriptEngine(), Budget()
    alloc = loop.allocate(build_allocator(cfg.allocation), PROMPTS, ctx(engine, policy, cfg), budget)
    assert (budget.rollouts, budget.probe_rollouts, budget.tokens) == (0, 0, 0)  # nothing charged yet
    batch = loop.generate(engine, cfg, PROMPTS, alloc, seed=5)
    # The allocated rollouts are sampled with the probe's spec (one policy, one spec), on the step's seed.
    assert engine.calls[1] == (NAMES, [2, 0, 1, 5], engine.calls[0][2], 5)
    ro = batch.rollouts
    gids = ro.group_ids
    assert gids.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [0] * 2 + [2] + [3] * 5
    # Behaviour log-probs: the probe rows keep their own (-0.1), left-padded by one column; the
    # allocated rows theirs (-0.2); nothing but the 3 response tokens carries one.
    assert ro.sequences.shape[1] == 9 and ro.response_mask.sum().item() == 24 * 3
    assert torch.equal(ro.old_logp[:16, -3:], torch.full((16, 3), -0.1))
    assert torch.equal(ro.old_logp[16:, -3:], torch.full((8, 3), -0.2))
    assert ro.old_logp[:, :-3].abs().sum() == 0 and ro.attention_mask[:16, 0].sum() == 0
    # GRPO groups are probe + allocated: prompt 0's six rewards [1,0,1,0,1,0] have mean 1/2 and unbiased
    # std sqrt(.3), so A = +-0.91287 (the probe alone would give +-0.866, the allocated pair +-0.707).
    rewards = loop.score(TASK, ro, PROMPTS)
    adv, keep, _ = loop.advantages(validate_dict({"algorithm": "grpo"}), rewards, gids)
    assert adv[gids == 0].abs().tolist() == pytest.approx([0.91287] * 6, abs=1e-5)
    spent = account(budget, alloc, ro, rewards, adv, keep)
    # Every probe rollout is charged once, as a training rollout: the step spends N = 24 exactly.
    assert spent[M.STEP_ROLLOUTS] == 24 == spent[M.BUDGET_TRAIN_ROLLOUTS] == spent[M.BUDGET_ROLLOUTS]
    assert spent[M.STEP_PROBE_ROLLOUTS] == 0 == spent[M.BUDGET_PROBE_ROLLOUTS]
    assert spent[M.BUDGET_TOKENS] == 24 * 3
    rows = prompt_stats(PROMPTS, alloc, ro, rewards)
    assert [r.n_alloc for r in rows] == [6, 4, 5, 9] and [r.accepted for r in rows] == [3, 0, 5, 2]
    assert [r.p_hat for r in rows] == P_HAT and all(r.probed for r in rows)


def test_n_probe_equal_to_n_leaves_nothing_to_split(policy):
    # The defaults (n_probe = n_per_prompt = 8; here 4 and 4): the probe is the whole step, which is
    # plain uniform sampling with GVM's estimates computed for nothing.
    cfg = experiment(n_per_prompt=4, n_probe=4)
    engine = ScriptEngine()
    alloc = build_allocator(cfg.allocation).allocate(PROMPTS, ctx(engine, policy, cfg))
    assert alloc.counts.tolist() == [0] * 4 and alloc.stats[M.PROBE_TRAINS_SPLIT_ROLLOUTS] == 0
    batch = loop.generate(engine, cfg, PROMPTS, alloc, seed=5)
    assert len(engine.calls) == 1 and batch.rollouts is alloc.trained  # no second generation


def test_tokens_mode_clamps_the_probe_into_the_budget(policy):
    # A step of N = 10 rollouts cannot hold 4 x 4 probe samples: all 10 go to the probe, evenly.
    cfg = experiment(n_per_prompt=4, n_probe=4)
    engine = ScriptEngine()
    alloc = build_allocator(cfg.allocation).allocate(
        PROMPTS, ctx(engine, policy, cfg, StepBudget(10, 50, 5.0))
    )
    assert engine.calls[0][1] == [3, 3, 2, 2] and len(alloc.trained.texts) == 10
    assert alloc.counts.tolist() == [0] * 4
    assert alloc.stats[M.PROBE_TRAINS_CLAMPED] == 1.0 and alloc.stats[M.PROBE_TRAINS_PROBE_ROLLOUTS] == 10


def test_tokens_mode_splits_what_the_probe_leaves(policy):
    # N = 21: the probe takes 16, 5 are split: 5 w / 12.75853 = [1.106, 0, .783, 3.110] -> floors
    # [1, 0, 0, 3], the last one to the largest residual (.783, prompt 2) -> [1, 0, 1, 3].
    cfg = experiment(n_per_prompt=4, n_probe=4, budget="tokens", step_tokens=105)
    alloc = build_allocator(cfg.allocation).allocate(
        PROMPTS, ctx(ScriptEngine(), policy, cfg, StepBudget(21, 105, 5.0))
    )
    assert alloc.counts.tolist() == [1, 0, 1, 3] and alloc.stats[M.PROBE_TRAINS_CLAMPED] == 0.0


def test_bounds_hold_for_each_prompts_total(policy):
    # max_per_prompt 7 with 4 probed: at most 3 more each. Prompt 3's share (4.977) is held at 3; the
    # other 5 go by weight to prompts 0 and 2: [2.927, 2.073] -> [3, 0, 2, 3], totals <= 7.
    cfg = experiment(n_per_prompt=6, n_probe=4, max_per_prompt=7)
    alloc = build_allocator(cfg.allocation).allocate(PROMPTS, ctx(ScriptEngine(), policy, cfg))
    assert alloc.counts.tolist() == [3, 0, 2, 3]
    assert alloc.stats[M.ALLOC_N_MAX] == 7.0


def test_a_probe_larger_than_the_step_is_a_config_error():
    with pytest.raises(
        ConfigError, match=r"allocation: Value error, probe_trains: n_probe \(9\) > n_per_prompt \(8\)"
    ):
        validate_dict({"allocation": {"allocator": "probe_trains", "n_probe": 9}})
    # Other allocators probe on top of N, and tokens mode clamps at the step: both allowed.
    assert validate_dict({"allocation": {"allocator": "gvm", "n_probe": 9}}).allocation.n_probe == 9
    tokens = {"allocator": "probe_trains", "n_probe": 9, "budget": "tokens", "step_tokens": 100}
    assert validate_dict({"allocation": tokens}).allocation.n_probe == 9


def test_keeps_no_state():
    alloc = ProbeTrainsAllocator(AllocationConfig(allocator="probe_trains", n_probe=4))
    alloc.observe(PROMPTS, np.ones(4), np.ones(4), np.ones(4))
    assert alloc.state_dict() == {}
