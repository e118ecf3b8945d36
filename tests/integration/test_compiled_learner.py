"""`train.compile: true` (the learner's decoder through torch.compile, cos/sin and the loss left eager)
computes the eager learner's gradients: same statistics, same gradient for every weight."""

import copy

import pytest
import torch
from transformers import Qwen2ForCausalLM

from dibs.platform.core.config import ModelConfig
from dibs.platform.learn.learner import TorchLearner
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout.base import SamplingSpec, merge_rollouts
from dibs.platform.rollout.hf_engine import HFEngine
from dibs.platform.tasks.chain_sum import ALPHABET

pytestmark = pytest.mark.integration


def test_compiled_learner_takes_the_eager_step():
    tok = train_tokenizer(ALPHABET)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(
        qwen2_config(
            ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64), tok
        )
    )
    engine = HFEngine(copy.deepcopy(model), tok)
    spec = SamplingSpec(max_new_tokens=9)
    a = engine.generate(["1+2=", "34-5+6="], [2, 2], spec, seed=0)
    b = engine.generate(["12+34-56+7=", "7="], [2, 1], spec, seed=1)
    ro = merge_rollouts([a, b], torch.arange(7), pad_id=tok.pad_token_id)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.3])
    kw = {"lr": 1e-2, "weight_decay": 0.0, "grad_clip": 100.0, "micro_batch_size": 3, "total_steps": 10}
    eager = TorchLearner(copy.deepcopy(model), **kw)
    compiled = TorchLearner(copy.deepcopy(model), compile=True, **kw)
    # Three micro-batches of different sizes and widths: one compiled graph with symbolic shapes serves all.
    se, sc = eager.update(ro, adv, seed=0), compiled.update(ro, adv, seed=0)
    for k in ("pg_loss", "grad_norm", "ratio_mean"):
        assert sc[k] == pytest.approx(se[k], rel=1e-5), k
    for (name, p), q in zip(
        eager.backend.model.named_parameters(), compiled.backend.model.parameters(), strict=True
    ):
        assert q.grad is not None, name  # the gradients of the step just taken (zeroed at the next one)
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
