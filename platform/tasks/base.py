"""The data every task produces: problems with gold answers, in SFT / RL-train / held-out splits.

Below the tasks themselves (task.py, math_data.py), which both build a `TaskData`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    prompt: str  # "55+98-93+77="
    answer: int
    num_terms: int  # the difficulty level reported per eval


@dataclass(frozen=True)
class TaskData:
    sft: list[Problem]
    train: list[Problem]
    test: list[Problem]

    def fingerprint(self) -> str:
        """A short hash of every prompt, recorded with the run (docs/conventions.md, Code style)."""
        h = hashlib.sha256()
        for split in (self.sft, self.train, self.test):
            h.update("|".join(p.prompt for p in split).encode())
            h.update(b"#")
        return h.hexdigest()[:16]
