"""Live progress (rich) during a run, and the before/after summary printed at its end."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dibs.platform.core import metrics as M
from dibs.platform.core.config import ExperimentConfig


class RunDisplay:
    """Consumes (stage, done, total, info) events; shows a bar per stage with live reward/accuracy."""

    def __init__(self, cfg: ExperimentConfig, console: Console | None = None):
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, int] = {}
        self.last_eval = ""

    def __enter__(self) -> RunDisplay:  # noqa: PYI034 - typing.Self needs Python 3.11
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def _task(self, stage: str, total: int) -> int:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, info="")
        return self.tasks[stage]

    def on_event(self, event: tuple) -> None:
        stage, done, total, info = event
        if stage == "eval":  # an eval refreshes the RL bar's text, not its position
            self.last_eval = (
                f"acc {info.get(M.EVAL_ACCURACY, 0):.1%}  mean@{self.cfg.eval.k} "
                f"{info.get(M.EVAL_MEAN_AT_K, 0):.1%}  fmt {info.get(M.EVAL_FORMAT_RATE, 0):.0%}"
            )
            self.console.log(f"eval @ step {done}: {self.last_eval}")
            self.progress.update(self._task("rl", total), info=f"| last eval: {self.last_eval}")
            return
        text = (
            f"loss {info.get('loss', 0):.3f}"
            if stage == "warm start"
            else f"reward {info.get('reward', 0):.3f}  | last eval: {self.last_eval}"
        )
        self.progress.update(self._task(stage, total), completed=done, info=text)


def print_summary(run_id: str, cfg: ExperimentConfig, summary: dict, console: Console | None = None) -> None:
    console = console or Console()
    before, after = summary["step0"], summary["final"]
    table = Table(
        title=f"run {run_id}: held-out evaluation before and after RL "
        f"({cfg.train.steps} steps, {summary['rollouts_consumed']:,} rollouts)"
    )
    table.add_column("metric")
    table.add_column("step 0 (warm start)", justify="right")
    table.add_column(f"step {cfg.train.steps}", justify="right")
    table.add_column("change", justify="right")
    names = [*M.HEADLINE] + sorted(k for k in before if k.startswith("eval/accuracy_terms_"))
    for name in names:
        b, a = before.get(name), after.get(name)
        if b is None or a is None:
            continue
        label = f"{name} (k={cfg.eval.k}, T={cfg.eval.temperature})" if name == M.EVAL_MEAN_AT_K else name
        table.add_row(label, f"{b:.1%}", f"{a:.1%}", f"{100 * (a - b):+.1f} pts")
    console.print(table)
    console.print(
        f"wall time {summary['wall_seconds']:.0f} s (warm start "
        f"{before.get(M.WARM_START_SECONDS, 0):.0f} s); export: dibs export {run_id}"
    )
