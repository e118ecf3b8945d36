"""What the allocator tests share to run a probe without a real model's gradients: a tiny policy (the probe
needs one to differentiate) and per-sample gradient norms scripted by prompt (a rollout's first token
names its prompt)."""

import torch
from transformers import Qwen2ForCausalLM

from dibs.platform.allocation import estimators
from dibs.platform.core.config import ModelConfig
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.tasks.chain_sum import ALPHABET


def tiny_policy() -> Qwen2ForCausalLM:
    cfg = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32)
    return Qwen2ForCausalLM(qwen2_config(cfg, train_tokenizer(ALPHABET)))


def script_grad_norms(monkeypatch, norms: torch.Tensor) -> None:
    """A sample's gradient norm is norms[its first token]: the scripted engines write the prompt's index."""
    monkeypatch.setattr(
        estimators, "per_sample_grad_norms", lambda model, ro, **kw: norms[ro.sequences[:, 0]]
    )
