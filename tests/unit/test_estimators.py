"""Probe estimators (docs/method.md §3): acceptance rates by hand, batched per-sample gradient norms against a
per-sample backward loop on a tiny random Qwen2, tied embeddings, and Ĝ over accepted samples only."""

import copy

import numpy as np
import pytest
import torch
from transformers import Qwen2ForCausalLM

from dibs.platform.allocation import estimators
from dibs.platform.allocation.estimators import (
    accept_rates,
    grad_norm_estimates,
    grad_param_names,
    is_tied,
    per_sample_grad_norms,
)
from dibs.platform.core.config import ModelConfig
from dibs.platform.learn.learner import token_logprobs
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout.base import SamplingSpec
from dibs.platform.rollout.hf_engine import HFEngine
from dibs.platform.tasks.chain_sum import ALPHABET

pytestmark = pytest.mark.unit

PARAMS = ["embedding", "lm_head", "last_layer", "all"]


def tiny_model(tok, *, tied: bool = True) -> Qwen2ForCausalLM:
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
    config = qwen2_config(cfg, tok)
    config.tie_word_embeddings = tied
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(ALPHABET)


@pytest.fixture(scope="module")
def tied(tok):
    return tiny_model(tok, tied=True)


@pytest.fixture(scope="module")
def untied(tok):
    return tiny_model(tok, tied=False)


@pytest.fixture(scope="module")
def rollouts(tied, tok):
    # Ragged groups with an empty one (prompt 1 gets 0 samples); prompts of different lengths, so the
    # batch has left padding, and sampled responses of different lengths (right padding).
    engine = HFEngine(copy.deepcopy(tied), tok)
    return engine.generate(["1+2=", "5-3=", "34-5+6="], [2, 0, 3], SamplingSpec(max_new_tokens=8), seed=0)


def loop_norms(model, rollouts, names, temperature):
    """The definition, one backward per sample: ‖∇_θ −Σ_t log π(y_t)‖₂ over the parameters `names`."""
    named = dict(model.named_parameters())
    out = []
    for b in range(len(rollouts.texts)):
        model.zero_grad(set_to_none=True)
        sample = rollouts.select(torch.tensor([b]))
        nll = -(token_logprobs(model, sample, temperature=temperature) * sample.response_mask).sum()
        nll.backward()
        out.append(torch.sqrt(sum(named[n].grad.double().pow(2).sum() for n in names)).float())
    model.zero_grad(set_to_none=True)
    return torch.stack(out)


# ---------------------------------------------------------------- accept rates


def test_accept_rates_ragged_groups_by_hand():
    # prompt 0: samples 0, 1, 4 with rewards 1, 0, 1 -> 2/3 (ids need not be sorted)
    # prompt 1: no samples -> 0;  prompt 2: samples 2, 3 with rewards 1, 0 -> 1/2
    # prompt 3: sample 5 with reward 1 -> 1;  prompt 4: sample 6 with reward 0 -> 0
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    group_ids = torch.tensor([0, 0, 2, 2, 0, 3, 4])
    p = accept_rates(rewards, group_ids, 5)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, [2 / 3, 0.0, 0.5, 1.0, 0.0], rtol=1e-12)


def test_accept_rates_empty_batch_and_bad_ids():
    assert accept_rates(torch.zeros(0), torch.zeros(0, dtype=torch.long), 3).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        accept_rates(torch.ones(2), torch.tensor([0, 2]), 2)


# ---------------------------------------------------------------- per-sample gradient norms


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_batched_norms_equal_per_sample_loop(tied, rollouts, params, temperature):
    got = per_sample_grad_norms(tied, rollouts, params=params, temperature=temperature)
    want = loop_norms(tied, rollouts, grad_param_names(tied, params), temperature)
    assert got.shape == (5,) and not got.requires_grad
    assert (want > 0).all()  # every sample has response tokens: a real gradient
    torch.testing.assert_close(got, want, rtol=1e-4, atol=0)


