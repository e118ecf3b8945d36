"""The experiment spec: one typed, frozen config tree loaded from YAML.

Every field is documented once, with its default: the root's here, the sections' in config_sections.py
(re-exported here, where callers have always imported them from). Experiment YAMLs list only what differs.
The tree is at most three levels deep (root -> section -> field). Unknown keys fail with their dotted path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from dibs.platform.core import strict_yaml
from dibs.platform.core.config_allocation import AllocationConfig
from dibs.platform.core.config_sections import (
    SEED_MAX,
    EvalConfig,
    LearnerConfig,
    ModelConfig,
    RolloutConfig,
    RuntimeConfig,
    TaskConfig,
    TrainConfig,
    WarmStartConfig,
    _Section,
)

# The YAML side (reading, `base:` files, dotted overrides) lives in config_yaml.py; its names are
# re-exported here, where callers have always imported them from.
from dibs.platform.core.config_yaml import (  # noqa: F401
    DOTTED_KEY,
    MAX_FILE_BYTES,
    ConfigError,
    apply_overrides,
    read_experiment_mapping,
    read_yaml_mapping,
)


class ExperimentConfig(_Section):
    name: str = Field("experiment", description="the run's name in the store and the dashboard")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seeds every random stream of the run; < 2^31")
    algorithm: Literal["raft", "raftpp", "grpo"] = Field(
        "grpo", description="raft | raftpp | grpo: the update (docs/method.md §5)"
    )
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    warm_start: WarmStartConfig = WarmStartConfig()
    rollout: RolloutConfig = RolloutConfig()
    allocation: AllocationConfig = AllocationConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    learner: LearnerConfig = LearnerConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _distributed(self) -> ExperimentConfig:
        if self.distributed and self.runtime.executor != "ray":
            raise ValueError(
                "learner.num_workers > 1 or learner.backend: deepspeed needs runtime.executor: ray"
            )
        return self

    @model_validator(mode="after")
    def _math(self) -> ExperimentConfig:
        if self.task.kind == "math" and self.warm_start.steps:
            raise ValueError(
                f"task.kind: math trains the given model directly (as the paper): warm_start.steps "
                f"must be 0 (got {self.warm_start.steps})"
            )
        return self

    @property
    def distributed(self) -> bool:
        """Runs through Ray Train (learner workers with rollout actors) rather than one process."""
        return self.learner.num_workers > 1 or self.learner.backend == "deepspeed"


def missing_paths(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """(dotted key, path) of each configured local path that does not exist on this machine. `dibs validate`
    leaves paths alone, so recipes validate anywhere; `dibs run` checks them first (docs/conventions.md)."""
    paths = [
        ("model.path", cfg.model.path),
        ("task.train_file", cfg.task.train_file),
        ("eval.data_dir", cfg.eval.data_dir),
    ]
    return [(key, p) for key, p in paths if p is not None and not Path(p).exists()]


def format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in first and not isinstance(first["input"], dict):  # the value, never a whole document
        msg = f"{msg} (got {strict_yaml.shorten(repr(first['input']), 80)})"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key}: {msg}{more}"


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment YAML (with its `base:` chain, config_yaml.py), override and validate it; every
    failure is a one-line ConfigError. The result is the whole merged config."""
    data = apply_overrides(read_experiment_mapping(path), overrides or [])
    return validate_dict(data, str(path))


def validate_dict(data: dict, source: str = "<config>") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_error(source, e)) from None


def config_to_dict(cfg: ExperimentConfig) -> dict:
    return cfg.model_dump(mode="json")
