"""Text exports of a run as returned by ``ResultsStore.get_run``."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

CSV_COLUMNS = ("step", "rollouts_consumed", "tokens_generated", "wall_seconds", "name", "value")


def run_to_json(run: dict[str, Any]) -> str:
    """The whole run (metadata and metric rows) as JSON, indent 2, keys sorted, no trailing newline."""
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
