"""gvm_reuse and dapo on a scripted engine (which prompts get probed, what is carried, refilled and
dropped), merging batches of different widths, and the loop's budget accounting and telemetry rows."""

import copy
import functools
import json
import math

import numpy as np
import pytest
import torch
from probe_script import script_grad_norms, tiny_policy
from transformers import Qwen2ForCausalLM

from dibs.algorithms.allocation import gvm_allocate
from dibs.platform.allocation.allocators import Allocation, AllocContext, GVMReuseAllocator, UniformAllocator
from dibs.platform.allocation.batch import Dropped
from dibs.platform.allocation.dapo import Refill
from dibs.platform.allocation.factory import build_allocator, build_stage
from dibs.platform.core import metrics as M
from dibs.platform.core.config import AllocationConfig, ModelConfig, TaskConfig
from dibs.platform.learn.learner import token_logprobs
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout.base import Rollouts, SamplingSpec, merge_rollouts
from dibs.platform.rollout.hf_engine import HFEngine
from dibs.platform.runtime.budget import Budget, account, prompt_stats
from dibs.platform.tasks.base import Problem
from dibs.platform.tasks.chain_sum import ALPHABET, ChainSumTask
from dibs.platform.tasks.evaluate import score_groups

pytestmark = pytest.mark.unit

# The chain-sum task's rewards, as the loop hands them to allocators.
SCORE = functools.partial(score_groups, ChainSumTask(TaskConfig()))

# Each prompt's samples are accepted by this cycling pattern; NORM is the gradient norm of its samples.
SCRIPT = {  # prompt: (answer, accept pattern, norm)
    "1+2=": (3, [1, 0, 1, 0], 2.0),  # mixed, p = 1/2
    "5-9=": (-4, [0], 9.0),  # all wrong
    "7+7=": (14, [1], 1.0),  # all right
    "2-1=": (1, [0, 0, 1, 0], 4.0),  # mixed, p = 1/4
    "3+3=": (6, [1, 1, 1, 0], 3.0),  # mixed
    "8-8=": (0, [0], 1.0),  # all wrong
    "4+5=": (9, [0, 1], 2.0),  # mixed
    "6+1=": (7, [1, 0, 0, 0], 5.0),  # mixed
}
NAMES = list(SCRIPT)
P = {name: Problem(name, SCRIPT[name][0], 2) for name in NAMES}


