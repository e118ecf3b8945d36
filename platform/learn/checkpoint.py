"""Training checkpoints that a run can resume from (fault tolerance), holding tensors and JSON only.

A checkpoint directory `step-N/` holds the policy in Hugging Face format as safetensors (loadable by
transformers and vLLM) with its tokenizer (JSON), the allocator's state (`allocator.json`), the loop
state (`loop_state.json`: the prompt sampler's RNG and epoch cursor, the budget spent so far, the step-0
and last evaluations), the KL reference model (`ref_model.safetensors`, when the run has one) and the
learner's optimizer and scheduler states (`learner.pt`, or DeepSpeed's files under `deepspeed/`).
Generation and update seeds are derived from (seed, step), so a run resumed from step N continues
exactly as the uninterrupted run would have (tested).

Nothing in a checkpoint is trusted: its path comes from the results store, which others may write.
Nothing is unpickled beyond tensors and plain containers (`torch.load(weights_only=True)`, with DeepSpeed's
three bookkeeping classes allowed by name), weights load only from safetensors, and `checkpoint_check.choose`
refuses a checkpoint outside the run's own directory, of another architecture, or one that is incomplete or
damaged, falling back to the next older one.

A checkpoint is written into a temporary directory, fsynced, and renamed into place; a step written again
replaces the old one only once the new one is in place. With several learner ranks every rank calls `save`
and `load` (the learner's optimizer state may be partitioned, DeepSpeed ZeRO); rank 0 writes the rest.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydantic
import torch

from dibs.platform.core.parallel import DataParallel
from dibs.platform.learn.base import Learner

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ALLOCATOR_STATE = "allocator.json"
LOOP_STATE = "loop_state.json"
REF_MODEL = "ref_model.safetensors"
REQUIRED = (CONFIG, WEIGHTS, ALLOCATOR_STATE, LOOP_STATE)
# Hugging Face config fields that fix the weights' shapes: a checkpoint must match the run's in all of them.
ARCH_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "tie_word_embeddings",
)


class Stateful(Protocol):
    """What a checkpoint keeps of an allocator: its JSON-serialisable state."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line saying why."""


@dataclass
class LoopState:
    """What the loop needs, besides weights and optimizer, to continue after `step`."""

    step: int
    rng: tuple  # random.Random.getstate() of the prompt sampler
    cursor: list[int]  # the rest of the current epoch's shuffled prompt indices
    budget: dict[str, float]  # Budget fields, wall seconds elapsed included
    first_eval: dict[str, float]  # the step-0 evaluation, for the run summary
    last_eval: dict[str, float] = field(default_factory=dict)


def save(
    root: str | Path,
    step: int,
    *,
    policy: torch.nn.Module,
    tokenizer: Any,
    learner: Learner,
    allocator: Stateful,
    state: LoopState,
    ref_model: torch.nn.Module | None = None,
    dp: DataParallel | None = None,
) -> str:
    """Write `root/step-<step>` atomically and durably; returns its path. Collective when `dp` has several
    ranks."""
    from safetensors.torch import save_model

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
        policy.save_pretrained(tmp, state_dict=weights)  # safetensors (transformers' only format)
        tokenizer.save_pretrained(tmp)
        (tmp / ALLOCATOR_STATE).write_text(json.dumps(allocator.state_dict()))
        (tmp / LOOP_STATE).write_text(json.dumps(asdict(state)))
        if ref_model is not None:
            save_model(ref_model, str(tmp / REF_MODEL))  # drops the tied lm_head copy
    dp.barrier()  # every rank's optimizer partition is written
    if dp.rank == 0:
        _fsync_tree(tmp)
        _publish(tmp, final)
    dp.barrier()
    return str(final)


def _publish(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; a `final` already there (the step saved again after a resume) is moved
    aside first and deleted only once the new one is in place, so some copy of the step always exists."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    _fsync(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root` to disk, so the rename publishes complete files."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            _fsync(Path(dirpath) / name)
        _fsync(Path(dirpath))


def _fsync(path: Path) -> None:
    """Flush one file or directory (a directory's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(
    path: str | Path, *, learner: Learner, allocator: Stateful, ref_model: torch.nn.Module | None = None
) -> LoopState:
    """Restore optimizer, scheduler, allocator (and reference model) from `path`; the policy weights are
    loaded by whoever built the model from it (`model.load`, safetensors only). Returns the loop state."""
    from safetensors.torch import load_model

    path = Path(path)
    state = loop_state(path)
    learner.load_training_state(path)
    allocator.load_state_dict(read_json(path / ALLOCATOR_STATE))
    if ref_model is not None and (path / REF_MODEL).is_file():
        load_model(ref_model, str(path / REF_MODEL))
    return state


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path.name}: not readable JSON ({_first_line(e)})") from None


def loop_state(path: Path) -> LoopState:
    """The loop state in `path/loop_state.json`, its types checked."""
    try:
        state = pydantic.TypeAdapter(LoopState).validate_python(read_json(path / LOOP_STATE))
    except pydantic.ValidationError as e:
        raise CheckpointError(
            f"{LOOP_STATE}: {_first_line(e.errors()[0]['msg'])} at {'.'.join(map(str, e.errors()[0]['loc']))}"
        ) from None
    state.rng = _as_tuple(state.rng)  # JSON has lists; random.setstate wants nested tuples
    return state


def is_complete(path: str | Path) -> bool:
    """A resumable checkpoint (not just the policy weights, nor one of the pickled format before)."""
    return (Path(path) / LOOP_STATE).is_file() and (Path(path) / CONFIG).is_file()


def on_disk(root: str | Path) -> list[tuple[int, str]]:
    """Every `step-N` directory under `root` as (N, path), oldest first."""
    return sorted(
        (int(p.name.split("-", 1)[1]), str(p))
        for p in Path(root).glob("step-*")
        if p.name.split("-", 1)[1].isdigit()
    )


def latest(root: str | Path) -> str | None:
    """The newest complete `step-N` under `root`, or None (no content checks: see
    `checkpoint_check.choose`)."""
    done = [path for _, path in on_disk(root) if is_complete(path)]
    return done[-1] if done else None


def restore_rng(state: LoopState) -> random.Random:
    rng = random.Random()
    rng.setstate(state.rng)
    return rng


def _as_tuple(x: Any) -> Any:
    """random.getstate() is nested tuples; JSON gives lists."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def _first_line(e: object) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def warn(msg: str) -> None:
    print(f"dibs: warning: {msg}", file=sys.stderr, flush=True)


def torch_load(path: str | Path, map_location: Any = None, *, allow: Iterable[Any] = ()) -> Any:
    """`torch.load` of tensors and plain containers only (nothing else is unpickled), plus the classes
    in `allow`; any refusal or damage is a CheckpointError naming the file."""
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{Path(path).name}: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - pickle.UnpicklingError and its kin from a crafted file
        raise CheckpointError(f"{Path(path).name}: refused ({type(e).__name__}: {_first_line(e)})") from None
