"""docs/config.md from the config models: one table per section (key, type, default, description).

The field descriptions in platform/core/config.py, config_sections.py and config_allocation.py are the one
place a key is documented; this module only renders them, so the reference cannot drift from the code (a
unit test regenerates it and compares).

    python -m dibs.platform.cli.config_doc > docs/config.md
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dibs.platform.core.config import ExperimentConfig

HEADER = """# Configuration reference

Generated from the field descriptions in `platform/core/config.py`, `config_sections.py` and
`config_allocation.py` by `python -m dibs.platform.cli.config_doc > docs/config.md`; edit those, not this
file. An experiment YAML lists only what differs from these defaults; `--set section.key=value` overrides
one key.

An experiment file may start from another: `base: common.yaml` (relative to the file that names it) reads
that file first, then lays this file's keys over it, section by section. A key may be dotted to change
one leaf and keep the rest of its section (`train.lr: 3.0e-5`). A base may have its own base; files that
include each other, a missing base file and an unknown key (checked on the merged result) are errors.
What `dibs run` records, and `dibs validate --print` shows, is the whole merged config, so a run does not
need its base files to be reproduced. `experiments/gvm/` and `experiments/paper/` are written this way.
"""

# Bounds as pydantic keeps them (metadata objects with a `ge`, `gt`, ... attribute) -> how the type
# column writes them.
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """(dotted key, field) of every leaf field, depth first in declaration order; sections are not leaves."""
    for name, info in model.model_fields.items():
        if _is_section(info.annotation):
            yield from fields(info.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def undocumented(model: type[BaseModel] = ExperimentConfig) -> list[str]:
    """Dotted keys of the leaf fields without a description (a blank one counts as none)."""
    return [key for key, info in fields(model) if not (info.description or "").strip()]


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: object) -> str:
    """`int`, `str or None`, `"a" / "b"` (a Literal's values, as YAML writes them)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " / ".join(json.dumps(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def type_cell(info: FieldInfo) -> str:
    """The type with its bounds, e.g. `int >= 1, <= 8`."""
    bounds = [
        f"{sign} {getattr(m, attr)}"
        for m in info.metadata
        for attr, sign in _BOUNDS
        if getattr(m, attr, None) is not None
    ]
    return type_name(info.annotation) + (" " + ", ".join(bounds) if bounds else "")


def _cell(text: str) -> str:
    """Table-safe text: a `|` would end the cell."""
    return text.replace("|", "\\|")


def row(key: str, info: FieldInfo) -> str:
    default = json.dumps(info.get_default(call_default_factory=True))
    return f"| `{key}` | {_cell(type_cell(info))} | `{default}` | {_cell(info.description or '')} |"


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    return lines + [
        row(key, info) for key, info in fields(model, prefix) if "." not in key.removeprefix(prefix)
    ]


def render(model: type[BaseModel] = ExperimentConfig) -> str:
    """The whole reference: the top-level keys, then one section per nested model with its docstring."""
    out = [HEADER, "## Top level", "", *_table(model, "")]
    for name, info in model.model_fields.items():
        if not _is_section(info.annotation):
            continue
        section = info.annotation
        out += ["", f"## {name}", ""]
        if section.__doc__:
            out += [inspect.cleandoc(section.__doc__), ""]
        out += _table(section, f"{name}.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
