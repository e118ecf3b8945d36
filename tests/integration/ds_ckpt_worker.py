"""One process of tests/integration/test_deepspeed_checkpoint.py: `python ds_ckpt_worker.py STAGE DIR`.
Saves a DeepSpeed learner's state (ZeRO stage STAGE, one rank) under DIR, loads it into a fresh learner,
then plants a pickle payload in each of DeepSpeed's .pt files in turn and loads again. Prints one line of
JSON: the files, whether the weights came back, and each planted load's error."""

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from transformers import Qwen2ForCausalLM

from dibs.platform.core.config import ModelConfig
from dibs.platform.core.parallel import DataParallel
from dibs.platform.learn.checkpoint import CheckpointError
from dibs.platform.learn.deepspeed_learner import DeepSpeedLearner
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.tasks.chain_sum import ALPHABET


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def learner(stage: int, seed: int) -> DeepSpeedLearner:
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    return DeepSpeedLearner(
        Qwen2ForCausalLM(qwen2_config(cfg, train_tokenizer(ALPHABET))),
        zero_stage=stage,
        lr=1e-2,
        weight_decay=0.0,
        grad_clip=1.0,
        micro_batch_size=2,
        total_steps=4,
        dp=DataParallel(0, 1),
    )


def main(stage: int, out: Path) -> None:
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    a = learner(stage, 0)
    engine = a.backend.engine
    a.backend.backward(engine(input_ids=torch.randint(0, 10, (2, 6))).logits.float().pow(2).mean(), last=True)
    a.backend.step()
    saved = out / "saved"
    saved.mkdir(parents=True)
    a.save_training_state(saved)
    b = learner(stage, 1)
    b.load_training_state(saved)
    wa, wb = a.state_dict(), b.state_dict()
    result = {
        "files": sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()),
        "restored": all(torch.equal(wa[k], wb[k]) for k in wa),
        "planted": {},
    }
    marker = out / "pwned"
    for name in result["files"]:
        case = out / name.replace("/", "_")
        shutil.copytree(saved, case)
        torch.save(Payload(str(marker)), case / name)
        try:
            learner(stage, 2).load_training_state(case)
            result["planted"][name] = "loaded"
        except CheckpointError as e:
            result["planted"][name] = str(e)
    result["marker"] = marker.exists()
    print("RESULT " + json.dumps(result))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
