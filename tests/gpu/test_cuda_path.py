"""The GPU path, where CUDA is available (skipped elsewhere): the transformers engine and the
learner on the same device give what they give on the CPU; DeepSpeed steps over NCCL; a run with a
colocated engine and learner trains on the GPU. Run on a GPU machine with `pytest -m gpu tests/gpu`."""

import copy
import os
import pickle
import socket

import pytest
import torch
from transformers import Qwen2ForCausalLM

from dibs.platform.allocation.estimators import per_sample_grad_norms
from dibs.platform.core import metrics as M
from dibs.platform.core.config import ModelConfig, load_config
from dibs.platform.learn.learner import TorchLearner
from dibs.platform.learn.model import qwen2_config, train_tokenizer
from dibs.platform.rollout.base import SamplingSpec
from dibs.platform.rollout.hf_engine import HFEngine
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import MemoryRecorder, NullProgress
from dibs.platform.tasks.chain_sum import ALPHABET

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

PROMPTS, COUNTS = ["1+2=", "34-5+6=", "7+7=", "12-3="], [3, 2, 4, 1]


@pytest.fixture(scope="module")
def tiny():
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 parity: no TF32 matmuls on the GPU
    torch.backends.cudnn.allow_tf32 = False
    tok = train_tokenizer(ALPHABET)
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)
    return Qwen2ForCausalLM(qwen2_config(cfg, tok)).eval(), tok


def kwargs():
    return {
        "lr": 1e-2,
        "weight_decay": 0.0,
        "grad_clip": 1e6,
        "micro_batch_size": 4,
        "total_steps": 2,
        "algorithm": "grpo",
    }


def test_greedy_generation_on_cuda_matches_cpu_and_comes_back_on_cpu(tiny):
    model, tok = tiny
    spec = SamplingSpec(max_new_tokens=12, greedy=True)
    cpu = HFEngine(copy.deepcopy(model), tok).generate(PROMPTS, COUNTS, spec, seed=0)
    gpu = HFEngine(copy.deepcopy(model).cuda(), tok).generate(PROMPTS, COUNTS, spec, seed=0)
    assert gpu.sequences.device.type == "cpu" and gpu.old_logp.device.type == "cpu"
    assert torch.equal(cpu.sequences, gpu.sequences)
    torch.testing.assert_close(gpu.old_logp, cpu.old_logp, rtol=1e-4, atol=1e-4)


def test_update_and_grad_norm_estimates_on_cuda_match_cpu(tiny):
    model, tok = tiny
    ro = HFEngine(copy.deepcopy(model), tok).generate(
        PROMPTS, COUNTS, SamplingSpec(max_new_tokens=10), seed=1
    )
    adv = torch.linspace(-1.0, 1.0, len(ro.texts))
    out = {}
    for dev in ("cpu", "cuda"):
        m = copy.deepcopy(model).to(dev)
        stats = TorchLearner(m, **kwargs()).update(ro, adv, seed=3)
        norms = per_sample_grad_norms(m, ro, params="embedding").cpu()
        out[dev] = (stats, {k: v.cpu() for k, v in m.state_dict().items()}, norms)
    assert out["cuda"][0]["grad_norm"] == pytest.approx(out["cpu"][0]["grad_norm"], rel=1e-4)
    for k, w in out["cpu"][1].items():
        torch.testing.assert_close(out["cuda"][1][k], w, rtol=1e-4, atol=1e-4)  # Adam: g / sqrt(v) ~ sign(g)
    torch.testing.assert_close(out["cuda"][2], out["cpu"][2], rtol=1e-4, atol=1e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_on_nccl_steps_like_the_torch_learner(tiny, stage, monkeypatch):
    deepspeed = pytest.importorskip("deepspeed")
    model, tok = tiny
    ro = HFEngine(copy.deepcopy(model), tok).generate(
        PROMPTS, COUNTS, SamplingSpec(max_new_tokens=10), seed=1
    )
    adv = torch.linspace(-1.0, 1.0, len(ro.texts))
    ref = copy.deepcopy(model).cuda()
    want = TorchLearner(ref, **kwargs()).update(ro, adv, seed=3)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl")
    assert torch.distributed.get_backend() == "nccl"
    from dibs.platform.learn.deepspeed_learner import DeepSpeedLearner

    learner = DeepSpeedLearner(copy.deepcopy(model).cuda(), zero_stage=stage, **kwargs())
    got = learner.update(ro, adv, seed=3)
    assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-3)
    weights = learner.state_dict()
    for k, w in ref.state_dict().items():
        torch.testing.assert_close(weights[k].float(), w.float(), rtol=1e-3, atol=1e-4)


def task_data():
    """Prebuilt splits where reasoning-gym is not installed (DIBS_TASK_PKL), else None (built here)."""
    path = os.environ.get("DIBS_TASK_PKL")
    if path:
        with open(path, "rb") as f:
            return pickle.load(f)
    pytest.importorskip("reasoning_gym")
    return None


def test_colocated_engine_and_learner_train_on_the_gpu(tmp_path):
    cfg = load_config(
        "experiments/smoke.yaml",
        [
            f"model.cache_dir={tmp_path}/models",
            "runtime.device=cuda",
            "train.steps=3",
            "eval.every=3",
            "allocation.allocator=gvm",
            "allocation.n_probe=2",
            "train.kl_coef=0.01",
            "task.test_size=16",
        ],
    )
    rec = MemoryRecorder()
    torch.cuda.reset_peak_memory_stats()
    summary = train(cfg, rec, NullProgress(), checkpoint_dir=str(tmp_path / "ckpt"), data=task_data())
    assert summary["rollouts_consumed"] == rec.at(3, "budget/rollouts")[0] > 0
    assert torch.cuda.max_memory_allocated() > 0  # the policy, the engine's copy and the update were here
    peak_mib = torch.cuda.max_memory_allocated() / 2**20
    print(
        f"\ncuda run: {summary['wall_seconds']:.1f} s, peak {peak_mib:.0f} MiB, "
        f"step time {[round(rec.at(s, M.TIME_STEP)[0], 3) for s in (1, 2, 3)]}"
    )
