"""docs/config.md: every config field has a description, the file is what the generator writes today,
and the generator's rows and type cells are right on hand-written cases."""

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from dibs.platform.cli.config_doc import fields, render, row, type_cell, undocumented
from dibs.platform.core.config import ExperimentConfig

pytestmark = pytest.mark.unit

CONFIG_MD = Path(__file__).resolve().parents[2] / "docs" / "config.md"


class _Inner(BaseModel):
    """An inner section."""

    n: int = Field(3, ge=1, le=8, description="a count | with a bar")
    bare: str = "x"
    blank: float = Field(0.5, description="  ")


class _Outer(BaseModel):
    mode: Literal["a", "b"] = Field("a", description="which")
    inner: _Inner = _Inner()


def test_every_config_field_has_a_description():
    assert undocumented(ExperimentConfig) == []


def test_config_md_is_current():
    # On failure: python -m dibs.platform.cli.config_doc > docs/config.md
    assert CONFIG_MD.read_text() == render(), "docs/config.md is stale: regenerate it"


def test_undocumented_names_missing_and_blank_descriptions():
    # _Inner.bare has no description, _Inner.blank only spaces; mode and n have one.
    assert undocumented(_Outer) == ["inner.bare", "inner.blank"]


def test_fields_walk_leaves_in_declaration_order():
    assert [key for key, _ in fields(_Outer)] == ["mode", "inner.n", "inner.bare", "inner.blank"]


def test_rows_by_hand():
    info = dict(fields(_Outer))
    # ge=1, le=8 become ">= 1, <= 8"; the default 3 is JSON; the bar in the description is escaped.
    assert row("inner.n", info["inner.n"]) == "| `inner.n` | int >= 1, <= 8 | `3` | a count \\| with a bar |"
    # A Literal lists its values as YAML writes them, joined by " / ".
    assert row("mode", info["mode"]) == '| `mode` | "a" / "b" | `"a"` | which |'
    # An optional int reads "int or None", its bound after it.
    limit = ExperimentConfig.model_fields["eval"].annotation.model_fields["limit"]
    assert type_cell(limit) == "int or None >= 1"


def test_render_has_one_table_per_section():
    text = render()
    sections = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    # The top-level keys, then the ten sections of ExperimentConfig in declaration order.
    assert sections == [
        "Top level",
        "task",
        "model",
        "warm_start",
        "rollout",
        "allocation",
        "train",
        "eval",
        "learner",
        "runtime",
    ]
    assert "| `train.lr` | float > 0 | `3e-05` | RL peak learning rate (AdamW) |" in text.splitlines()
