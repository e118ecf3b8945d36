"""The `Runtime` of one process (runtime/base.py): the in-process rollout engine (or vLLM) and the torch
learner, both on `runtime.device`. `learner_kwargs` is the learner's settings from a config, which the
distributed runtime (distributed.py) shares.
"""

from __future__ import annotations

import copy
import math

import torch

from dibs.platform.core.config import ExperimentConfig
from dibs.platform.core.parallel import DataParallel
from dibs.platform.learn.base import Learner
from dibs.platform.learn.learner import TorchLearner
from dibs.platform.learn.warm_start import Progress, prepare
from dibs.platform.rollout.base import RolloutEngine, module_device
from dibs.platform.rollout.torch_engine import local_engine
from dibs.platform.runtime.base import Prepared
from dibs.platform.tasks.base import TaskData


def learner_kwargs(cfg: ExperimentConfig, ref: torch.nn.Module | None) -> dict:
    """The RL learner's settings from the config, whichever backend trains."""
    t = cfg.train
    # Optimizer steps of the run; with mini_batch_samples an estimate from the nominal batch (GVM and
    # dapo batches are about that size, drop_equal_groups makes them smaller).
    per_epoch = (
        t.minibatches
        if t.mini_batch_samples is None
        else math.ceil(t.prompts_per_step * cfg.allocation.n_per_prompt / t.mini_batch_samples)
    )
    steps = t.steps * t.epochs_per_batch * per_epoch
    return {
        "lr": t.lr,
        "weight_decay": t.weight_decay,
        "grad_clip": t.grad_clip,
        "micro_batch_size": t.micro_batch_size,
        "total_steps": steps,
        "warmup_steps": t.warmup_steps,
        "adam_eps": t.adam_eps,
        "schedule": t.lr_schedule,
        "algorithm": cfg.algorithm,
        "clip_eps": t.clip_eps,
        "kl_coef": t.kl_coef,
        "epochs": t.epochs_per_batch,
        "minibatches": t.minibatches,
        "temperature": cfg.rollout.temperature,
        "ref_model": ref,
        "compile": t.compile,
        "loss_agg": t.loss_agg,
        "mini_batch_samples": t.mini_batch_samples,
    }


class LocalRuntime:
    """The `Runtime` (runtime/base.py) of one process: the in-process engine (or vLLM) and the torch learner.
    The distributed runtime (platform/runtime/distributed.py) answers the same questions per rank."""

    dp = DataParallel()

    def prepare(
        self, cfg: ExperimentConfig, progress: Progress, data: TaskData | None, resume_from: str | None
    ) -> Prepared:
        return prepare(cfg, progress, data, resume_from=resume_from)

    def engine(self, cfg: ExperimentConfig, policy: torch.nn.Module, tokenizer) -> RolloutEngine:
        if cfg.rollout.engine == "vllm":  # vLLM loads from disk: hand it the current policy in a temp dir
            import tempfile

            from dibs.platform.rollout.vllm_engine import VLLMEngine

            path = tempfile.mkdtemp(prefix="dibs-vllm-")
            policy.save_pretrained(path)
            tokenizer.save_pretrained(path)
            on_gpu = module_device(policy).type == "cuda"
            return VLLMEngine(
                path, sleep_mode=on_gpu, gpu_memory_utilization=cfg.rollout.gpu_memory_utilization
            )
        return local_engine(cfg.rollout.engine, copy.deepcopy(policy), tokenizer)

    def learner(self, cfg: ExperimentConfig, policy: torch.nn.Module, ref: torch.nn.Module | None) -> Learner:
        return TorchLearner(policy, **learner_kwargs(cfg, ref))
