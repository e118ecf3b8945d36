"""Experiment YAML files as plain mappings, before the typed check of config.py: reading a file strictly,
layering it on a `base:` file, and dotted overrides (`train.lr: 3e-5` in a file, `--set train.lr=3e-5`,
a sweep's `fixed:` keys and trial parameters all go through `set_dotted`).

    base: ../common.yaml     # relative to this file; its own base, if any, is read first
    name: grpo-gvm           # this file's keys are deep-merged over the base's
    train.lr: 3.0e-5         # a dotted key sets one leaf, keeping the rest of the section

The result is one merged mapping with no `base` key left in it: what a run records is the whole config,
reproducible without the files it came from. Unknown keys are left for the strict check of the merged
mapping (config.validate_dict), which names them by their dotted path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from dibs.platform.core import strict_yaml

# Config files are a few KB; a bigger one is not an experiment, and is refused before it is read.
MAX_FILE_BYTES = 1 << 20
# A dotted config path: `train.lr`, `seed`. No `=`, `,` or spaces, which `--set` and Tune keys cannot carry.
DOTTED_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
BASE_KEY = "base"


class ConfigError(Exception):
    """A one-line, user-facing error: file, dotted key, problem."""


def read_yaml_mapping(
    path: str | Path, expected: str = "a mapping of config keys", kind: str = "file"
) -> dict:
    """A YAML file's top-level mapping, read strictly (strict_yaml.py); a missing, unreadable, empty or
    non-mapping file is a one-line ConfigError. `kind` names the file in the empty-file message."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{path}: {path.stat().st_size} bytes; config files are at most {MAX_FILE_BYTES}"
            )
        data = strict_yaml.load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML{strict_yaml.describe(e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    if data is None:  # empty, only comments, or `null`: not a run of all defaults
        raise ConfigError(f"{path}: empty {kind}: expected {expected}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: <root>: expected {expected}, got {type(data).__name__}")
    return data


def set_dotted(data: dict, key: str, value: Any, source: str) -> None:
    """Set the leaf `key` (`a.b.c`) of `data` in place to `value`, making missing sections; the sections on
    the way are copied first, so a mapping shared with the caller's input is never changed."""
    if not DOTTED_KEY.fullmatch(key):
        raise ConfigError(
            f"{source}: {strict_yaml.shorten(repr(key), 80)}: expected a dotted config key "
            "(letters, digits, _)"
        )
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{source}: {key}: {part!r} is not a section")
        else:
            child = dict(child)
        node[part] = child
        node = child
    node[parts[-1]] = value


def _parse_value(text: str, source: str, key: str) -> Any:
    if text == "":
        return ""
    try:
        return strict_yaml.load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {key}: value is not valid YAML{strict_yaml.describe(e)}") from None


def apply_overrides(data: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply `a.b=value` overrides (values parsed as YAML scalars) to a nested dict copy."""
    out = dict(data)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source}: {item!r}: expected key.path=value")
        set_dotted(out, key, _parse_value(value, source, key), source)
    return out


def deep_merge(base: dict, over: dict) -> dict:
    """`over` laid on `base`: mappings merge key by key, anything else (lists included) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_experiment_mapping(path: str | Path) -> dict:
    """An experiment file's mapping with its `base:` chain merged in and its dotted keys applied; every
    failure (a missing base, a cycle, a malformed key) is one ConfigError line naming the files."""
    return _read_layered(Path(path), [])


def _read_layered(path: Path, chain: list[Path]) -> dict:
    data = read_yaml_mapping(path, kind="experiment file")
    merged = {}
    if BASE_KEY in data:
        merged = _read_layered(_base_path(path, data[BASE_KEY], chain), [*chain, path])
    nested = {k: v for k, v in data.items() if k != BASE_KEY and not _is_dotted(k)}
    merged = deep_merge(merged, nested)
    for key in [k for k in data if _is_dotted(k)]:
        if _has_leaf(nested, key):
            raise ConfigError(f"{path}: {key}: given twice in this file (dotted and within its section)")
        set_dotted(merged, key, data[key], str(path))
    return merged


def _base_path(path: Path, base: Any, chain: list[Path]) -> Path:
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(
            f"{path}: {BASE_KEY}: expected a file name relative to this file, got "
            f"{strict_yaml.shorten(repr(base), 80)}"
        )
    target = path.parent / base
    if not target.is_file():
        raise ConfigError(f"{path}: {BASE_KEY}: no such file {target} ({base!r}, relative to {path})")
    seen = [p.resolve() for p in [*chain, path]]
    if target.resolve() in seen:
        loop = [*chain, path, target][seen.index(target.resolve()) :]
        raise ConfigError(f"{path}: {BASE_KEY}: files include each other: {' -> '.join(map(str, loop))}")
    return target


def _is_dotted(key: Any) -> bool:
    return isinstance(key, str) and "." in key


def _has_leaf(data: dict, key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
