"""Text exports of a run as returned by ``ResultsStore.get_run``."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

CSV_COLUMNS = ("step", "rollouts_consumed", "tokens_generated", "wall_seconds", "name", "value")
PROMPT_CSV_COLUMNS = ("step", "prompt_id", "p_hat", "g_hat", "n_alloc", "accepted", "probed")


def run_to_json(run: dict[str, Any]) -> str:
    """The run (metadata, metric and per-prompt rows) as JSON, indent 2, keys sorted, no final newline."""
    return json.dumps(run, indent=2, sort_keys=True)


def run_to_csv(run: dict[str, Any]) -> str:
    """The metric rows, one line each in ``run["metrics"]`` order, under a ``CSV_COLUMNS`` header.

    Lines end with ``\\n``; a NULL (non-finite) value is an empty field.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in run["metrics"]:
        writer.writerow([row[column] for column in CSV_COLUMNS])
    return out.getvalue()


def prompt_stats_to_csv(run: dict[str, Any]) -> str:
    """The per-prompt rows in ``run["prompt_stats"]`` order under a ``PROMPT_CSV_COLUMNS`` header.

    Lines end with ``\\n``; a NULL estimate is an empty field and ``probed`` is 0 or 1, so that a
    spreadsheet or pandas reads the column as numbers rather than the strings True/False.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PROMPT_CSV_COLUMNS)
    for row in run["prompt_stats"]:
        writer.writerow([int(row[c]) if c == "probed" else row[c] for c in PROMPT_CSV_COLUMNS])
    return out.getvalue()
