"""The sweep spec: validation with the experiment's error style, the space as Tune domains,
trial configs, Pareto selection and the ready-to-run best YAML."""

import textwrap

import pytest
import yaml

from dibs.platform.core.config import ConfigError, load_config
from dibs.platform.sweeps.sweep import (
    best_row,
    budget_estimate,
    max_concurrent,
    pareto_front,
    trial_cpus,
    tune_space,
    write_best_yaml,
)
from dibs.platform.sweeps.sweep_config import load_sweep, trial_config, yaml_scalar

pytestmark = pytest.mark.unit


def sweep_file(tmp_path, body: str, name="s.yaml"):
    (tmp_path / "base.yaml").write_text(
        "name: b\nseed: 3\nallocation:\n  allocator: gvm\ntrain:\n  steps: 5\n"
    )
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


GOOD = """
base: base.yaml
fixed: {train.steps: 2}
space:
  allocation.alpha: {loguniform: [1.0e-4, 1.0e-1]}
  allocation.n_probe: {int: [2, 4]}
  algorithm: {choice: [raftpp, grpo]}
  allocation.beta: {uniform: [1.0, 3.0]}
search: {algorithm: optuna, num_samples: 4, metric: eval/accuracy, mode: max}
scheduler: {asha: {grace_period: 10}}
repeats: 2
"""


