"""The paper's math setting as a task (docs/method.md §6): `task.kind: math`.

Problems come from `task.train_file` (tasks/math_data.py), rewards from Math-Verify (tasks/math.py)
whether or not the response stopped (a truncated one rarely holds a final answer); a response is well
formed when a final answer can be extracted from it. Math problems have no difficulty levels.
"""

from __future__ import annotations

from dibs.platform.core.config import TaskConfig
from dibs.platform.tasks.base import TaskData
from dibs.platform.tasks.math import extract_answer, score
from dibs.platform.tasks.math_data import MathProblem, build_math_task

# The tiny character-level model the math smoke run builds (a real run loads `model.path` and its own
# tokenizer): the chain-sum vocabulary, so the math smoke model is the one it has always been.
ALPHABET = (*"0123456789+-=;", "\\boxed{", "}")


class MathTask:
    """`task.kind: math` (tasks/base.py has the Protocol)."""

    kind = "math"
    alphabet = ALPHABET

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg

    def splits(self, seed: int) -> TaskData:
        return build_math_task(self.cfg, seed)

    def reward(self, response: str, problem: MathProblem, *, stopped: bool) -> float:
        return score(response, problem.answer)

    def well_formed(self, response: str, problem: MathProblem, *, stopped: bool) -> bool:
        return stopped and extract_answer(response) is not None

    def level(self, problem: MathProblem) -> int | None:
        return None

    def solution(self, problem: MathProblem) -> str:
        """The train file's own worked solution (the paper trains without a warm start:
        warm_start.steps 0)."""
        if not problem.solution:
            raise ValueError(
                f"math: no worked solution for the warm start in task.train_file "
                f"(problem {problem.problem[:60]!r})"
            )
        return problem.solution
