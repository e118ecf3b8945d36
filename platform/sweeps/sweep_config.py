"""The sweep spec (Ray Tune + Optuna): one YAML naming a base experiment, a search space over its dotted
config keys, a search algorithm, an optional ASHA scheduler and repeats. Validated like experiments: every
failure is one `ConfigError` line naming the file and the dotted key.

    base: ../smoke.yaml                 # relative to the sweep file
    fixed: {train.steps: 60}            # dotted overrides of the base, the same for every trial
    space:
      allocation.alpha: {loguniform: [1.0e-4, 1.0e-2]}
      allocation.n_probe: {int: [2, 8]}
      algorithm: {choice: [raftpp, grpo]}
    search: {algorithm: optuna, num_samples: 4, max_concurrent: 1, seed: 0,
             metric: eval/accuracy, mode: max}        # or metric: [eval/accuracy, rollouts_consumed]
    scheduler: {asha: {grace_period: 256, reduction_factor: 2}}   # or: none
    repeats: 1

Every bound of the space is checked against the base experiment (both ends of a range, every choice):
a sweep that would fail in its third trial fails here instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dibs.platform.core import strict_yaml
from dibs.platform.core.config import (
    DOTTED_KEY,
    SEED_MAX,
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    format_error,
    load_config,
    read_yaml_mapping,
    validate_dict,
)
from dibs.platform.tasks.registry import check_task_kind

# What a trial reports at each evaluation besides the eval/ metrics: the budget spent so far (ASHA's
# time attribute, so trials are compared at equal rollouts) and the step.
ROLLOUTS = "rollouts_consumed"
TOKENS = "tokens_generated"
STEP = "step"


class _Strict(BaseModel):
    # As the experiment's sections: no bools or strings for numbers, no inf / nan bounds (Tune fails on them).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


_PAIR = {"min_length": 2, "max_length": 2, "description": "[lo, hi], inclusive"}


class Dimension(_Strict):
    """One axis: exactly one of uniform / loguniform / int (inclusive bounds) / choice."""

    uniform: list[float] | None = Field(None, **_PAIR)  # lists, as YAML and the stored spec's JSON give them
    loguniform: list[float] | None = Field(None, **_PAIR)
    int_: list[int] | None = Field(None, alias="int", **_PAIR)
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> Dimension:
        given = [k for k in ("uniform", "loguniform", "int_", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform, loguniform, int, choice")
        lo_hi = self.uniform or self.loguniform or self.int_
        if lo_hi is not None and not lo_hi[0] < lo_hi[1]:
            raise ValueError(f"expected [lo, hi] with lo < hi, got {list(lo_hi)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be > 0")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        return self

    @property
    def kind(self) -> str:
        return next(
            k
            for k in ("uniform", "loguniform", "int", "choice")
            if getattr(self, "int_" if k == "int" else k) is not None
        )

    def extremes(self) -> list[Any]:
        """The values that bound this axis: both ends of a range, every choice."""
        return (
            list(self.choice)
            if self.choice is not None
            else list(self.uniform or self.loguniform or self.int_)
        )


class SearchConfig(_Strict):
    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    num_samples: int = Field(8, ge=1, description="trials (grid: repeats of the whole grid)")
    max_concurrent: int = Field(
        1, ge=1, description="trials at once, at most; fewer if the cluster's CPUs cannot hold that many"
    )
    seed: int = Field(0, ge=0, le=SEED_MAX)
    metric: str | list[str] = "eval/accuracy"
    mode: Literal["max", "min"] | list[Literal["max", "min"]] = "max"

    @model_validator(mode="after")
    def _objectives(self) -> SearchConfig:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        modes = self.mode if isinstance(self.mode, list) else [self.mode]
        if len(metrics) != len(modes):
            raise ValueError(f"{len(metrics)} metrics but {len(modes)} modes")
        if len(metrics) > 1 and self.algorithm != "optuna":
            raise ValueError("several objectives need algorithm: optuna")
        for m in metrics:
            if not (m.startswith("eval/") or m in (ROLLOUTS, TOKENS)):
                raise ValueError(f"metric {m!r}: trials report eval/ metrics, {ROLLOUTS} and {TOKENS}")
        return self

    @property
    def objectives(self) -> list[tuple[str, str]]:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        modes = self.mode if isinstance(self.mode, list) else [self.mode]
        return list(zip(metrics, modes, strict=True))


class AshaConfig(_Strict):
    grace_period: int = Field(1, ge=1, description="rollouts consumed before a trial can be stopped")
    reduction_factor: float = Field(2, gt=1)
    max_t: int | None = Field(
        None, ge=1, description="rollouts at which a trial ends; None: 10x the base experiment's whole budget"
    )


class SchedulerConfig(_Strict):
    asha: AshaConfig


class SweepConfig(_Strict):
    name: str = "sweep"
    base: str
    fixed: dict[str, Any] = Field(
        default_factory=dict, description="dotted overrides of the base for every trial"
    )
    space: dict[str, Dimension]
    search: SearchConfig = SearchConfig()
    scheduler: SchedulerConfig | None = None
    repeats: int = Field(1, ge=1, description="seeds per configuration (seed, seed+1, ...)")

    @field_validator("scheduler", mode="before")
    @classmethod
    def _none(cls, v):
        return None if v in ("none", None) else v

    @field_validator("space", "fixed")
    @classmethod
    def _dotted(cls, v: dict) -> dict:
        for key in v:
            if not DOTTED_KEY.fullmatch(key):
                raise ValueError(
                    f"{strict_yaml.shorten(key)!r}: expected a dotted config key "
                    "(letters, digits, _ between dots)"
                )
        return v

    @model_validator(mode="after")
    def _fits(self) -> SweepConfig:
        if not self.space:
            raise ValueError("space: name at least one dotted config key to search")
        if set(self.fixed) & set(self.space):
            raise ValueError(f"keys both fixed and searched: {sorted(set(self.fixed) & set(self.space))}")
        if self.search.algorithm == "grid" and any(d.choice is None for d in self.space.values()):
            raise ValueError("grid search needs every dimension to be a choice")
        if self.scheduler is not None and len(self.search.objectives) > 1:
            raise ValueError("scheduler: asha stops trials on one metric; use none with several objectives")
        return self


def load_sweep(path: str | Path) -> tuple[SweepConfig, ExperimentConfig, Path]:
    """Read and check a sweep YAML -> (sweep, base experiment, base path)."""
    path = Path(path)
    data = read_yaml_mapping(path, "a mapping with base, space, search", kind="sweep file")
    try:
        sweep = SweepConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_error(str(path), e)) from None
    base_path = (path.parent / sweep.base).resolve()
    if not base_path.is_file():
        raise ConfigError(
            f"{path}: base: no such experiment file {sweep.base!r} (relative to the sweep file)"
        )
    base = load_config(base_path, [f"{k}={yaml_scalar(v)}" for k, v in sweep.fixed.items()])
    check_task_kind(base.task, str(base_path))
    if base.seed + sweep.repeats - 1 > SEED_MAX:  # repeats run seeds seed, seed+1, ...: the last must fit too
        raise ConfigError(
            f"{path}: repeats: {sweep.repeats} seeds from the base's {base.seed} pass {SEED_MAX}"
        )
    check_space(sweep, base, str(path))
    return sweep, base, base_path


def check_space(sweep: SweepConfig, base: ExperimentConfig, source: str) -> None:
    """Every extreme of every axis, applied to the base experiment, must validate."""
    data = base.model_dump(mode="json")
    for key, dim in sweep.space.items():
        for value in dim.extremes():
            try:
                trial_config(data, {key: value}, seed=base.seed)
            except ConfigError as e:
                detail = str(e).split(": ", 1)[-1]
                raise ConfigError(
                    f"{source}: space.{key}: value {value!r} does not fit the base experiment ({detail})"
                ) from None


def trial_config(base: dict, params: dict[str, Any], *, seed: int) -> ExperimentConfig:
    """The base experiment with a trial's parameters (dotted keys) and seed applied."""
    overrides = [f"{k}={yaml_scalar(v)}" for k, v in params.items()] + [f"seed={seed}"]
    return validate_dict(apply_overrides(base, overrides, source="sweep"), "sweep trial")


def yaml_scalar(value: Any) -> str:
    """A value as `--set` parses it back (a YAML scalar, strict_yaml.py): PyYAML writes floats at full
    precision, and quotes strings that would read back as another type."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
