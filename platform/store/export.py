"""Text exports of runs as returned by ``ResultsStore.get_run``, alone or several together."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CSV_COLUMNS = ("step", "rollouts_consumed", "tokens_generated", "wall_seconds", "name", "value")
PROMPT_CSV_COLUMNS = ("step", "prompt_id", "p_hat", "g_hat", "n_alloc", "accepted", "probed")


def to_json(value: Any) -> str:
    """JSON, indent 2, keys sorted, no final newline: the one layout of every JSON export."""
    return json.dumps(value, indent=2, sort_keys=True)


def run_to_json(run: dict[str, Any]) -> str:
    """The run (metadata, metric and per-prompt rows) as JSON, indent 2, keys sorted, no final newline."""
    return to_json(run)


def rows_to_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """``rows`` in order under a ``columns`` header; lines end with ``\\n``, None is an empty field and a
    bool is 0 or 1, so that a spreadsheet or pandas reads the column as numbers, not True/False."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([int(v) if isinstance(v, bool) else v for v in (row[c] for c in columns)])
    return out.getvalue()


def run_to_csv(run: dict[str, Any]) -> str:
    """The metric rows, one line each in ``run["metrics"]`` order, under a ``CSV_COLUMNS`` header.

    Lines end with ``\\n``; a NULL (non-finite) value is an empty field.
    """
    return rows_to_csv(CSV_COLUMNS, run["metrics"])


def prompt_stats_to_csv(run: dict[str, Any]) -> str:
    """The per-prompt rows in ``run["prompt_stats"]`` order under a ``PROMPT_CSV_COLUMNS`` header.

    Lines end with ``\\n``; a NULL estimate is an empty field and ``probed`` is 0 or 1.
    """
    return rows_to_csv(PROMPT_CSV_COLUMNS, run["prompt_stats"])


def runs_to_csv(runs: Sequence[dict[str, Any]], table: str) -> str:
    """Several runs' metric (``table="metrics"``) or per-prompt rows in one CSV: a ``run_id`` column
    first, then the single-run columns; runs in the order given."""
    key, columns = ("metrics", CSV_COLUMNS) if table == "metrics" else ("prompt_stats", PROMPT_CSV_COLUMNS)
    rows = ({"run_id": run["id"], **row} for run in runs for row in run[key])
    return rows_to_csv(("run_id", *columns), rows)
