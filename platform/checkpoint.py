"""Training checkpoints that a run can resume from (issue 4, fault tolerance).

A checkpoint directory `step-N/` holds the policy in Hugging Face format (loadable by transformers and
vLLM), the allocator's state (`allocator.json`) and `trainer_state.pt`: optimizer and scheduler states,
the prompt sampler's RNG and epoch cursor, the budget spent so far and the step-0 evaluation. Generation
and update seeds are derived from (seed, step), so a run resumed from step N continues exactly as the
uninterrupted run would have (tested).

A checkpoint is written under a temporary name and renamed into place, so a process killed while saving
never leaves a half-written `step-N` for a resume to pick up. With several learner ranks every rank calls
`save` and `load` (the learner's optimizer state may be partitioned, DeepSpeed ZeRO); rank 0 writes the
rest.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dibs.platform.parallel import DataParallel

ALLOCATOR_STATE = "allocator.json"
TRAINER_STATE = "trainer_state.pt"


@dataclass
class LoopState:
    """What the loop needs, besides weights and optimizer, to continue after `step`."""

    step: int
    rng: tuple  # random.Random.getstate() of the prompt sampler
    cursor: list[int]  # the rest of the current epoch's shuffled prompt indices
    budget: dict[str, float]  # Budget fields, wall seconds elapsed included
    first_eval: dict[str, float]  # the step-0 evaluation, for the run summary
    last_eval: dict[str, float] = field(default_factory=dict)


def save(root: str | Path, step: int, *, policy: torch.nn.Module, tokenizer: Any, learner: Any, allocator: Any,
         state: LoopState, ref_model: torch.nn.Module | None = None, dp: DataParallel | None = None) -> str:
    """Write `root/step-<step>` atomically; returns its path. Collective when `dp` has several ranks."""
    dp = dp or DataParallel()
    final = Path(root) / f"step-{step}"
    tmp = Path(root) / f".step-{step}.tmp"
    if dp.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dp.barrier()
    learner.save_training_state(tmp)
    weights = learner.state_dict()  # gathered from every rank's partition when ZeRO-3 splits them
    if dp.rank == 0:
        policy.save_pretrained(tmp, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        (tmp / ALLOCATOR_STATE).write_text(json.dumps(allocator.state_dict()))
        torch.save({"loop": asdict(state), "ref_model": None if ref_model is None else ref_model.state_dict()},
                   tmp / TRAINER_STATE)
    dp.barrier()
    if dp.rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    dp.barrier()
    return str(final)


def load(path: str | Path, *, learner: Any, allocator: Any, ref_model: torch.nn.Module | None = None) -> LoopState:
    """Restore optimizer, scheduler, allocator (and reference model) from `path`; the policy weights are
    loaded by whoever built the model from it. Returns the loop state."""
    path = Path(path)
    blob = torch.load(path / TRAINER_STATE, weights_only=False)  # our own file: loop state with tuples
    learner.load_training_state(path)
    if (path / ALLOCATOR_STATE).is_file():
        allocator.load_state_dict(json.loads((path / ALLOCATOR_STATE).read_text()))
    if ref_model is not None and blob["ref_model"] is not None:
        ref_model.load_state_dict(blob["ref_model"])
    loop = blob["loop"]
    loop["rng"] = _as_tuple(loop["rng"])
    return LoopState(**loop)


def is_complete(path: str | Path) -> bool:
    """A resumable checkpoint (not just the policy weights of a run from before trainer states)."""
    return (Path(path) / TRAINER_STATE).is_file() and (Path(path) / "config.json").is_file()


def latest(root: str | Path) -> str | None:
    """The newest complete `step-N` under `root`, or None."""
    steps = [(int(p.name.split("-", 1)[1]), p) for p in Path(root).glob("step-*") if p.name.split("-", 1)[1].isdigit()]
    done = [(s, p) for s, p in steps if is_complete(p)]
    return str(max(done)[1]) if done else None


def restore_rng(state: LoopState) -> random.Random:
    rng = random.Random()
    rng.setstate(state.rng)
    return rng


def _as_tuple(x: Any) -> Any:
    """random.getstate() is nested tuples; torch.save keeps them, but be safe with lists."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x
