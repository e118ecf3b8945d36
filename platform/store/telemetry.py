"""Per-prompt telemetry rows of the results store: checking them on the way in, reading them back.

``ResultsStore.log_prompt_stats`` and ``ResultsStore.prompt_stats`` own the transactions; this module
holds what is particular to the ``prompt_stats`` table, so that store.py stays one readable file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from .models import PromptStatRow
from .sql import count

if TYPE_CHECKING:
    from dibs.platform.core.metrics import PromptStat

# The natural key: a resumed run that logs a step again leaves the rows it has alone.
PROMPT_STAT_KEY = ("run_id", "step", "prompt_id")
PROMPT_STAT_FIELDS = ("step", "prompt_id", "p_hat", "g_hat", "n_alloc", "accepted", "probed")


def prompt_stat_values(run_id: str, step: int, rows: Sequence[PromptStat]) -> list[dict[str, Any]]:
    """The insert parameters of one step's rows; a non-finite (or missing) estimate becomes NULL.

    Raises ValueError, in one line naming the step and prompt, for a negative step or count, more
    accepted rollouts than allocated ones, a non-integer count or an empty / non-text prompt id.
    """
    step = _count("step", step, f"step {step!r}")
    return [_row_values(run_id, step, row) for row in rows]


def _row_values(run_id: str, step: int, row: PromptStat) -> dict[str, Any]:
    where = f"step {step}, prompt {str(row.prompt_id)[:60]!r}"
    if not isinstance(row.prompt_id, str) or not row.prompt_id:
        raise ValueError(f"prompt stat at {where}: prompt_id must be a non-empty string")
    n_alloc = _count("n_alloc", row.n_alloc, where)
    accepted = _count("accepted", row.accepted, where)
    if accepted > n_alloc:
        raise ValueError(f"prompt stat at {where}: accepted={accepted} exceeds n_alloc={n_alloc}")
    return {
        "run_id": run_id,
        "step": step,
        "prompt_id": row.prompt_id,
        "p_hat": _finite_or_none("p_hat", row.p_hat, where),
        "g_hat": _finite_or_none("g_hat", row.g_hat, where),
        "n_alloc": n_alloc,
        "accepted": accepted,
        "probed": bool(row.probed),
    }


def _count(name: str, value: Any, where: str) -> int:
    return count(name, value, f"prompt stat at {where}")


def _finite_or_none(name: str, value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"prompt stat at {where}: {name} must be a number, got {value!r}") from None
    # JSON and PostgreSQL cannot carry nan or inf, as for metric values.
    return number if math.isfinite(number) else None


def read_prompt_stats(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """The rows of one run, by step and then in the order they were logged; NULL reads as None."""
    query = (
        select(*(getattr(PromptStatRow, field) for field in PROMPT_STAT_FIELDS))
        .where(PromptStatRow.run_id == run_id)
        .order_by(PromptStatRow.step, PromptStatRow.id)
    )
    return [dict(zip(PROMPT_STAT_FIELDS, row, strict=True)) for row in conn.execute(query)]
