"""Whether a checkpoint directory may be resumed from, decided without loading it or unpickling anything.

`check` refuses (CheckpointError, one line) a checkpoint that lies outside the run's own directory (symlinks
resolved), lacks a file, has JSON that does not parse, an architecture (config.json) other than the run's,
safetensors that are damaged or of other shapes than that architecture, or a `.pt` file that is damaged or
would unpickle anything but tensors and plain containers. Loading stays `weights_only` regardless: this check
is what lets a resume fall back to the previous checkpoint instead of failing the run: `choose` picks the
newest checkpoint that `check` accepts.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from dibs.platform.core.config import ConfigError
from dibs.platform.learn.checkpoint import (
    ARCH_FIELDS,
    CONFIG,
    LOOP_STATE,
    REQUIRED,
    CheckpointError,
    loop_state,
    read_json,
    warn,
)

# DeepSpeed's ZeRO optimizer files pickle these bookkeeping classes besides tensors (seen with DeepSpeed
# 0.19); they are plain data holders, allowed by name and nothing else.
DEEPSPEED_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
)


def expected_architecture(model: Any, alphabet: Sequence[str]) -> dict[str, Any]:
    """The run's architecture fields: its `model.path`'s config.json, else the tiny model it builds over
    its task's `alphabet` (the vocabulary size depends on it)."""
    if model.path:
        try:
            cfg = json.loads((Path(model.path) / CONFIG).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"model.path: cannot read {Path(model.path) / CONFIG}: {e}") from None
    else:
        from dibs.platform.learn.model import qwen2_config, train_tokenizer

        cfg = qwen2_config(model, train_tokenizer(alphabet)).to_dict()
    return {k: cfg.get(k) for k in ARCH_FIELDS}


def choose(
    recorded: Iterable[tuple[int, str]],
    *,
    run_dir: str | Path,
    model: Any,
    alphabet: Sequence[str],
    on_skip: Callable[[str], None] = warn,
) -> tuple[int, str] | None:
    """The checkpoint to resume from: the newest of `recorded` (step, path) that `check` accepts, each
    refused one reported through `on_skip` in one line (step, path, why); None when none is usable.
    `model` is the run's ModelConfig: the architecture a checkpoint must have (`alphabet`: its task's,
    tasks/base.py)."""
    expected = expected_architecture(model, alphabet)
    for step, path in sorted(recorded, reverse=True):
        try:
            check(path, step=step, run_dir=Path(run_dir), expected=expected)
            return step, path
        except CheckpointError as e:
            on_skip(f"checkpoint of step {step} skipped ({path}): {e}")
    return None


def check(path: str | Path, *, step: int, run_dir: Path, expected: dict[str, Any]) -> None:
    """Raise CheckpointError (one line) unless `path` is a usable checkpoint of step `step` of the run whose
    directory is `run_dir` and whose architecture fields are `expected`."""
    path = Path(path)
    inside(path, run_dir)
    for name in REQUIRED:
        if not (path / name).is_file():
            raise CheckpointError(f"missing {name}")
    for f in sorted(path.rglob("*.json")):
        read_json(f)
    config = read_json(path / CONFIG)
    if not isinstance(config, dict):
        raise CheckpointError(f"{CONFIG}: not a JSON object")
    differ = [f"{k} {config.get(k)!r} (run: {v!r})" for k, v in expected.items() if config.get(k) != v]
    if differ:
        raise CheckpointError(f"model config differs from the run's: {', '.join(differ)}")
    state = loop_state(path)
    if state.step != step:
        raise CheckpointError(f"{LOOP_STATE}: step {state.step}, expected {step}")
    shapes, aliases = _expected_shapes(config)
    for f in sorted(path.rglob("*.safetensors")):
        _check_safetensors(f, shapes, aliases)
    pts = sorted(path.rglob("*.pt"))
    if not pts:
        raise CheckpointError("no optimizer state (*.pt)")
    for f in pts:
        _check_pt(f)


def inside(path: Path, run_dir: Path) -> None:
    """`path` and everything in it resolve (symlinks followed) into `run_dir`."""
    root = run_dir.resolve()
    if not path.is_dir():
        raise CheckpointError("not a directory")
    for p in [path, *path.rglob("*")]:
        if not p.resolve().is_relative_to(root):
            raise CheckpointError(f"{p} is outside the run's directory {root}")
        if p != path and p.is_symlink() and p.is_dir():  # rglob does not look inside; nothing we save is one
            raise CheckpointError(f"{p} is a symlinked directory")


def _expected_shapes(config: dict) -> tuple[dict[str, tuple[int, ...]], list[set[str]]]:
    """Parameter shapes of the architecture in `config`, from a model on the meta device (no memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        hf = AutoConfig.for_model(
            config.get("model_type"), **{k: v for k, v in config.items() if k != "model_type"}
        )
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{CONFIG}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, _aliases(model)


def _aliases(model: torch.nn.Module) -> list[set[str]]:
    """Names that share one parameter (tied embeddings): a file needs only one of each group."""
    groups: dict[int, set[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), set()).add(name)
    return [g for g in groups.values() if len(g) > 1]


def _check_safetensors(f: Path, shapes: dict[str, tuple[int, ...]], aliases: list[set[str]]) -> None:
    """A complete safetensors file whose tensors are exactly the architecture's (of tied ones, one is
    enough), each of its shape."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(f), framework="pt") as st:
            found = {k: tuple(st.get_slice(k).get_shape()) for k in st.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f.name}: damaged ({str(e).splitlines()[0]})") from None
    wrong = [
        f"{k} {list(s)} (run: {list(shapes[k])})" for k, s in found.items() if k in shapes and shapes[k] != s
    ]
    unknown = sorted(set(found) - set(shapes))
    covered = {name for group in aliases if group & set(found) for name in group}
    missing = sorted(set(shapes) - set(found) - covered)
    if wrong:
        raise CheckpointError(f"{f.name}: wrong shape: {', '.join(wrong[:3])}")
    if unknown or missing:
        raise CheckpointError(
            f"{f.name}: tensors differ from the architecture's "
            f"(unexpected {unknown[:3]}, missing {missing[:3]})"
        )


def _check_pt(f: Path) -> None:
    """A complete torch zip archive (every member's CRC) whose pickle names no global beyond torch's safe
    set and DeepSpeed's three classes; the pickle is only scanned, never run."""
    try:
        with zipfile.ZipFile(f) as z:
            bad = z.testzip()
        if bad is not None:
            raise CheckpointError(f"{f.name}: damaged member {bad}")
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(f))
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - BadZipFile, a bad pickle stream, ... from an untrusted file
        raise CheckpointError(
            f"{f.name}: not a readable torch archive ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
        ) from None
    refused = sorted(set(unsafe) - set(DEEPSPEED_GLOBALS))
    if refused:
        raise CheckpointError(f"{f.name}: would unpickle {', '.join(refused[:3])} (only tensors are allowed)")
