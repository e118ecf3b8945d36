"""`dibs sweep`: start (or resume) a sweep's Tuner, show a live table of its trials, and end with the
best configuration written as a ready-to-run experiment YAML (see sweep.py for what a trial does)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table

from dibs.platform.core.config import ConfigError, config_to_dict, format_error, validate_dict
from dibs.platform.runtime.runner import cluster_address
from dibs.platform.store.sql import DB_ENV, MASK, display_url, url_password, without_password
from dibs.platform.sweeps.sweep import (
    BEST_FILE,
    SPEC_FILE,
    best_row,
    has_trial,
    load_spec,
    max_concurrent,
    scheduler,
    searcher,
    trial_cpus,
    trial_main,
    tune_space,
    write_best_yaml,
)
from dibs.platform.sweeps.sweep_config import ROLLOUTS, SweepConfig, load_sweep, trial_config


def new_sweep_id() -> str:
    return f"sweep-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{os.urandom(3).hex()}"


def start_spec(path: str, db_url: str, output_dir: str) -> dict:
    """Validate the sweep file and record it: the store's sweep row and the spec file resume reads."""
    from dibs.platform.store import open_store

    sweep, base, base_path = load_sweep(path)
    sweep_id = new_sweep_id()
    store = open_store(db_url)
    objective, mode = sweep.search.objectives[0]
    store.create_sweep(
        name=sweep.name,
        experiment=str(base_path),
        objective=objective,
        mode=mode,
        space={k: d.model_dump(by_alias=True, exclude_none=True) for k, d in sweep.space.items()},
        sweep_id=sweep_id,
    )
    spec = {
        "sweep_id": sweep_id,
        "name": sweep.name,
        "sweep": sweep.model_dump(mode="json", by_alias=True),
        "sweep_path": str(Path(path).resolve()),
        "base_path": str(base_path),
        "base": config_to_dict(base),
        "repeats": sweep.repeats,
        "objectives": sweep.search.objectives,
        "db_url": store.url,
        "cwd": str(Path.cwd()),
        "dir": str((Path(output_dir) / "sweeps" / sweep_id).resolve()),
    }
    Path(spec["dir"]).mkdir(parents=True, exist_ok=True)
    (Path(spec["dir"]) / SPEC_FILE).write_text(json.dumps(masked(spec), indent=2))
    return spec


def masked(spec: dict) -> dict:
    """``spec`` as it may be written or pickled: its store URL without the password (resume_spec)."""
    return spec | {"db_url": display_url(spec["db_url"])}