class ScriptEngine:
    """Sample k of a prompt is right iff its pattern says so; sequences[:, 0] carries the prompt's index
    (for the stubbed norms). Call c returns rows of width 6 + c, so batches differ in width."""

    def __init__(self):
        self.calls, self.seeds = [], []

    def generate(self, prompts, counts, spec, *, seed):
        self.calls.append((list(prompts), list(counts)))
        self.seeds.append(seed)
        gids = [i for i, c in enumerate(counts) for _ in range(c)]
        ks = [k for c in counts for k in range(c)]
        texts = []
        for i, k in zip(gids, ks, strict=True):
            answer, pattern, _ = SCRIPT[prompts[i]]
            texts.append(f"\\boxed{{{answer + (0 if pattern[k % len(pattern)] else 1)}}}")
        B, L = len(texts), 6 + len(self.calls)
        seq = torch.tensor([NAMES.index(prompts[i]) for i in gids], dtype=torch.long)[:, None].repeat(1, L)
        resp = torch.zeros(B, L - 1)
        resp[:, -3:] = 1.0  # 3 response tokens each
        return Rollouts(
            seq,
            torch.ones(B, L, dtype=torch.long),
            resp,
            -resp,
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


def ctx(engine, policy):
    return AllocContext(engine, policy, SamplingSpec(max_new_tokens=3), seed=5, step=1, score=SCORE)


REUSE = AllocationConfig(
    allocator="gvm_reuse", n_per_prompt=4, n_probe=4, reuse_probe_every=2, reuse_decay=0.5
)


def test_gvm_reuse_probes_unseen_then_carries_then_reprobes(policy):
    engine, alloc = ScriptEngine(), build_allocator(REUSE)
    batch = [P["1+2="], P["2-1="], P["3+3="]]
    first = alloc.allocate(batch, ctx(engine, policy))
    assert engine.calls == [(["1+2=", "2-1=", "3+3="], [4, 4, 4])]
    assert first.probed.tolist() == [True] * 3 and first.probe_rollouts == 12 and first.probe_tokens == 36
    # p = [2/4, 1/4, 3/4], G = [2, 4, 3]: the GVM split of 12.
    assert first.counts.tolist() == gvm_allocate([2, 4, 3], [0.5, 0.25, 0.75], 12).tolist()
    assert first.stats[M.ALLOC_PROBED_PROMPTS] == 3
    # The step's own rollouts: 1+2= got 6 with 5 accepted -> pooled (0.5*2 + 5) / (0.5*4 + 6) = 6/8.
    alloc.observe(batch, np.array([6, 0, 6]), np.array([5, 0, 0]), np.array([30, 0, 30]))
    second = alloc.allocate(batch, ctx(engine, policy))
    assert len(engine.calls) == 1 and second.probe_rollouts == 0 and not second.probed.any()
    # 2-1= had no rollouts: unchanged 1/4; 3+3=: (0.5*3 + 0) / (0.5*4 + 6) = 1.5/8.
    assert second.p_hat.tolist() == [0.75, 0.25, 0.1875]
    assert second.g_hat.tolist() == [2.0, 4.0, 3.0]
    assert second.counts.tolist() == gvm_allocate([2, 4, 3], [0.75, 0.25, 0.1875], 12).tolist()
    third = alloc.allocate(batch + [P["4+5="]], ctx(engine, policy))  # visit 3 of the old ones: stale
    assert engine.calls[1] == (["1+2=", "2-1=", "3+3=", "4+5="], [4, 4, 4, 4])
    assert third.p_hat.tolist() == [0.5, 0.25, 0.75, 0.5]  # fresh probes replace the pooled counts


def test_gvm_reuse_probes_only_the_unseen_prompts(policy):
    engine, alloc = ScriptEngine(), build_allocator(REUSE.model_copy(update={"reuse_probe_every": 4}))
    alloc.allocate([P["1+2="], P["2-1="]], ctx(engine, policy))
    out = alloc.allocate([P["2-1="], P["6+1="], P["1+2="]], ctx(engine, policy))
    assert engine.calls[1] == (["6+1="], [4])
    assert out.probed.tolist() == [False, True, False] and out.probe_rollouts == 4
    assert out.counts.sum() == 12


def test_gvm_reuse_state_round_trips_through_json(policy):
    engine, alloc = ScriptEngine(), GVMReuseAllocator(REUSE)
    batch = [P["1+2="], P["2-1="], P["3+3="]]
    alloc.allocate(batch, ctx(engine, policy))
    alloc.observe(batch, np.array([4, 4, 4]), np.array([4, 0, 1]), np.array([20, 20, 20]))
    restored = GVMReuseAllocator(REUSE)
    restored.load_state_dict(json.loads(json.dumps(alloc.state_dict())))
    a, b = alloc.allocate(batch, ctx(engine, policy)), restored.allocate(batch, ctx(engine, policy))
    assert len(engine.calls) == 1  # neither re-probed: the visit count came back too
    assert a.counts.tolist() == b.counts.tolist() and a.p_hat.tolist() == b.p_hat.tolist()


def test_stateless_allocators_refuse_foreign_state():
    assert UniformAllocator(4).state_dict() == {}
    with pytest.raises(ValueError, match="UniformAllocator keeps no state"):
        UniformAllocator(4).load_state_dict({"estimates": {}})


DAPO = AllocationConfig(allocator="dapo", n_per_prompt=4, max_gen_batches=3)


def test_dapo_drops_equal_groups_and_refills(policy):
    engine, draws = ScriptEngine(), []
    refill = [P["3+3="], P["8-8="], P["4+5="], P["6+1="]]

    def draw(k):
        draws.append(k)
        return refill[:k]

    out = Refill(DAPO).sample([P["1+2="], P["5-9="], P["7+7="], P["2-1="]], ctx(engine, policy), draw)
    # Round 1 keeps 1+2= and 2-1= (2 of 4): the deficit 2 at keep rate 1/2 draws 4 prompts. Round 2 keeps
    # the first two mixed ones (3+3=, 4+5=); 8-8= is all wrong and 6+1= is one too many: both dropped.
    assert draws == [4]
    assert [p.prompt for p in out.prompts] == ["1+2=", "2-1=", "3+3=", "4+5="]
    assert out.rollouts.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4  # 4 rollouts each
    assert engine.seeds == [5, 6]  # round r samples with the allocation seed + r
    answers = [int(t[len("\\boxed{") : -1]) for t in out.rollouts.texts]
    assert [
        a in (out.prompts[g].answer, out.prompts[g].answer + 1)
        for g, a in zip(out.rollouts.group_ids.tolist(), answers, strict=True)
    ] == [True] * 16
    assert [r.prompt_id for r in out.dropped.rows] == ["5-9=", "7+7=", "8-8=", "6+1="]
    assert [(r.p_hat, r.accepted) for r in out.dropped.rows] == [(0.0, 0), (1.0, 4), (0.0, 0), (0.25, 1)]
    assert (out.dropped.rollouts, out.dropped.accepted, out.dropped.tokens) == (16, 5, 48)
    assert out.stats == {
        M.ALLOC_GEN_BATCHES: 2.0,
        M.ALLOC_SHORT_PROMPTS: 0.0,
        M.ALLOC_DISCARDED_ROLLOUTS: 16.0,
    }
    # Widths 7 (round 1) and 8 (round 2): round 1's rows are left-padded by one masked column.
    assert out.rollouts.sequences.shape == (16, 8)
    assert out.rollouts.attention_mask[:8, 0].tolist() == [0] * 8 and out.rollouts.attention_mask[8:, 0].all()
    assert out.rollouts.response_mask.sum() == 48


def test_dapo_cap_trains_on_what_it_has(policy):
    engine = ScriptEngine()
    cfg = DAPO.model_copy(update={"max_gen_batches": 1})
    out = Refill(cfg).sample(
        [P["1+2="], P["5-9="], P["7+7="], P["2-1="]],
        ctx(engine, policy),
        draw=lambda k: pytest.fail("drew past the cap"),
    )
    assert [p.prompt for p in out.prompts] == ["1+2=", "2-1="] and out.rollouts.group_ids.tolist() == [
        0
    ] * 4 + [1] * 4
    assert out.stats[M.ALLOC_SHORT_PROMPTS] == 2 and out.stats[M.ALLOC_GEN_BATCHES] == 1


def test_dapo_with_no_mixed_group_returns_an_empty_batch(policy):
    out = Refill(DAPO.model_copy(update={"max_gen_batches": 1})).sample(
        [P["5-9="], P["7+7="]], ctx(ScriptEngine(), policy), draw=None
    )
    assert out.prompts == [] and len(out.rollouts.texts) == 0
    assert out.stats[M.ALLOC_SHORT_PROMPTS] == 2 and out.dropped.rollouts == 8


def test_dapo_is_uniform_counts_and_a_refill_stage():
    assert (
        build_allocator(DAPO).allocate([P["1+2="], P["5-9="], P["7+7="]], ctx(None, None)).counts.tolist()
        == [4] * 3
    )
    assert isinstance(build_stage(DAPO), Refill)
    assert build_stage(AllocationConfig(allocator="gvm")) is None and build_stage(AllocationConfig()) is None


def test_merge_keeps_every_log_prob():
    """Left-padding a batch to a wider one changes no log-prob: positions come from the attention mask."""
    tok = train_tokenizer(ALPHABET)
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    model = Qwen2ForCausalLM(qwen2_config(cfg, tok))
    engine = HFEngine(copy.deepcopy(model), tok)
    spec = SamplingSpec(max_new_tokens=5)
    a = engine.generate(["1+2="], [2], spec, seed=0)
    b = engine.generate(["12+34-56+7="], [3], spec, seed=1)
    merged = merge_rollouts([a, b], torch.tensor([0, 0, 1, 1, 1]), pad_id=tok.pad_token_id)
    assert merged.sequences.shape[1] == max(a.sequences.shape[1], b.sequences.shape[1])
    logp = token_logprobs(model, merged)
    for part, rows in ((a, slice(0, 2)), (b, slice(2, 5))):
        mine = token_logprobs(model, part)
        torch.testing.assert_close(
            logp[rows][merged.response_mask[rows].bool()],
            mine[part.response_mask.bool()],
            rtol=1e-5,
            atol=1e-5,
        )
    with pytest.raises(ValueError, match="no batches"):
        merge_rollouts([], torch.zeros(0), pad_id=0)


def fake_rollouts(group_ids, tokens_each=3):
    B = len(group_ids)
    resp = torch.zeros(B, 5)
    resp[:, -tokens_each:] = 1.0
    return Rollouts(
        torch.zeros(B, 6, dtype=torch.long),
        torch.ones(B, 6, dtype=torch.long),
        resp,
        torch.zeros(B, 5),
        torch.tensor(group_ids),
        ["x"] * B,
        torch.ones(B, dtype=torch.bool),
    )


def test_account_charges_training_and_dropped_rollouts():
    budget = Budget(rollouts=20, tokens=60, probe_rollouts=20)  # a probe was charged before
    alloc = Allocation(np.array([3, 3]), probe_rollouts=20)
    dropped = Dropped(rollouts=8, tokens=24, accepted=3)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = torch.tensor([0.6, -1.2, 0.6, 0.0, 0.0, 0.0])  # group 1 all right: zero advantage
    keep = torch.tensor([True, True, True, True, True, False])
    spent = account(budget, alloc, fake_rollouts([0, 0, 0, 1, 1, 1]), rewards, adv, keep, dropped)
    # generated 6 + 8 dropped = 14; accepted 5 + 3 = 8; wasted: 3 zero-advantage + 8 dropped = 11.
    assert spent == {
        M.BUDGET_ROLLOUTS: 34,
        M.BUDGET_TOKENS: 60 + 18 + 24,
        M.BUDGET_PROBE_ROLLOUTS: 20,
        M.BUDGET_TRAIN_ROLLOUTS: 14,
        M.BUDGET_ACCEPTED: 8,
        M.BUDGET_WASTED: 11,
        M.BUDGET_UPDATES: 0,  # the loop counts updates; account only reports them
        M.STEP_ROLLOUTS: 34,
        M.STEP_PROBE_ROLLOUTS: 20,
        M.STEP_ACCEPTED: 8,
        M.STEP_WASTED: 11,
    }
    assert budget.rollouts == budget.probe_rollouts + budget.train_rollouts


def test_prompt_stats_rows():
    prompts = [P["1+2="], P["2-1="], P["3+3="]]
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    ro = fake_rollouts([0, 0, 0, 2, 2])
    uniform = prompt_stats(prompts, Allocation(np.array([3, 0, 2])), ro, rewards)
    assert [(r.prompt_id, r.n_alloc, r.accepted, r.probed) for r in uniform] == [
        ("1+2=", 3, 2, False),
        ("2-1=", 0, 0, False),
        ("3+3=", 2, 1, False),
    ]
    assert uniform[0].p_hat == pytest.approx(2 / 3) and math.isnan(uniform[1].p_hat)
    assert all(math.isnan(r.g_hat) for r in uniform)
    gvm = Allocation(
        np.array([3, 0, 2]),
        np.array([0.5, 0.0, 0.25]),
        np.array([2.0, 0.0, 3.0]),
        np.array([True, False, True]),
    )
    rows = prompt_stats(
        prompts, gvm, ro, rewards, Dropped(rows=[M.PromptStat("8-8=", 0.0, math.nan, 4, 0, False)])
    )
    assert [(r.p_hat, r.g_hat, r.probed) for r in rows[:3]] == [
        (0.5, 2.0, True),
        (0.0, 0.0, False),
        (0.25, 3.0, True),
    ]
    assert rows[3].prompt_id == "8-8="
