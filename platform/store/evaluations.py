"""Evaluation rows: one run's policy at one step on one problem set, at a given k and temperature.

``ResultsStore.record_evaluation`` writes them (`dibs eval` calls it) and
``ResultsStore.evaluations`` reads them; this module checks the values and holds the query.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, select

from .models import Evaluation
from .sql import count, finite_or_none

# The natural key: evaluating the same checkpoint again leaves the row it has alone (as metric rows).
EVALUATION_KEY = ("run_id", "step", "set_name", "k", "temperature")
EVALUATION_FIELDS = ("step", "set_name", "k", "temperature", "mean_at_k", "pass_at_k", "n_problems")


def evaluation_values(run_id: str, step: int, set_name: str, k: int, temperature: float,
                      mean_at_k: float | None, pass_at_k: float | None,
                      n_problems: int) -> dict[str, Any]:  # fmt: skip
    """The insert parameters of one evaluation; ValueError (one line) for a value out of range."""
    where = f"evaluation of {set_name!r} at step {step!r}"
    if not isinstance(set_name, str) or not set_name:
        raise ValueError(f"{where}: set_name must be a non-empty string")
    counts = {
        name: count(name, value, where) for name, value in (("step", step), ("k", k), ("n", n_problems))
    }
    if counts["k"] < 1:
        raise ValueError(f"{where}: k must be >= 1, got {k}")
    if not float(temperature) >= 0:
        raise ValueError(f"{where}: temperature must be >= 0, got {temperature}")
    return {
        "run_id": run_id,
        "step": counts["step"],
        "set_name": set_name,
        "k": counts["k"],
        "temperature": float(temperature),
        "mean_at_k": finite_or_none(mean_at_k),
        "pass_at_k": finite_or_none(pass_at_k),
        "n_problems": counts["n"],
        "created_at": datetime.now(timezone.utc),
    }


def read_evaluations(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """A run's evaluation rows by step, set, k and temperature; NULL reads as None."""
    columns = [getattr(Evaluation, field) for field in EVALUATION_FIELDS]
    query = select(*columns).where(Evaluation.run_id == run_id)
    order = (Evaluation.step, Evaluation.set_name, Evaluation.k, Evaluation.temperature)
    return [dict(zip(EVALUATION_FIELDS, row, strict=True)) for row in conn.execute(query.order_by(*order))]
