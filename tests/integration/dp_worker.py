"""One rank of the data-parallel equivalence test (tests/integration/test_data_parallel.py), run as a
subprocess: `python dp_worker.py BACKEND RANK WORLD OUT [VARIANT]` (BACKEND torch, zero2 or zero3) with
MASTER_ADDR/MASTER_PORT set. WORLD 1 is the single-process reference. VARIANT `prompt_mean` trains with
loss_agg prompt_mean and mini-batches of 5 samples instead of 2 by prompt (groups straddle mini-batches).
Writes the learner's stats and final weights to OUT (rank 0)."""

import os
import sys

import torch
from transformers import Qwen2ForCausalLM

from dibs.platform.core.config import ModelConfig
from dibs.platform.core.parallel import DataParallel
from dibs.platform.learn.learner import TorchLearner
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout.base import SamplingSpec
from dibs.platform.rollout.hf_engine import HFEngine
from dibs.platform.tasks.chain_sum import ALPHABET


def main(backend: str, rank: int, world: int, out: str, variant: str = "default") -> None:
    torch.set_num_threads(1)
    tok = train_tokenizer(ALPHABET)
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    model = Qwen2ForCausalLM(qwen2_config(cfg, tok))
    # The same ragged batch on every rank: 5 prompts with 3, 1, 2, 4, 2 samples.
    ro = HFEngine(Qwen2ForCausalLM(qwen2_config(cfg, tok)).eval(), tok).generate(
        ["1+2=", "34-5=", "7+7+7=", "12-3=", "5+5="], [3, 1, 2, 4, 2], SamplingSpec(max_new_tokens=6), seed=1
    )
    ro.old_logp = ro.old_logp - 0.05 * ro.response_mask  # ratios away from 1: the clip is exercised
    adv = torch.linspace(-1.0, 1.0, len(ro.texts))
    if world > 1:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    kwargs = {
        "lr": 1e-2,
        "weight_decay": 0.0,
        "grad_clip": 1e6,
        "micro_batch_size": 2,
        "total_steps": 4,
        "minibatches": 2,
        "epochs": 1,
        "algorithm": "grpo",
        "dp": DataParallel(rank, world),
    }
    if variant == "prompt_mean":
        kwargs |= {"minibatches": 1, "mini_batch_samples": 5, "loss_agg": "prompt_mean"}
    if backend.startswith("zero"):  # zero2, zero3: DeepSpeed at that ZeRO stage
        from dibs.platform.learn.deepspeed_learner import DeepSpeedLearner

        learner = DeepSpeedLearner(model, zero_stage=int(backend[-1]), **kwargs)
    else:
        learner = TorchLearner(model, **kwargs)
    stats = learner.update(ro, adv, seed=3)
    weights = learner.state_dict()
    if rank == 0:
        torch.save({"stats": stats, "weights": weights}, out)
    if world > 1:
        torch.distributed.barrier()
        # Tear the group down before the interpreter does: left to exit, gloo's and DeepSpeed's threads were
        # now and then destroyed while joinable ("terminate called without an active exception", rc != 0).
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], *sys.argv[5:])
