"""The experiment spec: defaults, overrides, and one-line errors naming file, dotted key and problem."""

import pydantic
import pytest

from dibs.platform.core.config import ConfigError, ExperimentConfig, apply_overrides, load_config

pytestmark = pytest.mark.unit


def write(tmp_path, text: str):
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def error_of(path, overrides=None) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_defaults_fill_what_the_yaml_omits(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\ntrain:\n  lr: 1.0e-5\n"))
    assert cfg.name == "x" and cfg.train.lr == 1e-5
    assert cfg.train.prompts_per_step == ExperimentConfig().train.prompts_per_step
    assert cfg.eval.k == 8 and cfg.eval.temperature == 1.0  # the paper's mean@k defaults


def test_config_is_frozen(tmp_path):
    cfg = load_config(write(tmp_path, "{}"))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_unknown_key_names_dotted_path(tmp_path):
    p = write(tmp_path, "train:\n  lrr: 1\n")
    assert error_of(p) == f"{p}: train.lrr: unknown key"


def test_wrong_type_and_range(tmp_path):
    p = write(tmp_path, "train:\n  steps: many\n")
    assert error_of(p).startswith(f"{p}: train.steps: Input should be a valid integer")
    assert "'many'" in error_of(p)
    p = write(tmp_path, "train:\n  lr: -1\n")
    assert error_of(p) == f"{p}: train.lr: Input should be greater than 0 (got -1)"
    p = write(tmp_path, "algorithm: ppo\n")
    assert "algorithm" in error_of(p) and "'ppo'" in error_of(p)


def test_cross_field_check(tmp_path):
    p = write(tmp_path, "task:\n  min_terms: 5\n  max_terms: 3\n")
    assert "task: " in error_of(p) and "min_terms (5) > max_terms (3)" in error_of(p)


def test_missing_file_and_not_yaml(tmp_path):
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such file"
    p = write(tmp_path, "train: [1, 2\n")
    assert error_of(p).startswith(f"{p}: not valid YAML at line")
    p = write(tmp_path, "- 1\n- 2\n")
    assert error_of(p) == f"{p}: <root>: expected a mapping of config keys, got list"


def test_overrides_parse_yaml_scalars_and_validate(tmp_path):
    p = write(tmp_path, "train:\n  lr: 1.0e-5\n")
    cfg = load_config(p, ["train.lr=2e-5", "train.drop_equal_groups=true", "name=abc"])
    assert cfg.train.lr == 2e-5 and cfg.train.drop_equal_groups is True and cfg.name == "abc"
    assert error_of(p, ["train.nope=1"]) == f"{p}: train.nope: unknown key"
    assert "expected key.path=value" in error_of(p, ["train.lr"])


def test_apply_overrides_does_not_mutate_input():
    data = {"train": {"lr": 1}}
    out = apply_overrides(data, ["train.lr=2"])
    assert data == {"train": {"lr": 1}} and out == {"train": {"lr": 2}}


def test_shipped_experiments_validate():
    for name in ("demo", "smoke"):
        load_config(f"experiments/{name}.yaml")
