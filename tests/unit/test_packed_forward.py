"""The learner's forward (rows packed to the left, fused projections, maskless causal attention; see
learner._packed_logprobs and platform/rollout/qwen_forward.py) against transformers' own forward with the
batch's real tokens alone: same log-probs, same gradients, on Qwen2 (GQA, q/k/v biases) and Llama."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2ForCausalLM

from dibs.platform.core.config import ModelConfig
from dibs.platform.learn.learner import token_logprobs
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout import qwen_forward as Q
from dibs.platform.rollout.base import Rollouts, SamplingSpec, merge_rollouts, position_ids
from dibs.platform.rollout.hf_engine import HFEngine
from dibs.platform.tasks.chain_sum import ALPHABET

pytestmark = pytest.mark.unit


def _models(tok):
    torch.manual_seed(0)
    qwen = Qwen2ForCausalLM(
        qwen2_config(
            ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64), tok
        )
    )
    with torch.no_grad():  # nonzero biases, so a dropped bias would show
        for layer in qwen.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    llama = LlamaForCausalLM(
        LlamaConfig(
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
    )
    return {"qwen": qwen, "llama": llama}


def _reference(model, ro: Rollouts, temperature: float) -> torch.Tensor:
    """transformers' forward one row at a time on its real tokens alone (no padding, no mask): the
    exact answer, also for gradients (a padded batch leaks tiny gradients into pad embeddings)."""
    out = torch.zeros(ro.response_mask.shape)
    for b in range(len(ro.texts)):
        cols = torch.nonzero(ro.attention_mask[b]).squeeze(-1)
        ids = ro.sequences[b, cols][None]
        logits = model(input_ids=ids).logits[0, :-1].float() / temperature
        lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        out = out.index_put((torch.full((len(cols) - 1,), b), cols[:-1]), lp)
    return out


def _padded_reference(model, ro: Rollouts) -> torch.Tensor:
    logits = (
        model(
            input_ids=ro.sequences,
            attention_mask=ro.attention_mask,
            position_ids=position_ids(ro.attention_mask),
        )
        .logits[:, :-1]
        .float()
    )
    return torch.log_softmax(logits, -1).gather(-1, ro.sequences[:, 1:, None]).squeeze(-1)


@pytest.mark.parametrize("attention", ["matmuls", "sdpa"])
@pytest.mark.parametrize("arch", ["qwen", "llama"])
def test_packed_logprobs_and_gradients_equal_transformers(arch, attention, monkeypatch):
    if attention == "sdpa":  # the fused kernel, which rows longer than Q.SHORT take
        monkeypatch.setattr(Q, "SHORT", 0)
    tok = train_tokenizer(ALPHABET)
    model = _models(tok)[arch]
    engine = HFEngine(copy.deepcopy(model), tok)
    spec = SamplingSpec(max_new_tokens=9)
    # Two separately generated batches merged: extra left padding on some rows, ragged responses.
    a = engine.generate(["1+2=", "34-5+6="], [2, 2], spec, seed=0)
    b = engine.generate(["12+34-56+7=", "7="], [2, 1], spec, seed=1)
    ro = merge_rollouts([a, b], torch.arange(7), pad_id=tok.pad_token_id)
    m = ro.response_mask
    assert len(set(m.sum(1).tolist())) > 1 and (ro.attention_mask[:, 0] == 0).any()

    ref_model, fast_model = copy.deepcopy(model), copy.deepcopy(model)
    ref = _reference(ref_model, ro, 0.7)
    fast = token_logprobs(fast_model, ro, temperature=0.7)
    assert fast.shape == ref.shape == m.shape
    # Every target predicted from a real token (prompt included); a row's first token is no target.
    real = (ro.attention_mask[:, 1:] * ro.attention_mask[:, :-1]).bool()
    torch.testing.assert_close(fast[real], ref[real], rtol=1e-5, atol=1e-5)
    assert (fast[~real] == 0).all()

    weights = torch.randn(m.shape) * m
    (ref * weights).sum().backward()
    (fast * weights).sum().backward()
    for (name, p), q in zip(ref_model.named_parameters(), fast_model.parameters(), strict=True):
        assert q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_non_contiguous_row_falls_back_to_transformers():
    tok = train_tokenizer(ALPHABET)
    model = _models(tok)["qwen"]
    ro = HFEngine(copy.deepcopy(model), tok).generate(
        ["1+2=", "34-5+6="], [1, 1], SamplingSpec(max_new_tokens=4), seed=0
    )
    holed = copy.copy(ro)
    holed.attention_mask = ro.attention_mask.clone()
    holed.attention_mask[1, -3] = 0  # a hole inside row 1's real tokens
    torch.testing.assert_close(token_logprobs(model, holed), _padded_reference(model, holed))


def test_swiglu_gradient_is_the_plain_ops_gradient():
    """The eager SwiGLU writes its fused gradient by hand: finite differences and the plain ops agree."""
    torch.manual_seed(0)
    gu = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Q.swiglu, (gu,))
    gate, up = gu.chunk(2, dim=-1)
    grad = torch.randn(3, 5, 4, dtype=torch.float64)
    (mine,) = torch.autograd.grad(Q.swiglu(gu), gu, grad)
    (plain,) = torch.autograd.grad(torch.nn.functional.silu(gate) * up, gu, grad)
    torch.testing.assert_close(mine, plain)
