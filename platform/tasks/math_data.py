"""Math data: training prompts from local files, the `qwen25-math-cot` template, the five evaluation sets.

Training files (MATH / NuminaMath style) are JSON Lines or Parquet with a `problem` (or `question`)
column, an optional `solution` and an optional `answer`; without an answer the gold answer is the last
`\\boxed{...}` of the solution (NuminaMath-CoT has no answer column). Rows with neither are skipped.

The evaluation sets ship with the package (platform/tasks/data/math_eval/README.md: provenance, licence,
fields) and each have their own format: MATH500 and AIME24 give `answer` as a string, Minerva's `answer`
is a worked solution whose last box is the gold answer, OlympiadBench's is a list of strings (`$...$`
delimited, joined here with ", "), AMC23's a float.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dibs.platform.core.config import ConfigError, TaskConfig
from dibs.platform.tasks.base import Problem, TaskData
from dibs.platform.tasks.math import gold_text, last_boxed

# docs/method.md §6: Qwen2.5-Math's chain-of-thought prompt, in its ChatML chat format. Rendered as text here
# (not through a tokenizer's chat template) so that any tokenizer, the demo's tiny one included, gets
# the same prompt.
TEMPLATES = {
    "qwen25-math-cot": (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{{}}.<|im_end|>\n<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "plain": "{problem}",
}
SUITES = {"math5": ("math500", "minerva_math", "olympiad_bench", "aime24", "amc23")}
DATA_DIR_ENV = "DIBS_MATH_EVAL_DIR"


@dataclass(frozen=True)
class MathProblem(Problem):
    """One problem: `prompt` is what the policy sees (template applied), `answer` the gold answer text,
    `problem` the text before the template, `solution` the file's worked solution ("" when it has none).
    No levels: `level` stays None."""

    answer: str
    problem: str = ""
    solution: str = ""


def render(problem: str, template: str) -> str:
    return TEMPLATES[template].format(problem=problem)


def packaged_data_dir() -> Path:
    """The five sets as shipped inside the package (package data, next to this module), so that a clone
    and an installed package find them alike."""
    return Path(__file__).resolve().parent / "data" / "math_eval"


def default_data_dir() -> Path:
    """`$DIBS_MATH_EVAL_DIR` when set, else the packaged sets."""
    import os

    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else packaged_data_dir()


def read_rows(path: str | Path) -> Iterator[dict]:
    """Rows of a .jsonl / .json (one object a line, or a list) or .parquet file."""
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise RuntimeError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        yield from pq.read_table(path).to_pylist()
        return
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        yield from json.loads(text)
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON object: {e.msg}") from None


def train_problem(row: dict, template: str) -> MathProblem | None:
    """A training row as a problem, or None when it has no problem text or no gold answer."""
    problem = row.get("problem") or row.get("question")
    solution = row.get("solution") or ""
    answer = row.get("answer")
    if answer is None or answer == "":
        answer = last_boxed(solution) if isinstance(solution, str) else None
    if not isinstance(problem, str) or answer is None:
        return None
    return MathProblem(render(problem, template), gold_text(answer), problem=problem, solution=solution)


def load_train_file(path: str | Path, template: str = "qwen25-math-cot") -> list[MathProblem]:
    """Every usable row of a training file, in file order."""
    problems = [p for p in (train_problem(r, template) for r in read_rows(path)) if p is not None]
    if not problems:
        raise ValueError(f"{path}: no row has a problem and a gold answer (answer, or a boxed solution)")
    return problems


# --- the evaluation sets ----------------------------------------------------------------------------


def _olympiad(row: dict) -> tuple[str, str]:
    # `context` is null in this release; kept in front of the problem when a row has one.
    problem = f"{row['context']}\n{row['problem']}" if row.get("context") else row["problem"]
    return problem, ", ".join(gold_text(a) for a in row["answer"])


def _minerva(row: dict) -> tuple[str, str]:
    gold = last_boxed(row["answer"])
    if gold is None:
        raise ValueError(f"minerva_math row {row.get('idx')}: solution has no boxed answer")
    return row["problem"], gold


EVAL_FORMATS: dict[str, Callable[[dict], tuple[str, str]]] = {
    "math500": lambda r: (r["problem"], gold_text(r["answer"])),
    "minerva_math": _minerva,
    "olympiad_bench": _olympiad,
    "aime24": lambda r: (r["problem"], gold_text(r["answer"])),
    "amc23": lambda r: (r["problem"], gold_text(r["answer"])),
}


def load_eval_set(
    name: str,
    data_dir: str | Path | None = None,
    *,
    template: str = "qwen25-math-cot",
    limit: int | None = None,
) -> list[MathProblem]:
    """The first `limit` problems (all when None) of one evaluation set, e.g. `math500`. A missing or
    malformed file is one ConfigError line naming the file (and the row)."""
    path = Path(data_dir or default_data_dir()) / f"{name}.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (the {name} evaluation set)")
    out: list[MathProblem] = []
    try:
        for n, row in enumerate(read_rows(path), 1):
            if limit is not None and len(out) >= limit:
                break
            problem, answer = _eval_row(name, row, f"{path}: row {n}")
            out.append(
                MathProblem(
                    render(problem, template), answer, problem=problem, solution=row.get("solution") or ""
                )
            )
    except (OSError, UnicodeDecodeError, ValueError) as e:  # unreadable, not UTF-8, not JSON
        raise ConfigError(str(e) if str(e).startswith(str(path)) else f"{path}: cannot read: {e}") from None
    if not out:
        raise ConfigError(f"{path}: no problems in the {name} evaluation set")
    return out


def _eval_row(name: str, row: object, where: str) -> tuple[str, str]:
    """(problem, gold answer) of one row of set `name`; a row of another shape is a ConfigError."""
    read = EVAL_FORMATS[name]
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(row).__name__}")
    try:
        problem, answer = read(row)
    except KeyError as e:
        raise ConfigError(f"{where}: no {e.args[0]!r} field") from None
    except (TypeError, AttributeError, ValueError) as e:
        raise ConfigError(f"{where}: not in the {name} format ({e})") from None
    if not isinstance(problem, str) or not problem.strip():
        raise ConfigError(f"{where}: the problem is not a non-empty string")
    return problem, answer


def load_suite(
    suite: str,
    data_dir: str | Path | None = None,
    *,
    template: str = "qwen25-math-cot",
    limit: int | None = None,
) -> dict[str, list[MathProblem]]:
    """{set name: problems} for a suite (`math5`: the paper's five sets, docs/method.md §6)."""
    return {name: load_eval_set(name, data_dir, template=template, limit=limit) for name in SUITES[suite]}


def split_train_test(problems: list[MathProblem], *, test_size: int, seed: int) -> tuple[list, list]:
    """A seeded shuffle: the first `test_size` problems are held out, the rest train."""
    if test_size >= len(problems):
        raise ValueError(f"task.test_size ({test_size}) leaves no training problems of {len(problems)}")
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    return [problems[i] for i in order[test_size:]], [problems[i] for i in order[:test_size]]


def build_math_task(cfg: TaskConfig, seed: int) -> TaskData:
    """`task.kind: math`: the train file's problems, `test_size` of them held out (train_size does not
    apply: the rest train); no SFT split (the paper trains the base model directly)."""
    problems = load_train_file(cfg.train_file, cfg.template)
    train, test = split_train_test(problems, test_size=cfg.test_size, seed=seed)
    return TaskData(sft=[], train=train, test=test)
