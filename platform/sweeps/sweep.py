"""Sweeps: Ray Tune over the budget hyper-parameters of one experiment, trials compared at
equal rollouts.

- The search space (sweep_config.py) becomes Tune domains keyed by dotted config keys; `optuna` is
  Optuna's TPE through Tune's OptunaSearch (several objectives: Optuna's multi-objective TPE), its study
  kept in the results database itself (Optuna RDB storage, study name = sweep id); `random` and `grid`
  are Tune's variant generator.
- `scheduler: asha` is ASHA with `rollouts_consumed` (probe included) as its time attribute: trials are
  stopped or promoted at equal rollout budgets, never at equal steps.
- A trial (`trial_main`) runs its configuration `repeats` times (seeds base, base+1, ...) the way
  `dibs run` would: in the trial's own process for a one-process experiment (the trial holds its CPUs),
  or through the Ray Train runtime for a distributed one. It reports at every evaluation (eval/ metrics,
  rollouts so far over all its repeats, step, repeat) and finally the mean of its repeats' final values.
  Runs land in the store tagged with the sweep and trial ids; a trial restarted after a crash resumes its
  runs (deterministic run ids) instead of recording them twice.
- The Tune experiment lives in `<output_dir>/sweeps/<sweep id>` with the sweep's spec: `--resume` restores
  the Tuner from there (the searcher's state included; finished trials are not run again).
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
from pathlib import Path
from typing import Any

import yaml

from dibs.platform.core import metrics as M
from dibs.platform.core.config import ConfigError, ExperimentConfig, apply_overrides, read_experiment_mapping
from dibs.platform.sweeps.sweep_config import ROLLOUTS, STEP, TOKENS, SweepConfig, trial_config, yaml_scalar

SPEC_FILE = "sweep.json"  # the sweep, its base experiment and where results go: enough to resume
BEST_FILE = "best.yaml"


def tune_space(sweep: SweepConfig) -> dict[str, Any]:
    from ray import tune

    out = {}
    for key, d in sweep.space.items():
        if sweep.search.algorithm == "grid":
            out[key] = tune.grid_search(list(d.choice))
        elif d.kind == "choice":
            out[key] = tune.choice(list(d.choice))
        elif d.kind == "int":
            out[key] = tune.randint(d.int_[0], d.int_[1] + 1)  # Tune's upper bound is exclusive
        elif d.kind == "loguniform":
            out[key] = tune.loguniform(*d.loguniform)
        else:
            out[key] = tune.uniform(*d.uniform)
    return out


def searcher(sweep: SweepConfig, db_url: str, sweep_id: str):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    s = sweep.search
    if s.algorithm != "optuna":
        return BasicVariantGenerator(random_state=s.seed)
    from ray.tune.search.optuna import OptunaSearch

    from dibs.platform.sweeps.sweep_storage import SweepStorage

    metrics, modes = zip(*s.objectives, strict=True)
    storage = SweepStorage(db_url)  # the results database itself (Optuna's own tables)
    multi = len(metrics) > 1
    return OptunaSearch(
        metric=list(metrics) if multi else metrics[0],
        mode=list(modes) if multi else modes[0],
        seed=s.seed,
        storage=storage,
        study_name=sweep_id,
    )


def scheduler(sweep: SweepConfig, base: ExperimentConfig):
    if sweep.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    a = sweep.scheduler.asha
    # ASHA ends a trial once it reaches max_t; by default no trial gets there before its own last report
    # (searched parameters such as the probe size or dapo's refills move a run's budget).
    return ASHAScheduler(
        time_attr=ROLLOUTS,
        max_t=a.max_t or 10 * budget_estimate(base) * sweep.repeats,
        grace_period=a.grace_period,
        reduction_factor=a.reduction_factor,
    )


def budget_estimate(cfg: ExperimentConfig) -> int:
    """Rollouts a run of the base experiment spends: every step's budget plus a full probe."""
    per_step = cfg.train.prompts_per_step * (cfg.allocation.n_per_prompt + cfg.allocation.n_probe)
    return max(1, cfg.train.steps * per_step)


