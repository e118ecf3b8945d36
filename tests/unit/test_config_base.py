"""Experiment files layered on a `base:` file (platform/core/config_yaml.py): deep merge, dotted keys, chains,
and one-line errors for a cycle, a missing base and an unknown key (by its dotted path, after merging)."""

import json

import pytest
import yaml

from dibs.platform.cli.main import main
from dibs.platform.core.config import ConfigError, apply_overrides, load_config
from dibs.platform.core.config_yaml import read_experiment_mapping, set_dotted

pytestmark = pytest.mark.unit


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_of(path) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "\n" not in str(e.value)
    return str(e.value)


BASE = (
    "name: common\nseed: 3\ntrain:\n  steps: 40\n  lr: 1.0e-4\nallocation:\n  allocator: gvm\n  n_probe: 4\n"
)


def test_this_files_keys_are_deep_merged_over_the_base(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    exp = write(tmp_path / "exp.yaml", "base: base.yaml\nname: mine\ntrain:\n  steps: 7\n")
    cfg = load_config(exp)
    # steps from this file; lr, seed and the allocation section from the base; the rest defaults
    assert (cfg.name, cfg.seed, cfg.train.steps, cfg.train.lr) == ("mine", 3, 7, 1e-4)
    assert (cfg.allocation.allocator, cfg.allocation.n_probe, cfg.allocation.n_per_prompt) == ("gvm", 4, 8)
    assert read_experiment_mapping(exp) == {
        "name": "mine",
        "seed": 3,
        "train": {"steps": 7, "lr": 1e-4},
        "allocation": {"allocator": "gvm", "n_probe": 4},
    }


def test_a_dotted_key_overrides_one_leaf(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    exp = write(tmp_path / "exp.yaml", "base: base.yaml\ntrain.lr: 3.0e-5\neval.k: 2\n")
    cfg = load_config(exp)
    assert (cfg.train.lr, cfg.train.steps, cfg.eval.k) == (3e-5, 40, 2)  # lr only; steps kept
    assert isinstance(cfg.train.lr, float)  # 3.0e-5 read as the file's YAML scalar, not a string


def test_dotted_keys_work_without_a_base(tmp_path):
    cfg = load_config(write(tmp_path / "exp.yaml", "train.steps: 5\nallocation.allocator: dapo\n"))
    assert (cfg.train.steps, cfg.allocation.allocator) == (5, "dapo")


def test_a_leaf_given_twice_in_one_file_is_refused(tmp_path):
    exp = write(tmp_path / "exp.yaml", "train:\n  lr: 1.0e-4\ntrain.lr: 2.0e-4\n")
    assert error_of(exp) == f"{exp}: train.lr: given twice in this file (dotted and within its section)"


def test_chains_apply_in_order_and_paths_are_relative_to_each_file(tmp_path):
    write(tmp_path / "a" / "root.yaml", BASE)
    write(tmp_path / "a" / "b" / "mid.yaml", "base: ../root.yaml\ntrain.steps: 20\nallocation.n_probe: 2\n")
    exp = write(tmp_path / "c" / "leaf.yaml", "base: ../a/b/mid.yaml\nallocation:\n  n_probe: 6\n")
    cfg = load_config(exp)
    assert (cfg.name, cfg.train.steps, cfg.train.lr) == ("common", 20, 1e-4)
    assert (cfg.allocation.allocator, cfg.allocation.n_probe) == ("gvm", 6)


def test_a_cycle_fails_naming_the_chain(tmp_path):
    a = write(tmp_path / "a.yaml", "base: b.yaml\nseed: 1\n")
    b = write(tmp_path / "b.yaml", "base: c.yaml\n")
    c = write(tmp_path / "c.yaml", "base: b.yaml\n")
    assert error_of(a) == f"{c}: base: files include each other: {b} -> {c} -> {b}"
    own = write(tmp_path / "self.yaml", "base: self.yaml\n")
    assert error_of(own) == f"{own}: base: files include each other: {own} -> {own}"


def test_a_missing_base_names_the_path_and_the_including_file(tmp_path):
    exp = write(tmp_path / "exp.yaml", "base: nope/common.yaml\n")
    assert error_of(exp) == (
        f"{exp}: base: no such file {tmp_path / 'nope' / 'common.yaml'} "
        f"('nope/common.yaml', relative to {exp})"
    )


@pytest.mark.parametrize("value", ["3", "[a.yaml]", "''", "null"])
def test_base_must_be_a_file_name(tmp_path, value):
    exp = write(tmp_path / "exp.yaml", f"base: {value}\n")
    assert error_of(exp).startswith(f"{exp}: base: expected a file name relative to this file, got ")


def test_an_unknown_key_fails_with_its_dotted_path_after_merging(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    exp = write(tmp_path / "exp.yaml", "base: base.yaml\ntrain.lrr: 3.0e-5\n")
    assert error_of(exp) == f"{exp}: train.lrr: unknown key"
    exp = write(tmp_path / "exp.yaml", "base: base.yaml\nallocation:\n  n_prob: 3\n")
    assert error_of(exp) == f"{exp}: allocation.n_prob: unknown key"
    exp = write(tmp_path / "exp.yaml", "base: base.yaml\nseed.x: 1\n")  # seed is a leaf, not a section
    assert error_of(exp) == f"{exp}: seed.x: 'seed' is not a section"
    exp = write(tmp_path / "exp.yaml", "base: base.yaml\ntrain..lr: 1\n")
    assert error_of(exp) == f"{exp}: 'train..lr': expected a dotted config key (letters, digits, _)"


def test_an_error_in_the_base_names_the_base(tmp_path):
    base = write(tmp_path / "base.yaml", "train: [1, 2\n")
    exp = write(tmp_path / "exp.yaml", "base: base.yaml\n")
    assert error_of(exp).startswith(f"{base}: not valid YAML at line 2")


def test_set_overrides_apply_after_the_files(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    exp = write(tmp_path / "exp.yaml", "base: base.yaml\ntrain.lr: 3.0e-5\n")
    cfg = load_config(exp, ["train.lr=5e-5", "train.steps=9"])
    assert (cfg.train.lr, cfg.train.steps, cfg.seed) == (5e-5, 9, 3)


def test_set_dotted_never_changes_the_callers_mapping():
    data = {"train": {"lr": 1.0}, "seed": 1}
    out = apply_overrides(data, ["train.lr=2.0", "eval.k=3"])
    assert data == {"train": {"lr": 1.0}, "seed": 1}
    assert out == {"train": {"lr": 2.0}, "seed": 1, "eval": {"k": 3}}
    set_dotted(out, "train.steps", 4, "here")
    assert out["train"] == {"lr": 2.0, "steps": 4}


def test_validate_prints_the_merged_config(tmp_path, capsys):
    write(tmp_path / "base.yaml", BASE)
    exp = write(tmp_path / "exp.yaml", "base: base.yaml\ntrain.steps: 7\n")
    assert main(["validate", str(exp), "--print"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{exp}: ok (grpo, gvm, 7 steps)\n")
    printed = json.loads(out.split("\n", 1)[1])
    assert printed == json.loads(json.dumps(load_config(exp).model_dump(mode="json")))
    assert "base" not in printed and printed["train"]["lr"] == 1e-4 and printed["name"] == "common"


def test_run_records_the_merged_config(tmp_path, monkeypatch):
    """The stored config is the whole merged one: the run needs no base file to be reproduced."""
    from dibs.platform.cli import main as cli
    from dibs.platform.store import ResultsStore

    write(tmp_path / "base.yaml", BASE + "runtime:\n  executor: inline\n")
    exp = write(tmp_path / "exp.yaml", "base: base.yaml\ntrain.steps: 0\n")
    monkeypatch.setattr(cli, "_execute", lambda cfg, store, run_id, owner, resume_from: 0)
    url = f"sqlite:///{tmp_path / 'dibs.db'}"
    assert main(["run", str(exp), "--db", url]) == 0
    with ResultsStore(url) as store:
        (run,) = store.list_runs()
        stored = store.get_run(run["id"])["config"]
    assert stored == load_config(exp).model_dump(mode="json")
    assert stored["seed"] == 3 and stored["train"]["lr"] == 1e-4 and stored["allocation"]["n_probe"] == 4


def test_a_sweep_over_a_layered_experiment_writes_a_whole_best_yaml(tmp_path):
    """A sweep's base may itself have a base; its best.yaml has everything merged in, so it runs from
    a folder without the base files."""
    from dibs.platform.sweeps.sweep import write_best_yaml
    from dibs.platform.sweeps.sweep_config import load_sweep

    write(tmp_path / "exp" / "common.yaml", BASE)
    write(tmp_path / "exp" / "gvm.yaml", "base: common.yaml\ntrain.steps: 6\n")
    sweep = write(
        tmp_path / "sweeps" / "s.yaml",
        "base: ../exp/gvm.yaml\nfixed: {eval.k: 1}\n"
        "space: {allocation.alpha: {loguniform: [1.0e-4, 1.0e-2]}}\n",
    )
    _, base, base_path = load_sweep(sweep)
    assert (base.train.steps, base.eval.k, base.seed, base.allocation.n_probe) == (6, 1, 3, 4)
    (tmp_path / "elsewhere").mkdir()
    out = write_best_yaml(
        str(base_path), {"eval.k": 1, "allocation.alpha": 0.002}, tmp_path / "elsewhere" / "best.yaml"
    )
    assert "base" not in yaml.safe_load(out.read_text())
    cfg = load_config(out)
    assert (cfg.train.steps, cfg.train.lr, cfg.seed) == (6, 1e-4, 3)
    assert (cfg.allocation.alpha, cfg.eval.k) == (0.002, 1)
