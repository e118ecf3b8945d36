"""How the command line reports a bad input: one `dibs: error:` line on stderr, capped, and an exit code."""

from __future__ import annotations

import sys

# The longest error line: enough for a file path, a dotted key and the problem; never a whole input.
ERROR_CAP = 300


def fail(msg: str, code: int = 2) -> int:
    line = " ".join(f"dibs: error: {msg}".split())  # one line, whatever the message holds
    if len(line) > ERROR_CAP:
        line = line[: ERROR_CAP - 3] + "..."
    print(line, file=sys.stderr)
    return code
