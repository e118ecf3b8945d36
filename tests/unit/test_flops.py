"""FLOP counting for the performance figures on the demo architecture, counted by hand."""

import pytest
from transformers import Qwen2ForCausalLM

from dibs.platform.core.config import ModelConfig
from dibs.platform.core.flops import loglog_slope, matmul_params, training_flops
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.tasks.chain_sum import ALPHABET

pytestmark = pytest.mark.unit


def test_matmul_params_of_the_demo_model():
    tok = train_tokenizer(ALPHABET)
    model = Qwen2ForCausalLM(qwen2_config(ModelConfig(), tok))  # hidden 128, 4 layers, 4/2 heads, MLP 384
    # per layer: q 128x128 + k 128x64 + v 128x64 + o 128x128 = 49,152; gate, up, down 3 x 128x384 = 147,456
    per_layer = 128 * 128 + 128 * 64 + 128 * 64 + 128 * 128 + 3 * 128 * 384
    assert per_layer == 196_608
    V = len(tok)
    assert matmul_params(model) == 4 * per_layer + V * 128  # + the output layer, tied to the embedding
    assert matmul_params(model) < sum(p.numel() for p in model.parameters())  # biases, norms excluded


def test_training_flops_and_loglog_slope():
    assert training_flops(1000, 50) == 300_000.0
    assert loglog_slope([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    assert loglog_slope([8, 16, 32], [5, 20, 80]) == pytest.approx(2.0)
    assert loglog_slope([1, 2, 4], [2, 2, 2]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="differ"):
        loglog_slope([2, 2], [1, 3])
