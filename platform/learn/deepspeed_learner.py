"""The DeepSpeed learner: the torch learner's RL update (`PolicyUpdate`) over a DeepSpeed engine doing the
backward, the gradient reduction over ranks, clipping and the optimizer step (ZeRO stage 0-3; gloo on CPU,
NCCL on GPU).

The optimizer is torch AdamW handed to DeepSpeed (its fused CPU Adam needs a compiled op, and the torch
one keeps the single-process and DeepSpeed runs comparable). DeepSpeed averages gradients over ranks,
while our loss is already divided by the whole mini-batch's token count on every rank: the loss is
multiplied by the world size so that the average is the one-process gradient.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from dibs.platform.learn.backend import TorchBackend
from dibs.platform.learn.checkpoint import CheckpointError, torch_load
from dibs.platform.learn.checkpoint_check import DEEPSPEED_GLOBALS
from dibs.platform.learn.learner import learner_parts
from dibs.platform.rollout.base import Rollouts, module_device

DS_DIR, DS_TAG = "deepspeed", "state"


def deepspeed_config(zero_stage: int, grad_clip: float) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 1,  # we micro-batch ourselves (token-exact); DeepSpeed only steps
        "gradient_accumulation_steps": 1,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
    }


def deepspeed_globals() -> list[type]:
    """The classes DeepSpeed's files may unpickle besides tensors (checkpoint_check.DEEPSPEED_GLOBALS)."""
    out = []
    for dotted in DEEPSPEED_GLOBALS:
        module, name = dotted.rsplit(".", 1)
        out.append(getattr(importlib.import_module(module), name))
    return out


class DeepSpeedBackend:
    """The `LearnerBackend` (backend.py) on a DeepSpeed engine built around a `TorchBackend`'s policy, AdamW
    and schedule: the engine does the backward, the reduction over ranks, clipping and the step."""

    def __init__(self, base: TorchBackend, zero_stage: int):
        import deepspeed

        self.zero_stage, self.dp, self.model = zero_stage, base.dp, base.model
        self.engine, self.opt, _, self.sched = deepspeed.initialize(
            model=base.model,
            optimizer=base.opt,
            lr_scheduler=base.sched,
            config=deepspeed_config(zero_stage, base.grad_clip),
        )

    @property
    def forward_module(self) -> torch.nn.Module:
        return self.engine

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    def zero_grad(self) -> None:
        """DeepSpeed clears gradients itself after each optimizer step."""

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        self.engine.set_gradient_accumulation_boundary(last)  # reduce and step only after the last one
        self.engine.backward(loss * self.dp.world)

    def empty_backward(self, *, last: bool) -> None:
        """No samples left on this rank: a zero loss through the engine still joins the collectives of a
        backward pass (gradient reduction; under ZeRO-3 also the parameter gathers)."""
        ids = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        self.backward(self.engine(input_ids=ids).logits.sum() * 0.0, last=last)

    def step(self) -> float:
        self.engine.step()  # clip, reduce-scatter/all-reduce, AdamW, lr schedule
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def lr(self) -> float:
        return self.sched.get_last_lr()[0]

    def weights(self) -> dict[str, torch.Tensor]:
        """Full weights on every rank (a collective under ZeRO-3, where each rank holds a partition)."""
        module = self.engine.module
        if self.zero_stage < 3:
            return {k: v.detach().clone() for k, v in module.state_dict().items()}
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters())):
            return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def save(self, directory: Path) -> None:
        """Every rank writes its partition of the optimizer state (a shared filesystem across nodes).
        DeepSpeed also copies its conversion scripts in; a checkpoint holds no code, so they go."""
        self.engine.save_checkpoint(str(directory / DS_DIR), tag=DS_TAG, save_latest=False)
        if self.dp.rank == 0:
            for script in (directory / DS_DIR).glob("*.py"):
                script.unlink(missing_ok=True)

    def load(self, directory: Path) -> None:
        """DeepSpeed reads its files through the engine's checkpoint engine, whose own `torch.load` would
        unpickle anything: that engine's `load` is replaced by a weights-only one for this call."""
        from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

        engine = self.engine.checkpoint_engine
        if type(engine) is not TorchCheckpointEngine:
            raise CheckpointError(
                f"DeepSpeed checkpoint engine {type(engine).__name__}: not supported for resume"
            )
        allow = deepspeed_globals()
        engine.load = lambda path, map_location=None: torch_load(path, map_location, allow=allow)
        try:
            self.engine.load_checkpoint(
                str(directory / DS_DIR), tag=DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        finally:
            del engine.load  # the class's own again


class DeepSpeedLearner:
    """The `Learner` (learn/base.py) on DeepSpeed: the torch learner's `PolicyUpdate` over a
    `DeepSpeedBackend`. Keywords: `learner.learner_parts`, plus the ZeRO stage."""

    def __init__(self, model: torch.nn.Module, *, zero_stage: int, **settings):
        base, self.rl = learner_parts(model, **settings)
        self.backend = DeepSpeedBackend(base, zero_stage)

    def update(self, rollouts: Rollouts, advantages: torch.Tensor, *, seed: int) -> dict[str, float]:
        return self.rl.update(self.backend, rollouts, advantages, seed=seed)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.backend.weights()

    def save_training_state(self, directory: Path) -> None:
        self.backend.save(directory)

    def load_training_state(self, directory: Path) -> None:
        self.backend.load(directory)
