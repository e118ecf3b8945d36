"""Rollout engine and learner on a tiny random Qwen2: layout of masks, behaviour log-probs, and exact
micro-batching (the update does not change when the batch is split differently)."""

import copy

import pytest
import torch

from dibs.platform.core.config import ModelConfig
from dibs.platform.learn.backend import lr_lambda
from dibs.platform.learn.learner import (
    MICRO_BATCH_OVERHEAD,
    TorchLearner,
    length_micro_batches,
    token_logprobs,
)
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout.base import SamplingSpec
from dibs.platform.rollout.hf_engine import HFEngine
from dibs.platform.tasks.chain_sum import ALPHABET

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny():
    tok = train_tokenizer(ALPHABET)
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    torch.manual_seed(0)
    from transformers import Qwen2ForCausalLM

    return Qwen2ForCausalLM(qwen2_config(cfg, tok)), tok


def test_tokenizer_is_character_level_with_boxed_token(tiny):
    _, tok = tiny
    ids = tok.encode("12+3=15;\\boxed{15}", add_special_tokens=False)
    assert len(ids) == 12  # 8 characters, one \boxed{ token, "15", "}"
    assert tok.decode(ids) == "12+3=15;\\boxed{15}"


def test_generate_groups_masks_and_behaviour_logprobs(tiny):
    model, tok = tiny
    engine = HFEngine(copy.deepcopy(model), tok, chunk_size=3)  # 5 samples -> chunks of 3 and 2
    ro = engine.generate(["1+2=", "34-5+6="], [2, 3], SamplingSpec(max_new_tokens=6), seed=0)
    assert ro.group_ids.tolist() == [0, 0, 1, 1, 1]
    B, L = ro.sequences.shape
    assert ro.response_mask.shape == ro.old_logp.shape == (B, L - 1)
    # The response starts right after the longest prompt (BOS + 7 characters = 8 tokens).
    assert ro.response_mask[:, :7].sum() == 0
    # Behaviour log-probs equal the learner's log-probs of the same tokens (same weights): ratio 1.
    logp = token_logprobs(model, ro)
    m = ro.response_mask.bool()
    torch.testing.assert_close(logp[m], ro.old_logp[m], rtol=1e-4, atol=1e-4)
    assert (ro.old_logp[~m] == 0).all()
    # A sample that did not stop used every new token; one that stopped ends its mask at EOS.
    lengths = ro.response_mask.sum(1)
    for i in range(B):
        assert (lengths[i] == 6) or ro.stopped[i]


def test_same_seed_same_rollouts(tiny):
    model, tok = tiny
    engine = HFEngine(copy.deepcopy(model), tok)
    a = engine.generate(["1+2="], [4], SamplingSpec(max_new_tokens=5), seed=3)
    b = engine.generate(["1+2="], [4], SamplingSpec(max_new_tokens=5), seed=3)
    assert torch.equal(a.sequences, b.sequences)


@pytest.mark.parametrize("algorithm", ["raft", "raftpp", "grpo"])
def test_update_is_independent_of_micro_batch_size(tiny, algorithm):
    model, tok = tiny
    ro = HFEngine(copy.deepcopy(model), tok).generate(
        ["1+2=", "9-8+7="], [3, 3], SamplingSpec(max_new_tokens=6), seed=1
    )
    adv = torch.tensor([1.0, -0.5, 0.0, 2.0, -1.0, 0.5])
    grads, stats = [], []
    for micro in (6, 4, 1):
        m = copy.deepcopy(model)
        learner = TorchLearner(
            m,
            lr=1e-2,
            weight_decay=0.0,
            grad_clip=100.0,
            micro_batch_size=micro,
            total_steps=1,
            algorithm=algorithm,
        )
        learner.backend.opt.step = lambda: (
            None
        )  # keep the accumulated gradient to compare (Adam would amplify
        # float noise in near-zero elements, g / sqrt(v) ~ sign(g))
        stats.append(learner.update(ro, adv, seed=0))
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert grads[0].abs().max() > 1e-3  # a real gradient
    for g, st in zip(grads[1:], stats[1:], strict=True):
        torch.testing.assert_close(g, grads[0], rtol=1e-5, atol=1e-7)
        assert st["grad_norm"] == pytest.approx(stats[0]["grad_norm"], rel=1e-5)


def test_lr_schedule_warmup_then_cosine():
    # warm-up 4 steps: 1/4, 2/4, 3/4, 4/4; then cosine from 1.0 down to 0.1 at step 14
    assert [lr_lambda(s, warmup=4, total=14, schedule="cosine") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_lambda(9, warmup=4, total=14, schedule="cosine") == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_lambda(14, warmup=4, total=14, schedule="cosine") == pytest.approx(0.1)
    assert lr_lambda(50, warmup=0, total=14, schedule="constant") == 1.0


def test_micro_batches_skip_single_samples_where_they_can():
    # One long row and three short ones: alone, the long row would save (L - 5) * 3 padded slots, more
    # than one micro-batch's fixed cost, but a batch of one recompiles the compiled decoder. With at most
    # 2 a micro-batch the four rows go 2 + 2; with at most 1 they cannot but be single.
    long = MICRO_BATCH_OVERHEAD + 60
    mask = torch.zeros(4, long, dtype=torch.long)
    mask[0, :long] = 1
    mask[1:, :5] = 1
    # Up to 4: 2 + 2 costs (2*188 + 128) + (2*5 + 128) = 642 and one run 4*188 + 128 = 880; 1 + 3 would
    # cost 188 + 15 + 256 = 459.
    assert [r.tolist() for r in length_micro_batches(mask, 4)] == [[0, 1], [2, 3]]
    assert [len(r) for r in length_micro_batches(mask, 2)] == [2, 2]
    assert [len(r) for r in length_micro_batches(mask, 1)] == [1, 1, 1, 1]
