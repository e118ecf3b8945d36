"""Run as a script by test_host.py: page faults per learner update of a demo-sized batch, in a fresh
process, with freed memory kept (argv[1] == "keep") or glibc's default. Prints the count."""

import resource
import sys

import torch
from transformers import Qwen2ForCausalLM

from dibs.platform.core.config import ModelConfig
from dibs.platform.core.host import configure_process
from dibs.platform.learn.learner import TorchLearner
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout.base import Rollouts
from dibs.platform.tasks.chain_sum import ALPHABET


def main(keep: bool) -> None:
    assert configure_process(2, keep) == keep
    tok = train_tokenizer(ALPHABET)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qwen2_config(ModelConfig(num_layers=2), tok))  # the demo's widths
    B, L = 96, 40
    lengths = torch.randint(20, L + 1, (B,))
    mask = (torch.arange(L)[None] < lengths[:, None]).long()
    seq = torch.randint(3, len(tok), (B, L)) * mask
    ro = Rollouts(
        seq,
        mask,
        mask[:, 1:].float(),
        torch.zeros(B, L - 1),
        torch.arange(B) // 8,
        [""] * B,
        torch.ones(B, dtype=torch.bool),
    )
    learner = TorchLearner(
        model, lr=1e-5, weight_decay=0.0, grad_clip=1.0, micro_batch_size=32, total_steps=10
    )
    adv = torch.randn(B)
    for _ in range(2):
        learner.update(ro, adv, seed=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        learner.update(ro, adv, seed=0)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)


if __name__ == "__main__":
    main(sys.argv[1] == "keep")
