"""The decode-loop engine (platform/rollout/torch_engine.py) against transformers `generate` on tiny random
Qwen2 and Llama models: same greedy tokens and log-probs, the same Rollouts layout, behaviour log-probs
equal to the learner's, and rows dropped from the running batch as they finish without changing anyone's
tokens."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2ForCausalLM

from dibs.platform.core.config import ModelConfig
from dibs.platform.learn.learner import token_logprobs
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout.base import SamplingSpec
from dibs.platform.rollout.hf_engine import HFEngine
from dibs.platform.rollout.torch_engine import TorchEngine, local_engine
from dibs.platform.tasks.chain_sum import ALPHABET

pytestmark = pytest.mark.unit

PROMPTS = ["1+2=", "34-5+6=", "7=", "12+34-56+7="]  # 2 to 11 characters: ragged left padding


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(ALPHABET)


@pytest.fixture(scope="module")
def qwen(tok):
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(qwen2_config(cfg, tok)).eval()


@pytest.fixture(scope="module")
def llama(tok):
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg).eval()


def _eos_biased(model, tok, scale: float):
    """A copy whose EOS logit is scaled up (the output layer untied from the embedding): EOS wins at
    roughly the positions where it scores positive, so responses end at many different lengths."""
    m = copy.deepcopy(model)
    m.lm_head.weight = torch.nn.Parameter(m.lm_head.weight.detach().clone())
    with torch.no_grad():
        m.lm_head.weight[tok.eos_token_id] *= scale
    return m


@pytest.mark.parametrize("arch", ["qwen", "llama"])
def test_greedy_matches_transformers_generate(request, tok, arch):
    model = _eos_biased(request.getfixturevalue(arch), tok, 3.0)
    spec = SamplingSpec(greedy=True, max_new_tokens=12)
    a = HFEngine(copy.deepcopy(model), tok).generate(PROMPTS, [1, 2, 1, 1], spec, seed=0)
    b = TorchEngine(copy.deepcopy(model), tok).generate(PROMPTS, [1, 2, 1, 1], spec, seed=0)
    assert torch.equal(a.sequences, b.sequences)
    assert torch.equal(a.attention_mask, b.attention_mask)
    assert torch.equal(a.response_mask, b.response_mask)
    assert torch.equal(a.stopped, b.stopped) and a.texts == b.texts
    torch.testing.assert_close(b.old_logp, a.old_logp, rtol=1e-4, atol=1e-5)
    lengths = a.response_mask.sum(1)
    assert len(set(lengths.tolist())) > 1, "the test needs responses of different lengths"


def test_sampled_logprobs_equal_the_learners_and_rows_end_at_eos(qwen, tok):
    model = _eos_biased(qwen, tok, 3.0)
    engine = TorchEngine(copy.deepcopy(model), tok, chunk_size=5)  # 10 samples -> 2 chunks
    ro = engine.generate(PROMPTS[:2], [4, 6], SamplingSpec(temperature=0.8, max_new_tokens=10), seed=0)
    assert ro.group_ids.tolist() == [0] * 4 + [1] * 6
    m = ro.response_mask.bool()
    logp = token_logprobs(model, ro, temperature=0.8)
    torch.testing.assert_close(logp[m], ro.old_logp[m], rtol=1e-4, atol=1e-5)
    assert (ro.old_logp[~m] == 0).all()
    P = 8  # BOS + "34-5+6=" is the widest prompt
    resp = ro.sequences[:, P:]
    for i in range(len(ro.texts)):
        n = int(ro.response_mask[i].sum())
        if ro.stopped[i]:  # ends with its first EOS, pad after it
            assert resp[i, n - 1] == tok.eos_token_id and (resp[i, : n - 1] != tok.eos_token_id).all()
            assert (resp[i, n:] == tok.pad_token_id).all()
        else:
            assert n == 10
    assert 0 < int(ro.stopped.sum()) < len(ro.texts)


def test_same_seed_same_rollouts_and_compaction_changes_nothing(qwen, tok, monkeypatch):
    from dibs.platform.rollout import torch_engine

    model = _eos_biased(qwen, tok, 3.0)
    spec = SamplingSpec(max_new_tokens=10)
    a = TorchEngine(copy.deepcopy(model), tok).generate(PROMPTS, [3, 3, 3, 3], spec, seed=5)
    b = TorchEngine(copy.deepcopy(model), tok).generate(PROMPTS, [3, 3, 3, 3], spec, seed=5)
    assert torch.equal(a.sequences, b.sequences)
    # Greedy decoding of a batch must not depend on when finished rows are dropped from it.
    g = SamplingSpec(greedy=True, max_new_tokens=10)
    ref = TorchEngine(copy.deepcopy(model), tok).generate(PROMPTS, [2, 2, 2, 2], g, seed=0)
    monkeypatch.setattr(torch_engine, "COMPACT_FRACTION", 1e-9)  # compact at every finished row
    every = TorchEngine(copy.deepcopy(model), tok).generate(PROMPTS, [2, 2, 2, 2], g, seed=0)
    assert torch.equal(ref.sequences, every.sequences)
    torch.testing.assert_close(ref.old_logp, every.old_logp, rtol=1e-5, atol=1e-6)


def test_ignore_eos_runs_every_response_to_max_new_tokens(qwen, tok):
    model = _eos_biased(qwen, tok, 8.0)  # EOS would end most responses early
    ro = TorchEngine(model, tok).generate(
        PROMPTS, [2, 2, 2, 2], SamplingSpec(max_new_tokens=7, ignore_eos=True), seed=0
    )
    assert ro.response_mask.sum(1).tolist() == [7] * 8
    assert not ro.stopped.any()


def test_load_weights_takes_effect(qwen, tok):
    engine = TorchEngine(copy.deepcopy(qwen), tok)
    other = copy.deepcopy(qwen)
    with torch.no_grad():
        for layer in other.model.layers:
            layer.mlp.down_proj.weight.add_(torch.randn_like(layer.mlp.down_proj.weight))
    g = SamplingSpec(greedy=True, max_new_tokens=8)
    before = engine.generate(PROMPTS, [1, 1, 1, 1], g, seed=0)
    engine.load_weights(other.state_dict())
    after = engine.generate(PROMPTS, [1, 1, 1, 1], g, seed=0)
    fresh = TorchEngine(copy.deepcopy(other), tok).generate(PROMPTS, [1, 1, 1, 1], g, seed=0)
    assert not torch.equal(before.sequences, after.sequences)
    assert torch.equal(after.sequences, fresh.sequences)


def test_local_engine_by_name(qwen, tok):
    assert isinstance(local_engine("torch", copy.deepcopy(qwen), tok), TorchEngine)
    assert isinstance(local_engine("hf", copy.deepcopy(qwen), tok), HFEngine)
    with pytest.raises(ValueError, match="rollout.engine"):
        local_engine("vllm", copy.deepcopy(qwen), tok)
