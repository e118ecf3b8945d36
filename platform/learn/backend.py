"""The optimizer side of a learner: the `LearnerBackend` Protocol (backward, reduction over ranks,
optimizer step) that `PolicyUpdate` (learner.py) drives, `TorchBackend` (torch AdamW, its learning-rate
schedule `lr_lambda`, gradient clipping, gradients summed over ranks) and where it saves its state."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import torch

from dibs.platform.core.parallel import DataParallel
from dibs.platform.learn.checkpoint import torch_load
from dibs.platform.rollout.base import module_device

TRAINING_STATE = "learner.pt"


def lr_lambda(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based): linear warm-up, then constant
    or cosine decay to 10% at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine" and total > warmup:
        frac = min(1.0, (step - warmup) / (total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
    return 1.0


class LearnerBackend(Protocol):
    """The optimizer side of a learner: where the loss's backward runs, how gradients are reduced over
    ranks, and the optimizer step. `TorchBackend` here, `DeepSpeedBackend` in deepspeed_learner.py;
    `PolicyUpdate` drives either."""

    @property
    def forward_module(self) -> torch.nn.Module:
        """What the update's forward passes call (the policy, or the engine wrapping it)."""
        ...

    @property
    def device(self) -> torch.device: ...

    def zero_grad(self) -> None: ...

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        """Accumulate one micro-batch's gradient; `last`: the optimizer step's final one."""
        ...

    def empty_backward(self, *, last: bool) -> None:
        """A rank out of micro-batches joins the backward passes of the busiest rank."""
        ...

    def step(self) -> float:
        """Reduce gradients over ranks, clip, step optimizer and schedule; the gradient norm."""
        ...

    def lr(self) -> float: ...

    def weights(self) -> dict[str, torch.Tensor]: ...

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...


class TorchBackend:
    """torch AdamW with its learning-rate schedule, gradient clipping, and the gradients summed over ranks."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        lr: float,
        weight_decay: float,
        grad_clip: float,
        total_steps: int,
        warmup_steps: int,
        adam_eps: float,
        schedule: str,
        dp: DataParallel,
    ):
        self.model = model.train()
        self.dp = dp
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, eps=adam_eps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_lambda(s, warmup=warmup_steps, total=total_steps, schedule=schedule)
        )
        self.grad_clip = grad_clip

    @property
    def forward_module(self) -> torch.nn.Module:
        return self.model

    @property
    def device(self) -> torch.device:
        """Where the policy lives; batches arrive on the CPU and move here micro-batch by micro-batch."""
        return module_device(self.model)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        loss.backward()

    def empty_backward(self, *, last: bool) -> None:
        """Nothing to do here: `step` fills zero gradients before the reduction."""

    def step(self) -> float:
        """Sum gradients over ranks (a rank without samples contributes zeros), clip, step."""
        if self.dp.active:
            params = [p for p in self.model.parameters() if p.requires_grad]
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            self.dp.all_reduce_sum_([p.grad for p in params])
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.sched.step()
        return float(grad_norm)

    def lr(self) -> float:
        return self.sched.get_last_lr()[0]

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def save(self, directory: Path) -> None:
        """Optimizer and scheduler state into `directory` (the weights are saved with the model). Every
        rank calls it; ranks hold identical states here, so rank 0 writes."""
        if self.dp.rank == 0:
            torch.save(
                {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()},
                directory / TRAINING_STATE,
            )

    def load(self, directory: Path) -> None:
        state = torch_load(directory / TRAINING_STATE)  # tensors and plain containers only
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