class LiveTable(Callback):
    """A Tune callback drawing one row per trial: parameters, status, best objective, rollouts."""

    def __init__(self, spec: dict, console: Console | None = None):
        self.spec, self.console = spec, console or Console()
        self.metric, self.mode = spec["objectives"][0]
        self.rows: dict[str, dict] = {}
        self.live: Live | None = None

    def __getstate__(self) -> dict:  # Tune pickles its run config; the terminal and the password stay behind
        state = {k: v for k, v in self.__dict__.items() if k not in ("live", "console")}
        return state | {"spec": masked(self.spec)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, live=None, console=Console())

    def render(self) -> Table:
        keys = list(self.spec["sweep"]["space"])
        t = Table(title=f"sweep {self.spec['sweep_id']} ({self.spec['name']}): {self.metric} ({self.mode})")
        for col in ["trial", *keys, "status", f"best {self.metric}", ROLLOUTS]:
            t.add_column(col)
        for tid, row in self.rows.items():
            best = row.get("best")
            t.add_row(
                tid,
                *[_fmt(row["params"].get(k)) for k in keys],
                row["status"],
                "-" if best is None else f"{best:.4f}",
                str(row.get("rollouts", 0)),
            )
        return t

    def _update(self, trial, status: str, result: dict | None = None) -> None:
        row = self.rows.setdefault(trial.trial_id, {"params": dict(trial.config), "status": status})
        row["status"] = status
        if result:
            value = result.get(self.metric)
            if isinstance(value, (int, float)):
                better = max if self.mode == "max" else min
                row["best"] = value if row.get("best") is None else better(row["best"], value)
            row["rollouts"] = result.get(ROLLOUTS, row.get("rollouts", 0))
        if self.live is not None:
            self.live.update(self.render())

    def setup(self, **info):
        self.live = Live(self.render(), console=self.console, refresh_per_second=2)
        self.live.start()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._update(trial, "running")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._update(trial, "running", result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._update(trial, "finished", trial.last_result)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._update(trial, "error")

    def on_experiment_end(self, trials, **info):
        if self.live is not None:
            self.live.stop()


class StoreStatus(Callback):
    """Closes each trial's store row as Tune ends it: `finished` (it ran its repeats), `stopped` (ASHA
    ended it early: its runs still marked running become stopped too) or `failed`, with the last value
    of the objective it reported."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.metric = spec["objectives"][0][0]

    def __getstate__(self) -> dict:  # pickled into tuner.pkl; a resume installs a fresh one
        return self.__dict__ | {"spec": masked(self.spec)}

    def _close(self, trial, status: str) -> None:
        from dibs.platform.store import open_store

        store = open_store(self.spec["db_url"])
        trial_id = f"{self.spec['sweep_id']}-{trial.trial_id}"
        result = trial.last_result or {}
        if result.get("done"):
            status = "finished"
        if not has_trial(store, self.spec["sweep_id"], trial_id):
            return  # it never started a run
        value = result.get(self.metric)
        store.update_trial(
            trial_id, status=status, objective=value if isinstance(value, (int, float)) else None
        )
        for run in store.list_runs():
            if run["trial_id"] == trial_id and run["status"] == "running":
                store.finish_run(run["id"], "failed" if status == "failed" else "stopped")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "stopped")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "failed")


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_sweep(spec: dict, *, resume: bool, console: Console | None = None) -> dict:
    """Fit (or restore and finish) the sweep's Tuner; returns {best params, best result, yaml path}."""
    import ray
    from ray import tune

    from dibs.platform.sweeps.sweep_storage import store_url_for_restore

    console = console or Console()
    sweep = SweepConfig.model_validate(spec["sweep"])
    base = trial_config(spec["base"], {}, seed=spec["base"]["seed"])
    if not ray.is_initialized() and (address := cluster_address(base.runtime.address)):
        ray.init(
            address=address, log_to_driver=False
        )  # the experiment's cluster, or a Ray job's (`dibs submit`)
    elif not ray.is_initialized():
        from dibs.platform.runtime.runner import start_local_ray

        start_local_ray(os.cpu_count() or 1, dashboard=base.distributed, log_to_driver=False)
    trainable = tune.with_resources(tune.with_parameters(trial_main, spec=spec), {"CPU": trial_cpus(base)})
    path = Path(spec["dir"])
    callbacks = [LiveTable(spec, console), StoreStatus(spec)]
    with store_url_for_restore(spec["db_url"]):  # Tune's pickles hold the URL masked (sweep_storage.py)
        if resume and tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
            tuner._local_tuner._run_config.callbacks = (
                callbacks  # the live table is not pickled with the Tuner
            )
        else:
            tuner = _new_tuner(spec, sweep, base, trainable, callbacks, ray.cluster_resources().get("CPU", 1))
        results = tuner.fit()
    rows = [r.metrics | {"config": r.config} for r in results if r.metrics and r.metrics.get("done")]
    best = best_row(rows, [tuple(o) for o in spec["objectives"]])
    out = {"sweep_id": spec["sweep_id"], "trials": len(results), "finished": len(rows), "best": None}
    if best is not None:
        yaml_path = write_best_yaml(spec["base_path"], sweep.fixed | best["config"], path / BEST_FILE)
        out |= {
            "best": {k: best[k] for k in best if k != "config"},
            "params": best["config"],
            "yaml": str(yaml_path),
        }
    return out


def _new_tuner(spec: dict, sweep: SweepConfig, base, trainable, callbacks, cluster_cpus: float):
    from ray import tune

    single = len(spec["objectives"]) == 1
    metric, mode = spec["objectives"][0]
    cfg = tune.TuneConfig(
        search_alg=searcher(sweep, spec["db_url"], spec["sweep_id"]),
        scheduler=scheduler(sweep, base),
        num_samples=sweep.search.num_samples,
        max_concurrent_trials=max_concurrent(sweep, base, cluster_cpus),
        metric=metric if single else None,
        mode=mode if single else None,
    )
    run = tune.RunConfig(
        name=spec["sweep_id"],
        storage_path=str(Path(spec["dir"]).parent),
        verbose=0,
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=0),
    )
    return tune.Tuner(trainable, param_space=tune_space(sweep), tune_config=cfg, run_config=run)


class _Spec(BaseModel):
    """The fields of a sweep's SPEC_FILE that resuming reads (start_spec writes them)."""

    model_config = ConfigDict(strict=True)
    sweep_id: str
    name: str
    sweep: dict
    sweep_path: str
    base_path: str
    base: dict
    repeats: int = Field(ge=1)
    objectives: list[list[str]] = Field(min_length=1)
    db_url: str
    cwd: str
    dir: str


def resume_spec(sweep_id: str, output_dir: str, db: str | None = None) -> dict:
    """The stopped sweep's spec, checked before Ray or the store is touched (a corrupt or hand-edited
    SPEC_FILE is one line naming it, not a traceback from inside Tune), with the store URL to use:
    `--db`, else $DIBS_DB_URL, else the recorded one, which holds no password (start_spec masks it)."""
    spec = load_spec(Path(output_dir) / "sweeps", sweep_id)
    source = str(Path(output_dir) / "sweeps" / sweep_id / SPEC_FILE)
    try:
        _Spec.model_validate(spec)
        SweepConfig.model_validate(spec["sweep"])
    except ValidationError as e:
        raise ConfigError(format_error(source, e)) from None
    if spec["sweep_id"] != sweep_id:
        raise ConfigError(f"{source}: sweep_id: names another sweep ({spec['sweep_id'][:60]!r})")
    validate_dict(spec["base"], f"{source} (base)")
    return spec | {"db_url": resume_url(spec["db_url"], db or os.environ.get(DB_ENV), sweep_id)}


def resume_url(recorded: str, given: str | None, sweep_id: str) -> str:
    """``given`` when it names the recorded store (its password may differ: the record has none)."""
    from dibs.platform.store.store import store_url

    if given is None:
        if url_password(recorded) == MASK:
            raise ConfigError(
                f"--resume {sweep_id}: its store {recorded} needs the password: pass --db URL "
                f"or set ${DB_ENV}"
            )
        return recorded
    given = store_url(given)
    if without_password(given) != without_password(recorded):
        raise ConfigError(
            f"--resume {sweep_id}: --db/${DB_ENV} {display_url(given)} is not the sweep's store "
            f"{display_url(recorded)}"
        )
    return given
