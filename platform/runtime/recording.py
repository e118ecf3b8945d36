"""Where a worker's loop sends what it produces: metric rows and checkpoints to the results store, progress
events to the driver's display through a queue. Used by the single-worker executor (runner.py) and by rank 0
of the distributed runtime (distributed.py), so it sits below both. The `Recorder` Protocol the loop writes
through is here too, with `MemoryRecorder` (tests and tools without a store) and `NullProgress`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dibs.platform.core.metrics import PromptStat
from dibs.platform.store import MetricRow, ResultsStore

if TYPE_CHECKING:  # base.py imports torch and transformers; recording stays light
    from dibs.platform.runtime.base import ProgressQueue


class StoreRecorder:
    """Writes each step's metrics as rows keyed by (run, name, step), idempotently."""

    def __init__(self, store: ResultsStore, run_id: str):
        self.store, self.run_id = store, run_id

    def record(
        self,
        step: int,
        values: dict[str, float],
        *,
        rollouts_consumed: int,
        tokens_generated: int,
        wall_seconds: float,
    ) -> None:
        self.store.log_metrics(
            self.run_id,
            [
                MetricRow(
                    step=step,
                    name=k,
                    value=float(v),
                    rollouts_consumed=rollouts_consumed,
                    tokens_generated=tokens_generated,
                    wall_seconds=wall_seconds,
                )
                for k, v in values.items()
            ],
        )

    def record_prompts(self, step: int, rows: list[PromptStat]) -> None:
        """One step's per-prompt rows, keyed by (run, step, prompt) and as idempotent as `record`."""
        self.store.log_prompt_stats(self.run_id, step, rows)

    def checkpoint(self, step: int, path: str) -> None:
        self.store.add_checkpoint(self.run_id, step, str(Path(path).resolve()))


class QueueProgress:
    """Progress events pushed into a queue; a full queue drops the event (display is best-effort)."""

    def __init__(self, q: ProgressQueue):
        self.q = q

    def update(self, stage: str, done: int, total: int, info: dict[str, float]) -> None:
        try:
            self.q.put_nowait((stage, done, total, {k: float(v) for k, v in info.items()}))
        except Exception:  # noqa: BLE001, S110 - a dropped progress event must never stop training
            pass


class Recorder(Protocol):
    def record(
        self,
        step: int,
        values: dict[str, float],
        *,
        rollouts_consumed: int,
        tokens_generated: int,
        wall_seconds: float,
    ) -> None: ...

    def checkpoint(self, step: int, path: str) -> None: ...

    def record_prompts(self, step: int, rows: list[PromptStat]) -> None: ...


class NullProgress:
    def update(self, stage: str, done: int, total: int, info: dict[str, float]) -> None:
        pass


class MemoryRecorder:
    """Keeps rows in memory, {(step, name): (value, rollouts_consumed, tokens_generated)}: for tests and
    for tools that run the loop without a results store."""

    def __init__(self):
        self.rows: dict[tuple[int, str], tuple[float, int, int]] = {}
        self.checkpoints: list[tuple[int, str]] = []
        self.prompts: dict[int, list[PromptStat]] = {}

    def record(
        self,
        step: int,
        values: dict[str, float],
        *,
        rollouts_consumed: int,
        tokens_generated: int,
        wall_seconds: float,
    ) -> None:
        for name, value in values.items():
            self.rows[(step, name)] = (value, rollouts_consumed, tokens_generated)

    def checkpoint(self, step: int, path: str) -> None:
        self.checkpoints.append((step, path))

    def record_prompts(self, step: int, rows: list[PromptStat]) -> None:
        self.prompts[step] = list(rows)

    def at(self, step: int, name: str) -> tuple[float, int, int]:
        return self.rows[(step, name)]
