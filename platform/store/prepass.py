"""Pre-passes: every RL prompt's pass rate measured once before training, kept as a run of its own.

A pre-pass is a finished run whose ``summary`` holds ``"kind": "prepass"``, with the ``seed`` and the
``config.task`` of the training runs it serves and one ``prompt_stats`` row per RL prompt at step 0:
``p_hat`` its pass rate in the pre-pass, ``n_alloc`` the samples drawn, ``accepted`` how many scored 1.
It has no metric rows. The dashboard's "Where the budget went" panel reads it as the reference pass rate
of the training runs with the same seed and task (dashboards/budget.py); ``record_prepass`` writes one,
and a script may write the same rows through ``ResultsStore`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .store import ResultsStore, open_store
from .telemetry import prompt_stat_values

if TYPE_CHECKING:
    from dibs.platform.core.metrics import PromptStat

PREPASS_KIND = "prepass"  # the summary's "kind" of a pre-pass run
PREPASS_STEP = 0  # the step its prompt rows are logged at


def is_prepass(run: Mapping[str, Any]) -> bool:
    """Whether a run dict (as the store's readers return it, with ``summary``) is a pre-pass."""
    summary = run.get("summary")
    return isinstance(summary, Mapping) and summary.get("kind") == PREPASS_KIND


def record_prepass(
    store_or_url: ResultsStore | str,
    config: Mapping[str, Any] | Any,
    seed: int,
    rows: Sequence[PromptStat],
    *,
    name: str | None = None,
    experiment: str = "prepass",
    run_id: str | None = None,
    summary: Mapping[str, Any] | None = None,
) -> str:
    """Store a pre-pass of ``config``'s task at ``seed``: a finished run with ``rows`` at step 0 and the
    summary ``{"kind": "prepass", "prompts", "samples", "accepted", "pass_rate"}``; returns its id.

    ``config`` is the resolved config of the runs it serves (a dict, or a pydantic model such as
    ``ExperimentConfig``): the dashboard matches a pre-pass to a run on ``seed`` and ``config["task"]``.
    ``store_or_url``: an open ``ResultsStore`` (left open) or a store URL (opened and closed here).
    ``run_id``: a fixed id (a script that stores its pre-passes again finds them by it); ``summary``: more
    keys for the run's summary (the counts above and ``kind`` win).
    ValueError, before anything is written, for a config without a ``task`` section, no rows, a prompt
    given twice, a prompt without samples, or a ``p_hat`` that is not a rate in [0, 1].
    """
    resolved = _config_dict(config)
    _check_rows(rows)
    where = (name, experiment, run_id, dict(summary or {}))
    if isinstance(store_or_url, ResultsStore):
        return _record(store_or_url, resolved, int(seed), rows, *where)
    with open_store(store_or_url) as store:
        return _record(store, resolved, int(seed), rows, *where)


def _config_dict(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    if hasattr(config, "model_dump"):  # an ExperimentConfig: its JSON form, as runs record it
        config = config.model_dump(mode="json")
    if not isinstance(config, Mapping) or not isinstance(config.get("task"), Mapping):
        raise ValueError("record_prepass: config must be a resolved config with a 'task' section")
    return dict(config)


def _check_rows(rows: Sequence[PromptStat]) -> None:
    if not rows:
        raise ValueError("record_prepass: no prompt rows (one per RL prompt is expected)")
    prompt_stat_values("prepass", PREPASS_STEP, rows)  # counts, accepted <= n_alloc, prompt ids
    seen: set[str] = set()
    for row in rows:
        where = f"record_prepass: prompt {str(row.prompt_id)[:60]!r}"
        if row.prompt_id in seen:  # the store would keep the first and drop this one silently
            raise ValueError(f"{where} is given twice")
        seen.add(row.prompt_id)
        if row.n_alloc < 1:
            raise ValueError(f"{where}: n_alloc must be >= 1 (the samples drawn), got {row.n_alloc}")
        p_hat = float(row.p_hat)
        if not (math.isfinite(p_hat) and 0.0 <= p_hat <= 1.0):
            raise ValueError(f"{where}: p_hat must be a pass rate in [0, 1], got {row.p_hat!r}")


def _record(store: ResultsStore, config: dict[str, Any], seed: int, rows: Sequence[PromptStat],
            name: str | None, experiment: str, run_id: str | None, extra: dict[str, Any]) -> str:  # fmt: skip
    task = config["task"].get("kind", "task")
    run_id = store.create_run(
        name=name or f"prepass-{task}-s{seed}", experiment=experiment, config={**config, "seed": seed},
        git_commit=None, versions={}, seed=seed, run_id=run_id,
    )  # fmt: skip
    store.log_prompt_stats(run_id, PREPASS_STEP, rows)
    samples = sum(int(r.n_alloc) for r in rows)
    accepted = sum(int(r.accepted) for r in rows)
    summary = extra | {"kind": PREPASS_KIND, "prompts": len(rows), "samples": samples, "accepted": accepted,
                       "pass_rate": accepted / samples}  # fmt: skip
    store.finish_run(run_id, "finished", summary)
    return run_id
