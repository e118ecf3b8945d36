"""Every bad input through the CLI: exactly one `dibs: error:` line (capped), exit 2, no traceback, and no
file written (each test runs in an empty working directory, and `runs/` must not appear)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dibs.platform.cli.errors import ERROR_CAP, fail
from dibs.platform.cli.main import main

pytestmark = pytest.mark.unit

BILLION_LAUGHS = "".join(
    [f"a0: &a0 [{', '.join(['lol'] * 9)}]\n"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)]
    + ["name: *a8\n"]
)


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fails(capsys, cwd: Path, argv: list[str]) -> str:
    """Run `dibs ARGV`; assert the one-line contract and that nothing was written; return the line."""
    before = files(cwd)
    code = main(argv)
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert code == 2, out
    assert len(lines) == 1, out.err[:2000]
    assert lines[0].startswith("dibs: error: ") and len(lines[0]) <= ERROR_CAP
    assert "Traceback" not in out.err + out.out
    assert files(cwd) == before  # no runs/, no database, nothing changed
    return lines[0]


def experiment(cwd: Path, text: str, name: str = "exp.yaml") -> str:
    (cwd / name).write_text(text)
    return name


@pytest.mark.parametrize("command", ["validate", "run"])
def test_set_value_that_is_not_yaml(capsys, cwd, command):
    exp = experiment(cwd, "train:\n  steps: 1\n")
    line = fails(capsys, cwd, [command, exp, "--set", "name=[x"])
    assert line.startswith("dibs: error: --set: name: value is not valid YAML at line 1: expected ',' or ']'")


def test_deep_nesting_in_a_set_value(capsys, cwd):
    exp = experiment(cwd, "train:\n  steps: 1\n")
    line = fails(capsys, cwd, ["validate", exp, "--set", "name=" + "[" * 5000])
    assert line == "dibs: error: --set: name: value is not valid YAML at line 1: nested deeper than 32 levels"


def test_deep_nesting_in_a_file_is_one_line_in_a_fresh_process(tmp_path):
    (tmp_path / "exp.yaml").write_text("name: " + "[" * 5000 + "\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, "-m", "dibs.platform.cli", "validate", "exp.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "dibs: error: exp.yaml: not valid YAML at line 1: nested deeper than 32 levels"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def test_alias_bomb_is_refused_at_its_first_alias(capsys, cwd):
    exp = experiment(cwd, BILLION_LAUGHS)
    line = fails(capsys, cwd, ["validate", exp])
    assert line == (
        "dibs: error: exp.yaml: not valid YAML at line 2: aliases (*name) are not allowed here; "
        "write the value out"
    )


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e999"])
def test_non_finite_floats_are_rejected_in_files_and_set(capsys, cwd, value):
    exp = experiment(cwd, f"train:\n  lr: {value}\n")
    line = fails(capsys, cwd, ["validate", exp])
    assert line.startswith("dibs: error: exp.yaml: train.lr: Input should be a finite number (got ")
    ok = experiment(cwd, "train:\n  steps: 1\n", "ok.yaml")
    line = fails(capsys, cwd, ["run", ok, "--set", f"train.lr={value}"])
    assert line.startswith("dibs: error: ok.yaml: train.lr: Input should be a finite number")


def test_duplicate_key_names_the_key_and_both_lines(capsys, cwd):
    exp = experiment(cwd, "train:\n  steps: 5\n  lr: 1.0e-5\n  steps: 7\n")
    line = fails(capsys, cwd, ["validate", exp])
    assert line == "dibs: error: exp.yaml: not valid YAML at line 4: duplicate key 'steps' (first at line 2)"


@pytest.mark.parametrize(
    ("text", "shown"),
    [("true", "True"), ("0x10", "'0x10'"), ("010", "'010'"), ("1.0", "1.0"), ("1_000", "'1_000'")],
)
def test_int_field_takes_decimal_ints_only(capsys, cwd, text, shown):
    exp = experiment(cwd, f"train:\n  steps: {text}\n")
    line = fails(capsys, cwd, ["validate", exp])
    assert line == f"dibs: error: exp.yaml: train.steps: Input should be a valid integer (got {shown})"


def test_bool_where_a_float_goes(capsys, cwd):
    exp = experiment(cwd, "train:\n  steps: 1\n")
    line = fails(capsys, cwd, ["validate", exp, "--set", "train.lr=yes"])
    assert line == "dibs: error: exp.yaml: train.lr: Input should be a valid number (got 'yes')"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "null\n", "~\n"])
def test_empty_experiment_file(capsys, cwd, text):
    exp = experiment(cwd, text)
    line = fails(capsys, cwd, ["run", exp])
    assert line == "dibs: error: exp.yaml: empty experiment file: expected a mapping of config keys"


@pytest.mark.parametrize(("text", "kind"), [("- 1\n- 2\n", "list"), ("42\n", "int"), ("hello\n", "str")])
def test_experiment_file_that_is_not_a_mapping(capsys, cwd, text, kind):
    exp = experiment(cwd, text)
    line = fails(capsys, cwd, ["validate", exp])
    assert line == f"dibs: error: exp.yaml: <root>: expected a mapping of config keys, got {kind}"


@pytest.mark.parametrize(
    ("seed", "problem"),
    [
        (10**23, "less than or equal to 2147483647"),
        (2**31, "less than or equal to 2147483647"),
        (-1, "greater than or equal to 0"),
    ],
)
def test_seed_must_fit_the_store_and_the_rngs(capsys, cwd, seed, problem):
    exp = experiment(cwd, f"seed: {seed}\ntrain:\n  steps: 1\n")
    for command in ("validate", "run"):
        line = fails(capsys, cwd, [command, exp])
        assert line.startswith(f"dibs: error: exp.yaml: seed: Input should be {problem} (got ")


def sweep(cwd: Path, space: str) -> str:
    experiment(cwd, "name: b\ntrain:\n  steps: 2\n", "base.yaml")
    return experiment(cwd, f"base: base.yaml\nspace:\n{space}\n", "sweep.yaml")


@pytest.mark.parametrize("bounds", ["[0.1, .inf]", "[-.inf, 0.5]", "[.nan, 0.5]", "[0.1, 1e999]"])
def test_sweep_bounds_must_be_finite(capsys, cwd, bounds):
    path = sweep(cwd, f"  allocation.alpha: {{uniform: {bounds}}}")
    line = fails(capsys, cwd, ["sweep", path])
    assert line.startswith("dibs: error: sweep.yaml: space.allocation.alpha.uniform.")
    assert "Input should be a finite number" in line


def test_sweep_int_bounds_are_ordered_ints(capsys, cwd):
    line = fails(capsys, cwd, ["sweep", sweep(cwd, "  allocation.n_probe: {int: [4, 2]}")])
    assert line.endswith("expected [lo, hi] with lo < hi, got [4, 2]")
    line = fails(capsys, cwd, ["sweep", sweep(cwd, "  allocation.n_probe: {int: [true, 4]}")])
    assert "space.allocation.n_probe.int.0: Input should be a valid integer (got True)" in line


@pytest.mark.parametrize("key", ["train.lr=1", "train.lr,train.steps", "train. lr", "train..lr", "1train"])
def test_sweep_keys_are_dotted_config_paths(capsys, cwd, key):
    path = sweep(cwd, f"  '{key}': {{uniform: [0.1, 0.2]}}")
    line = fails(capsys, cwd, ["sweep", path])
    assert line.startswith("dibs: error: sweep.yaml: space: Value error, ")
    assert f"{key!r}: expected a dotted config key" in line


def test_set_keys_are_dotted_config_paths(capsys, cwd):
    exp = experiment(cwd, "train:\n  steps: 1\n")
    line = fails(capsys, cwd, ["validate", exp, "--set", "train.l r=1"])
    assert line == "dibs: error: --set: 'train.l r': expected a dotted config key (letters, digits, _)"


def spec_file(cwd: Path, text: str, sweep_id: str = "sweep-x") -> str:
    d = cwd / "runs" / "sweeps" / sweep_id
    d.mkdir(parents=True)
    (d / "sweep.json").write_text(text)
    return sweep_id


def test_corrupt_sweep_json_on_resume(capsys, cwd):
    line = fails(capsys, cwd, ["sweep", "--resume", spec_file(cwd, '{"sweep_id": "sweep-x", ')])
    assert line == (
        "dibs: error: runs/sweeps/sweep-x/sweep.json: not valid JSON at line 1; the sweep cannot be "
        "resumed from it"
    )


def test_sweep_json_missing_a_field_on_resume(capsys, cwd):
    line = fails(capsys, cwd, ["sweep", "--resume", spec_file(cwd, json.dumps({"sweep_id": "sweep-x"}))])
    assert line.startswith("dibs: error: runs/sweeps/sweep-x/sweep.json: name: Field required")


def test_resume_takes_a_sweep_id_not_a_path(capsys, cwd):
    line = fails(capsys, cwd, ["sweep", "--resume", "../elsewhere"])
    assert line == "dibs: error: --resume '../elsewhere': not a sweep id (letters, digits, '.', '_', '-')"


@pytest.mark.parametrize("target", ["nan", "inf", "-inf", "1e999", "abc"])
def test_export_target_must_be_finite(capsys, cwd, target):
    line = fails(capsys, cwd, ["export", "--table", "targets", f"--target={target}"])
    assert line.startswith("dibs: error: dibs export: argument --target: expected a")
    assert repr(target) in line


def test_eval_flags_are_checked_before_anything_loads(capsys, cwd):
    line = fails(capsys, cwd, ["eval", "ckpt", "--temperature", "inf"])
    assert line == "dibs: error: dibs eval: argument --temperature: expected a finite number, got 'inf'"
    line = fails(capsys, cwd, ["eval", "ckpt", "--seed", str(10**23)])
    assert line == f"dibs: error: dibs eval: argument --seed: must be in 0..2147483647, got {10**23}"


def test_unknown_flag_is_one_line(capsys, cwd):
    line = fails(capsys, cwd, ["validate", "x.yaml", "--nope"])
    assert line == "dibs: error: dibs: unrecognized arguments: --nope"


def test_fail_caps_and_flattens_long_messages(capsys):
    assert fail("x" * 10_000 + "\nsecond line") == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and len(line.rstrip("\n")) == ERROR_CAP and line.rstrip().endswith("...")


def test_oversized_file_is_refused_unread(capsys, cwd):
    exp = experiment(cwd, "# padding\n" * 120_000)
    line = fails(capsys, cwd, ["validate", exp])
    assert line == "dibs: error: exp.yaml: 1200000 bytes; config files are at most 1048576"


def test_python_tags_are_refused(capsys, cwd):
    exp = experiment(cwd, "train:\n  steps: 1\n")
    line = fails(capsys, cwd, ["validate", exp, "--set", "name=!!python/object/apply:os.system [echo hi]"])
    assert line.startswith(
        "dibs: error: --set: name: value is not valid YAML at line 1: could not determine a "
        "constructor for the tag"
    )


def test_best_yaml_keeps_floats_written_without_a_dot(tmp_path):
    from dibs.platform.core.config import load_config
    from dibs.platform.sweeps.sweep import write_best_yaml

    base = tmp_path / "base.yaml"
    base.write_text("train:\n  lr: 1e-5\n  steps: 2\n")
    out = write_best_yaml(str(base), {"allocation.alpha": 0.003}, tmp_path / "best.yaml")
    cfg = load_config(out)
    assert (cfg.train.lr, cfg.train.steps, cfg.allocation.alpha) == (1e-5, 2, 0.003)


def test_runtime_env_file_is_read_strictly(tmp_path):
    from dibs.platform.jobs.job_checks import JobsError, read_runtime_env

    env = tmp_path / "env.yaml"
    env.write_text("env_vars: " + "[" * 5000 + "\n")
    with pytest.raises(JobsError) as e:
        read_runtime_env(str(env))
    assert str(e.value) == f"--runtime-env {env}: cannot read it (nested deeper than 32 levels)"


def test_sweep_repeats_keep_seeds_in_range(capsys, cwd):
    experiment(cwd, "name: b\nseed: 2147483646\ntrain:\n  steps: 2\n", "base.yaml")
    path = experiment(
        cwd, "base: base.yaml\nrepeats: 3\nspace:\n  allocation.alpha: {uniform: [0.1, 0.2]}\n", "sweep.yaml"
    )
    line = fails(capsys, cwd, ["sweep", path])
    assert line == "dibs: error: sweep.yaml: repeats: 3 seeds from the base's 2147483646 pass 2147483647"


@pytest.mark.parametrize("name", ["1e3", "42", "true", "a: b"])
def test_run_name_is_taken_as_text(name, cwd, monkeypatch):
    """`--name` is a string whatever it looks like: the strict reader would read `1e3` as a float."""
    from dibs.platform.cli import main as cli

    seen = {}
    monkeypatch.setattr(cli, "_execute", lambda cfg, *a, **k: seen.setdefault("name", cfg.name) and 0)
    smoke = Path(__file__).resolve().parents[2] / "experiments" / "smoke.yaml"
    assert main(["run", str(smoke), "--name", name, "--db", f"sqlite:///{cwd}/d.db"]) == 0
    assert seen["name"] == name