@pytest.mark.parametrize("params", ["embedding", "lm_head"])
def test_untied_embedding_and_lm_head_are_separate(untied, rollouts, params):
    assert not is_tied(untied)
    got = per_sample_grad_norms(untied, rollouts, params=params)
    torch.testing.assert_close(
        got, loop_norms(untied, rollouts, grad_param_names(untied, params), 1.0), rtol=1e-4, atol=0
    )


def test_tied_lm_head_is_the_embedding_used_once(tied, untied, rollouts):
    assert is_tied(tied)
    # one tensor, one name: its gradient (both roles) is counted once, not twice
    assert (
        grad_param_names(tied, "lm_head")
        == grad_param_names(tied, "embedding")
        == ["model.embed_tokens.weight"]
    )
    assert grad_param_names(tied, "all") == [n for n, _ in tied.named_parameters()]
    lm_head = per_sample_grad_norms(tied, rollouts, params="lm_head")
    torch.testing.assert_close(
        lm_head, per_sample_grad_norms(tied, rollouts, params="embedding"), rtol=0, atol=0
    )
    assert grad_param_names(untied, "lm_head") == ["lm_head.weight"]


def test_norms_leave_the_model_as_they_found_it(tied, rollouts):
    before = {k: v.clone() for k, v in tied.state_dict().items()}
    per_sample_grad_norms(tied, rollouts, params="all", chunk_size=2)  # chunks of 2, 2, 1
    assert tied.config._attn_implementation == "sdpa"  # eager only while vmapping
    assert all(p.grad is None for p in tied.parameters())
    assert all(torch.equal(v, tied.state_dict()[k]) for k, v in before.items())


def test_norms_do_not_depend_on_the_batch(tied, rollouts):
    # Alone, sample 0 ("1+2=", 3 characters shorter than "34-5+6=") has 3 all-padding columns that are
    # trimmed; its norm must not change.
    batch = per_sample_grad_norms(tied, rollouts, params="all")
    alone = per_sample_grad_norms(tied, rollouts.select(torch.tensor([0])), params="all")
    assert rollouts.attention_mask[0, :3].sum() == 0
    torch.testing.assert_close(alone, batch[:1], rtol=1e-5, atol=0)


def test_sample_without_response_tokens_has_norm_zero(tied, rollouts):
    empty = copy.copy(rollouts)
    empty.response_mask = rollouts.response_mask.clone()
    empty.response_mask[1] = 0.0
    got = per_sample_grad_norms(tied, empty, params="embedding")
    assert got[1] == 0.0 and (got[[0, 2, 3, 4]] > 0).all()
    assert per_sample_grad_norms(
        tied, rollouts.select(torch.tensor([], dtype=torch.long)), params="embedding"
    ).shape == (0,)


def test_unknown_parameter_subset(tied):
    with pytest.raises(ValueError, match="grad_params"):
        grad_param_names(tied, "bias")


# ---------------------------------------------------------------- Ĝ per prompt


def test_grad_norm_estimates_average_accepted_samples_only(tied, rollouts, monkeypatch):
    # samples 0, 1 answer prompt 0; samples 2, 3, 4 answer prompt 2; prompt 1 has none
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    norms = per_sample_grad_norms(tied, rollouts, params="embedding").double()
    seen = []
    real = estimators.per_sample_grad_norms
    monkeypatch.setattr(
        estimators,
        "per_sample_grad_norms",
        lambda model, ro, **kw: seen.append(len(ro.texts)) or real(model, ro, **kw),
    )
    g = grad_norm_estimates(tied, rollouts, rewards, 4, params="embedding")
    assert seen == [3]  # only the accepted samples are differentiated
    # prompt 0: sample 0 alone; prompt 1: no samples; prompt 2: mean of samples 3, 4; prompt 3: none
    want = [norms[0], 0.0, (norms[3] + norms[4]) / 2, 0.0]
    np.testing.assert_allclose(g, want, rtol=1e-5)


def test_grad_norm_is_zero_without_accepted_samples(tied, rollouts, monkeypatch):
    monkeypatch.setattr(
        estimators, "per_sample_grad_norms", lambda *a, **k: pytest.fail("nothing to differentiate")
    )
    g = grad_norm_estimates(tied, rollouts, torch.zeros(5), 3, params="embedding")
    assert g.tolist() == [0.0, 0.0, 0.0]
