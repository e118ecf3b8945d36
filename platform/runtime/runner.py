"""Executors: where the one training loop runs (docs/conventions.md, Runtime).

- `ray` (default): the loop runs as a Ray task on the cluster (one worker here: the
  single-machine run is the one-worker case of the distributed runtime); a local `ray.init` bound to
  127.0.0.1 when no address is given.
- `inline`: the same loop in the driver process, for debugging and for measuring what Ray costs.

The worker writes metric rows straight to the results store; the driver creates the run row, shows a
live progress display fed through a Ray queue, and closes the run with its summary.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import transformers

from dibs.platform.core.config import ExperimentConfig
from dibs.platform.core.host import configure_process
from dibs.platform.runtime.base import RunPayload
from dibs.platform.runtime.loop import train
from dibs.platform.runtime.recording import NullProgress, QueueProgress, StoreRecorder
from dibs.platform.store import open_store


def run_payload(cfg: ExperimentConfig, db_url: str, run_id: str, resume_from: str | None) -> RunPayload:
    """What an executor needs to run (or resume) one run: its config, where to record and checkpoint."""
    out_dir = Path(cfg.runtime.output_dir) / run_id
    return RunPayload(
        cfg,
        cwd=str(Path.cwd()),
        db_url=db_url,
        run_id=run_id,
        checkpoint_dir=str((out_dir / "checkpoints").resolve()),
        resume_from=resume_from,
    )


def worker_main(payload: RunPayload) -> dict:
    """The loop on one worker, recording into the store and reporting progress to `payload.queue`."""
    cfg = payload.config
    if os.path.isdir(payload.cwd):  # relative paths in the config mean the driver's cwd
        os.chdir(payload.cwd)
    transformers.utils.logging.disable_progress_bar()
    configure_process(cfg.runtime.num_threads, cfg.runtime.keep_freed_memory)
    store = open_store(payload.db_url)
    recorder = StoreRecorder(store, payload.run_id)
    progress = QueueProgress(payload.queue) if payload.queue is not None else NullProgress()
    return train(
        cfg, recorder, progress, checkpoint_dir=payload.checkpoint_dir, resume_from=payload.resume_from
    )


def cluster_address(configured: str | None) -> str | None:
    """The Ray cluster to join: the configured address, else RAY_ADDRESS (Ray Jobs sets it for a job's
    entrypoint, as `ray.init()` users expect); None means start a local Ray."""
    return configured or os.environ.get("RAY_ADDRESS") or None


def run_ray(cfg: ExperimentConfig, payload: RunPayload, on_progress: Callable[[tuple], None]) -> dict:
    """The loop as one Ray task holding `num_threads` CPUs; progress flows back through a Ray queue."""
    import ray
    from ray.util.queue import Queue

    if not ray.is_initialized():
        with _keep_sigterm_handler():
            _init_ray(cfg)
    q = Queue(maxsize=1000, actor_options={"num_cpus": 0})
    stop = threading.Event()
    pump = threading.Thread(target=_drain, args=(q, on_progress, stop), daemon=True)
    pump.start()
    try:
        if cfg.distributed:
            from dibs.platform.runtime.distributed import run_ray_train

            return run_ray_train(cfg, payload, q)
        task = ray.remote(num_cpus=cfg.runtime.num_threads, max_retries=0)(worker_main)
        ref = task.remote(payload.with_queue(q))
        try:
            return ray.get(ref)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM in the driver: the worker must stop writing the run too
            ray.cancel(ref, force=True)
            raise
    finally:
        stop.set()
        pump.join(timeout=5)


def _init_ray(cfg: ExperimentConfig) -> None:
    import ray

    from dibs.platform.runtime.distributed import learner_bundle

    if address := cluster_address(cfg.runtime.address):
        ray.init(address=address, log_to_driver=True)
    else:
        # Logical CPUs: the learners' bundles (a learner and its rollout actor share theirs).
        need = cfg.learner.num_workers * learner_bundle(cfg, gpu=False)["CPU"]
        # Ray Train's placement-group cleaner polls the state API, which the dashboard process serves:
        # without it the driver log fills with "Failed to query ... State API" warnings.
        start_local_ray(max(os.cpu_count() or 1, need), dashboard=cfg.distributed, log_to_driver=True)


@contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """``ray.init`` replaces the SIGTERM handler with ``sys.exit`` (a run would end 'failed'); the
    driver's own (heartbeat.stop_signals: 'stopped', lease released) is put back."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if callable(previous):  # only a handler of ours; SIG_DFL callers keep what Ray installs
            signal.signal(signal.SIGTERM, previous)


def start_local_ray(num_cpus: float, *, dashboard: bool, log_to_driver: bool) -> None:
    """A one-machine Ray bound to 127.0.0.1. Token authentication is off unless the caller's environment
    asks for it: nothing but this machine can reach a loopback-bound cluster."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        _node_ip_address="127.0.0.1",
        log_to_driver=log_to_driver,
        configure_logging=False,
    )


def _drain(q, on_progress: Callable[[tuple], None], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            on_progress(q.get(timeout=0.5))
        except Exception:  # noqa: BLE001, S112 - Empty, or the queue actor went away at shutdown
            continue


class _Direct:
    """Queue-shaped adapter: the inline executor hands progress events straight to the display."""

    def __init__(self, on_progress: Callable[[tuple], None]):
        self.on_progress = on_progress

    def put_nowait(self, item: tuple) -> None:
        self.on_progress(item)


def run_inline(cfg: ExperimentConfig, payload: RunPayload, on_progress: Callable[[tuple], None]) -> dict:
    return worker_main(payload.with_queue(_Direct(on_progress)))