def test_a_good_sweep_loads_with_its_fixed_keys_applied_to_the_base(tmp_path):
    sweep, base, base_path = load_sweep(sweep_file(tmp_path, GOOD))
    assert base.train.steps == 2 and base.seed == 3 and base_path == tmp_path / "base.yaml"
    assert sweep.repeats == 2 and sweep.scheduler.asha.grace_period == 10
    assert [d.kind for d in sweep.space.values()] == ["loguniform", "int", "choice", "uniform"]


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "base: base.yaml\nspace: {allocation.alpah: {uniform: [0.1, 0.2]}}\n",
            (
                "space.allocation.alpah: value 0.1 does not fit the base experiment "
                "(allocation.alpah: unknown key)"
            ),
        ),
        (
            "base: base.yaml\nspace: {allocation.alpha: {uniform: [-1.0, 0.2]}}\n",
            "space.allocation.alpha: value -1.0 does not fit the base experiment",
        ),
        (
            "base: base.yaml\nspace: {algorithm: {choice: [grpo, ppo]}}\n",
            "space.algorithm: value 'ppo' does not fit",
        ),
        ("base: base.yaml\nspace: {allocation.alpha: {uniform: [0.2, 0.1]}}\n", "lo < hi"),
        (
            "base: base.yaml\nspace: {allocation.alpha: {uniform: [0.1, 0.2], choice: [1]}}\n",
            "exactly one of",
        ),
        (
            "base: base.yaml\nspace: {allocation.alpha: {loguniform: [0.0, 0.2]}}\n",
            "loguniform bounds must be > 0",
        ),
        (
            "base: nope.yaml\nspace: {algorithm: {choice: [grpo]}}\n",
            "base: no such experiment file 'nope.yaml'",
        ),
        ("base: base.yaml\nspace: {}\n", "name at least one dotted config key"),
        (
            "base: base.yaml\nspace: {allocation.alpha: {uniform: [0.1, 0.2]}}\nsearch: {algorithm: grid}\n",
            "grid search needs every dimension to be a choice",
        ),
        (
            (
                "base: base.yaml\nspace: {algorithm: {choice: [grpo]}}\n"
                "search: {metric: [eval/accuracy, rollouts_consumed], "
                "mode: max}\n"
            ),
            "2 metrics but 1 modes",
        ),
        (
            "base: base.yaml\nspace: {algorithm: {choice: [grpo]}}\nsearch: {metric: train/loss}\n",
            "trials report eval/ metrics",
        ),
        (
            (
                "base: base.yaml\nspace: {algorithm: {choice: [grpo]}}\n"
                "search: {metric: [eval/accuracy, rollouts_consumed], "
                "mode: [max, min]}\nscheduler: {asha: {}}\n"
            ),
            "asha stops trials on one metric",
        ),
        (
            "base: base.yaml\nspace: {algorithm: {choice: [grpo]}}\nrepeats: 0\n",
            "repeats: Input should be greater",
        ),
        ("base: base.yaml\nspace: {algorithm: {choice: [grpo]}}\nsearh: {}\n", "searh: unknown key"),
        (
            "base: base.yaml\nfixed: {algorithm: grpo}\nspace: {algorithm: {choice: [grpo]}}\n",
            "both fixed and searched",
        ),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_sweeps_fail_in_one_line_naming_file_and_key(tmp_path, body, message):
    path = sweep_file(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert message in str(err.value) and str(err.value).startswith(str(path))
    assert "\n" not in str(err.value)


def test_tune_space_maps_each_kind_with_inclusive_int_bounds(tmp_path):
    from ray.tune.search.sample import Categorical, Float, Integer

    sweep, _, _ = load_sweep(sweep_file(tmp_path, GOOD))
    space = tune_space(sweep)
    assert isinstance(space["allocation.alpha"], Float) and space["allocation.alpha"].lower == 1e-4
    assert isinstance(space["allocation.n_probe"], Integer)
    assert (space["allocation.n_probe"].lower, space["allocation.n_probe"].upper) == (2, 5)  # 4 included
    assert isinstance(space["algorithm"], Categorical) and space["algorithm"].categories == ["raftpp", "grpo"]
    grid = sweep_file(
        tmp_path,
        "base: base.yaml\nspace: {algorithm: {choice: [raftpp, grpo]}}\nsearch: {algorithm: grid}\n",
        "g.yaml",
    )
    assert tune_space(load_sweep(grid)[0]) == {"algorithm": {"grid_search": ["raftpp", "grpo"]}}


def test_trial_config_applies_dotted_params_and_the_seed(tmp_path):
    _, base, _ = load_sweep(sweep_file(tmp_path, GOOD))
    cfg = trial_config(
        base.model_dump(mode="json"),
        {"allocation.alpha": 0.0123456789, "algorithm": "raftpp", "allocation.n_probe": 3},
        seed=7,
    )
    assert cfg.allocation.alpha == 0.0123456789 and cfg.algorithm == "raftpp" and cfg.allocation.n_probe == 3
    assert cfg.seed == 7 and cfg.train.steps == 2
    assert yaml.safe_load(yaml_scalar(1e-05)) == 1e-05 and yaml_scalar("grpo") == "grpo"


def test_resources_concurrency_and_budget_follow_the_experiment():
    cfg = load_config("experiments/gvm-smoke.yaml", ["runtime.num_threads=2"])
    assert trial_cpus(cfg) == 2
    assert budget_estimate(cfg) == 4 * 8 * (4 + 4)
    dist = load_config("experiments/distributed.yaml")  # 2 learners x 1 thread: Ray Train holds the CPUs
    assert trial_cpus(dist) == 0
    sweep, _, _ = load_sweep("experiments/sweeps/smoke.yaml")
    assert max_concurrent(sweep, cfg, cluster_cpus=2) == 1
    wide = sweep.model_copy(update={"search": sweep.search.model_copy(update={"max_concurrent": 8})})
    assert max_concurrent(wide, cfg, cluster_cpus=8) == 4 and max_concurrent(wide, dist, cluster_cpus=8) == 4
    assert max_concurrent(wide, cfg, cluster_cpus=1) == 1


def test_pareto_front_and_best_row_by_first_objective():
    rows = [
        {"acc": 0.5, "r": 100},
        {"acc": 0.6, "r": 300},
        {"acc": 0.4, "r": 200},
        {"acc": 0.6, "r": 250},
        {"acc": None, "r": 1},
    ]
    objectives = [("acc", "max"), ("r", "min")]
    front = pareto_front(rows, objectives)
    assert front == [rows[0], rows[3]]  # (0.4, 200) is beaten by (0.5, 100); (0.6, 300) by (0.6, 250)
    assert best_row(rows, objectives) is rows[3]
    assert best_row(rows, [("acc", "max")]) in (rows[1], rows[3]) and best_row([], objectives) is None


def test_best_yaml_is_the_base_file_with_fixed_keys_and_params_and_runs_validation(tmp_path):
    path = sweep_file(tmp_path, GOOD)
    out = write_best_yaml(
        str(tmp_path / "base.yaml"),
        {"train.steps": 2, "allocation.alpha": 0.003, "algorithm": "raftpp"},
        tmp_path / "best.yaml",
    )
    cfg = load_config(out)
    assert (cfg.train.steps, cfg.allocation.alpha, cfg.algorithm, cfg.seed) == (2, 0.003, "raftpp", 3)
    assert cfg.allocation.allocator == "gvm" and path.exists()


def test_committed_sweeps_validate():
    for name in ("smoke", "gvm-alpha-beta"):
        _, base, _ = load_sweep(f"experiments/sweeps/{name}.yaml")
        assert base.allocation.allocator == "gvm"
    assert load_sweep("experiments/sweeps/gvm-alpha-beta.yaml")[1].train.steps == 40


def test_greso_knobs_sweep_validates_at_every_extreme_of_its_space():
    # load_sweep checks both ends of each range against the base: greso_explore 0.1 and 0.9, floor 1e-3, 0.2
    sweep, base, _ = load_sweep("experiments/sweeps/greso-knobs.yaml")
    assert base.allocation.allocator == "greso" and base.algorithm == "grpo"
    assert (base.train.steps, base.task.train_size) == (20, 160)
    # 20 steps x 16 prompts over a pool of 160: each prompt is met twice, so GRESO's skip history matters
    assert base.train.steps * base.train.prompts_per_step == 2 * base.task.train_size
    assert sweep.space["allocation.greso_explore"].uniform == [0.1, 0.9]
    assert sweep.space["allocation.greso_floor"].loguniform == [0.001, 0.2]
    assert sweep.search.objectives == [("eval/accuracy", "max")]
    assert sweep.scheduler is None


def test_store_status_closes_trials_tune_ended(tmp_path):
    from types import SimpleNamespace

    from dibs.platform.store import open_store
    from dibs.platform.sweeps.sweep_driver import StoreStatus

    url = f"sqlite:///{tmp_path}/s.db"
    store = open_store(url)
    sweep = store.create_sweep(name="s", experiment="e.yaml", objective="eval/accuracy", mode="max")
    spec = {"sweep_id": sweep, "db_url": url, "objectives": [["eval/accuracy", "max"]]}
    for tid in ("a", "b", "c"):
        store.create_trial(sweep, {"x": tid}, trial_id=f"{sweep}-{tid}")
        store.create_run(
            name=tid,
            experiment="e.yaml",
            config={},
            git_commit=None,
            versions={},
            seed=0,
            run_id=f"{sweep}-{tid}-s0",
            sweep_id=sweep,
            trial_id=f"{sweep}-{tid}",
        )
    callback = StoreStatus(spec)
    callback.on_trial_complete(0, [], SimpleNamespace(trial_id="a", last_result={"eval/accuracy": 0.4}))
    callback.on_trial_complete(
        0, [], SimpleNamespace(trial_id="b", last_result={"eval/accuracy": 0.5, "done": True})
    )
    callback.on_trial_error(0, [], SimpleNamespace(trial_id="c", last_result={}))
    callback.on_trial_error(0, [], SimpleNamespace(trial_id="never-started", last_result={}))
    trials = {t["id"].rsplit("-", 1)[1]: t for t in store.trials(sweep)}
    assert [(trials[k]["status"], trials[k]["objective"]) for k in "abc"] == [
        ("stopped", 0.4),
        ("finished", 0.5),
        ("failed", None),
    ]
    runs = {r["name"]: r["status"] for r in store.list_runs()}
    assert runs == {"a": "stopped", "b": "stopped", "c": "failed"}  # b's run was left running: closed