def trial_cpus(cfg: ExperimentConfig) -> float:
    """CPUs a trial holds: its loop's threads in one process; for a distributed experiment nothing
    itself (Ray Train reserves its learners' bundles), counted by `cpus_per_trial` for concurrency."""
    return 0 if cfg.distributed else cfg.runtime.num_threads


def cpus_per_trial(cfg: ExperimentConfig) -> float:
    from dibs.platform.runtime.distributed import learner_bundle

    return (
        cfg.learner.num_workers * learner_bundle(cfg, gpu=False)["CPU"]
        if cfg.distributed
        else cfg.runtime.num_threads
    )


def max_concurrent(sweep: SweepConfig, base: ExperimentConfig, cluster_cpus: float) -> int:
    """Trials at once: what the sweep asks, at most what the cluster's CPUs hold (no oversubscription)."""
    return max(1, min(sweep.search.max_concurrent, int(cluster_cpus // cpus_per_trial(base))))


# --- the trial ------------------------------------------------------------------------------------


def trial_main(params: dict, spec: dict) -> None:
    """One Tune trial (see the module docstring). `spec` is the sweep's SPEC_FILE content."""
    from ray import tune

    from dibs.platform.store import open_store

    os.chdir(spec["cwd"])
    store = open_store(spec["db_url"])
    sweep_id = spec["sweep_id"]
    trial_id = f"{sweep_id}-{tune.get_context().get_trial_id()}"
    if not has_trial(store, sweep_id, trial_id):
        store.create_trial(sweep_id, params, trial_id=trial_id)
    store.update_trial(trial_id, status="running")
    spent, finals = {"rollouts": 0, "tokens": 0}, []
    for r in range(spec["repeats"]):
        cfg = trial_config(spec["base"], params, seed=spec["base"]["seed"] + r)
        summary = _trial_run(store, cfg, spec, trial_id, r, spent)
        finals.append(summary["final"])
        spent["rollouts"] += summary["rollouts_consumed"]
        spent["tokens"] += summary["tokens_generated"]
    final = {k: sum(f[k] for f in finals) / len(finals) for k in finals[0] if k.startswith("eval/")}
    objective = final.get(spec["objectives"][0][0])
    store.update_trial(trial_id, status="finished", objective=objective)
    tune.report(
        final
        | {
            ROLLOUTS: spent["rollouts"],
            TOKENS: spent["tokens"],
            STEP: cfg.train.steps,
            "repeat": spec["repeats"] - 1,
            "done": True,
        }
    )


def has_trial(store, sweep_id: str, trial_id: str) -> bool:
    """Whether a trial row exists (a restarted trial, or one Tune ended before it started a run)."""
    return any(t["id"] == trial_id for t in store.trials(sweep_id))


def _trial_run(store, cfg: ExperimentConfig, spec: dict, trial_id: str, repeat: int, spent: dict) -> dict:
    """One seed of a trial, reported at each evaluation; resumed (not recorded again) after a crash."""
    from ray import tune

    from dibs.platform.core.provenance import git_commit, package_versions
    from dibs.platform.learn import checkpoint_check
    from dibs.platform.runtime.runner import run_inline, run_payload, run_ray
    from dibs.platform.tasks.registry import make_task

    run_id = f"{trial_id}-s{repeat}"
    known = {r["id"]: r for r in store.list_runs()}
    resume_from = None
    if run_id in known:
        if known[run_id]["status"] == "finished":
            return store.get_run(run_id)["summary"]
        picked = checkpoint_check.choose(
            store.checkpoints(run_id),
            run_dir=Path(cfg.runtime.output_dir) / run_id,
            model=cfg.model,
            alphabet=make_task(cfg.task).alphabet,
        )
        resume_from = picked[1] if picked else None
        store.resume_run(run_id)
    else:
        store.create_run(
            name=f"{spec['name']}/{trial_id.rsplit('-', 1)[-1]}/s{repeat}",
            experiment=spec["base_path"],
            config=cfg.model_dump(mode="json"),
            git_commit=git_commit(),
            versions=package_versions(),
            seed=cfg.seed,
            run_id=run_id,
            sweep_id=spec["sweep_id"],
            trial_id=trial_id,
        )
    events: queue.Queue = queue.Queue()
    result: dict = {}
    execute = run_ray if cfg.distributed else run_inline

    def work() -> None:
        try:
            result["summary"] = execute(cfg, run_payload(cfg, store.url, run_id, resume_from), events.put)
        except BaseException as e:  # noqa: BLE001 - re-raised in the trial's thread below
            result["error"] = e

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while thread.is_alive() or not events.empty():
        try:
            stage, step, _, info = events.get(timeout=0.5)
        except queue.Empty:
            continue
        if stage == "eval":
            tune.report(
                {k: v for k, v in info.items() if k.startswith("eval/")}
                | {
                    ROLLOUTS: spent["rollouts"] + int(info.get(M.BUDGET_ROLLOUTS, 0)),
                    TOKENS: spent["tokens"] + int(info.get(M.BUDGET_TOKENS, 0)),
                    STEP: step,
                    "repeat": repeat,
                }
            )
    if "error" in result:
        store.finish_run(run_id, "failed")
        raise result["error"]
    store.finish_run(run_id, "finished", result["summary"])
    return result["summary"]


# --- results --------------------------------------------------------------------------------------


def pareto_front(rows: list[dict], objectives: list[tuple[str, str]]) -> list[dict]:
    """Rows no other row beats on every objective (and strictly on one); rows missing one are left out."""
    keyed = [r for r in rows if all(isinstance(r.get(m), (int, float)) for m, _ in objectives)]
    sign = {"max": 1.0, "min": -1.0}

    def beats(a: dict, b: dict) -> bool:
        ge = all(sign[mode] * a[m] >= sign[mode] * b[m] for m, mode in objectives)
        return ge and any(sign[mode] * a[m] > sign[mode] * b[m] for m, mode in objectives)

    return [r for r in keyed if not any(beats(o, r) for o in keyed if o is not r)]


def best_row(rows: list[dict], objectives: list[tuple[str, str]]) -> dict | None:
    """The best final result: on the first objective, among the Pareto front when there are several."""
    front = pareto_front(rows, objectives)
    if not front:
        return None
    metric, mode = objectives[0]
    return (max if mode == "max" else min)(front, key=lambda r: r[metric])


def write_best_yaml(base_path: str, params: dict[str, Any], out: Path) -> Path:
    """The base experiment file with the sweep's fixed keys and the best parameters written in: ready
    for `dibs run`, and whole (its own `base:` files merged in), so it runs from any folder."""
    data = read_experiment_mapping(base_path)  # as load_config read it: 1e-5 is a float
    overrides = [f"{k}={yaml_scalar(v)}" for k, v in params.items()]
    data = apply_overrides(data, overrides, source=str(out))
    header = f"# best configuration of sweep {out.parent.name}; base: {base_path}\n"
    out.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return out


def load_spec(sweeps_dir: Path, sweep_id: str) -> dict:
    """The sweep's SPEC_FILE as a dict; a missing, unreadable or non-JSON file is one ConfigError line.
    Its fields are checked by sweep_driver.resume_spec."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", sweep_id):  # a name inside sweeps_dir, never a path
        raise ConfigError(f"--resume {sweep_id[:60]!r}: not a sweep id (letters, digits, '.', '_', '-')")
    path = sweeps_dir / sweep_id / SPEC_FILE
    if not path.is_file():
        raise ConfigError(f"--resume {sweep_id}: no sweep there ({path} not found)")
    try:
        spec = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f" at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise ConfigError(f"{path}: not valid JSON{where}; the sweep cannot be resumed from it") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(spec).__name__}")
    return spec
