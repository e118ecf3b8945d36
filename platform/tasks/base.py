"""What a task is: the `Task` Protocol, the `Problem` every task hands out, and its `TaskData` splits.

The loop, the warm start, the evaluation, the tokenizer and the allocators see a task only through this
Protocol; which task a run trains on is the config's `task.kind`, looked up in tasks/registry.py. The two
shipped tasks are `ChainSumTask` (tasks/chain_sum.py) and `MathTask` (tasks/math_task.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Problem:
    """One problem. Only the task that made it reads `answer`: chain sums give an int, math the gold
    answer's text, so the type is the union and no caller outside the task looks inside."""

    prompt: str  # what the policy sees: "55+98-93+77="
    answer: int | str
    level: int | None = None  # the difficulty reported per evaluation (chain sums: terms); None: none


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


class Task(Protocol):
    """A task, made by its registered factory from the run's `TaskConfig` (tasks/registry.py)."""

    kind: str  # the `task.kind` it is registered under, for messages
    # What the locally built tokenizer knows (learn/model.py): each entry of one character is a character
    # of the vocabulary, each longer one a whole token (`\\boxed{`). Part of the tiny model's cache key.
    alphabet: Sequence[str]

    def splits(self, seed: int) -> TaskData:
        """Seeded, disjoint SFT / RL-train / held-out splits: the same seed, the same problems."""
        ...

    def reward(self, response: str, problem: Problem, *, stopped: bool) -> float:
        """The reward of one decoded response (no EOS); `stopped`: it ended with EOS."""
        ...

    def well_formed(self, response: str, problem: Problem, *, stopped: bool) -> bool:
        """Format only, whatever the answer (eval/format_rate)."""
        ...

    def level(self, problem: Problem) -> int | None:
        """The problem's difficulty level, reported as eval/accuracy_terms_<level>; None: not reported."""
        ...

    def solution(self, problem: Problem) -> str:
        """The worked solution the warm start trains on, without EOS."""
        ...
