"""The YAML reader of experiment files, sweep files and `--set` values: safe, and strict where PyYAML is lax.

- A key given twice in one mapping is an error naming the key and both lines (PyYAML keeps the last).
- Aliases (`*name`) are refused: config files do not need them, and nested aliases expand exponentially
  (the "billion laughs" input), so refusing them bounds the loaded size by the file's size.
- Nesting deeper than MAX_DEPTH is an error before Python's recursion limit is reached.
- Scalars resolve as in YAML 1.2's core schema: ints are decimal only (`0x10`, `010`, `1_000` and
  sexagesimal `1:20` stay strings, so an int field rejects them), floats may omit the dot (`1e-5` is a
  float, not a string), only true/false are booleans (`yes`/`on` stay strings), and dates stay strings.
  `.inf` / `1e999` load as floats so that the config models can reject them by name.
Every problem is a YAMLError with a mark, so callers report it as one line with its line number.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent

MAX_DEPTH = 32
_TAG = "tag:yaml.org,2002:"
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)
                        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


def _core_resolvers() -> dict:
    """SafeLoader's implicit resolvers with YAML 1.1's int, float, bool and timestamp forms replaced by the
    narrower YAML 1.2 core ones (null and merge keys are kept)."""
    replaced = {_TAG + t for t in ("int", "float", "bool", "timestamp")}
    out = {
        ch: [(tag, rx) for tag, rx in rs if tag not in replaced]
        for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for tag, rx, first in (
        (_TAG + "bool", _BOOL, "tTfF"),
        (_TAG + "int", _INT, "-+0123456789"),
        (_TAG + "float", _FLOAT, "-+0123456789."),
    ):
        for ch in first:
            out.setdefault(ch, []).append((tag, rx))
    return out


class StrictLoader(yaml.SafeLoader):
    yaml_implicit_resolvers = _core_resolvers()

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            raise ComposerError(
                None,
                None,
                "aliases (*name) are not allowed here; write the value out",
                self.peek_event().start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        first_line: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == _TAG + "merge" or not isinstance(key_node, yaml.ScalarNode):
                continue  # merged keys may override; complex keys are rejected by SafeLoader itself
            key = self.construct_scalar(key_node)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise ConstructorError(
                    None,
                    None,
                    f"duplicate key {shorten(key)!r} (first at line {first_line[key]})",
                    key_node.start_mark,
                )
            first_line[key] = line
        return super().construct_mapping(node, deep)


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters and marked `...`: a value quoted in an error, never all of it."""
    return text if len(text) <= limit else text[:limit] + "..."


def load(text: str) -> Any:
    """Parse one YAML document with StrictLoader; raises yaml.YAMLError (with a mark where known)."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def describe(err: yaml.YAMLError) -> str:
    """`at line N: problem` for a YAMLError, short and on one line (never the document itself)."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    problem = getattr(err, "problem", None) or str(err)
    return f"{where}: {shorten(' '.join(str(problem).split()), 120)}"
