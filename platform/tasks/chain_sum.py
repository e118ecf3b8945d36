"""The demo's task: reasoning-gym `chain_sum` problems with a chain-of-thought ending in \\boxed{}.

A prompt is the bare expression, `55+98-93+77=`; the worked solution adds one term at a time and
ends with the boxed answer: `55+98=153;153-93=60;60+77=137;\\boxed{137}` then EOS.
The reward is strict (docs/decisions.md): 1 only when the response stopped with EOS right after a final
boxed answer equal to the gold one; a truncated or rambling response scores 0. A problem's level is its
number of terms. Registered as `task.kind: reasoning_gym` (tasks/registry.py).
"""

from __future__ import annotations

import re

from dibs.platform.core.config import TaskConfig
from dibs.platform.tasks.base import Problem, TaskData

BOXED = "\\boxed{"
# The tiny model's vocabulary, in this order: it is part of the model cache key (learn/model.py).
ALPHABET = (*"0123456789+-=;", BOXED, "}")
_FINAL = re.compile(r";?\\boxed\{(-?\d+)\}$")
_TERM = re.compile(r"[+-]?\d+")


class ChainSumTask:
    """`task.kind: reasoning_gym`: chain sums from the config's term and digit ranges (tasks/base.py)."""

    kind = "reasoning_gym"
    alphabet = ALPHABET

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg

    def splits(self, seed: int) -> TaskData:
        return build_splits(self.cfg, seed)

    def reward(self, response: str, problem: Problem, *, stopped: bool) -> float:
        """1.0 iff the response ended with EOS right after a final boxed answer equal to the gold one."""
        if not stopped:
            return 0.0
        m = _FINAL.search(response)
        return 1.0 if m is not None and int(m.group(1)) == problem.answer else 0.0

    def well_formed(self, response: str, problem: Problem, *, stopped: bool) -> bool:
        """Stopped with EOS right after a boxed integer."""
        return stopped and _FINAL.search(response) is not None

    def level(self, problem: Problem) -> int | None:
        return problem.level

    def solution(self, problem: Problem) -> str:
        """The worked chain of thought, without EOS."""
        terms = _TERM.findall(problem.prompt[:-1])  # ["55", "+98", "-93", "+77"]: signs kept as written
        total, steps = int(terms[0]), []
        for t in terms[1:]:
            new = total + int(t)
            steps.append(f"{total}{t}={new}")
            total = new
        assert total == problem.answer, (problem, total)
        return ";".join(steps) + f";{BOXED}{total}}}"


def _generate(cfg: TaskConfig, *, seed: int, size: int) -> list[Problem]:
    """`size` problems with cfg.min_terms..cfg.max_terms terms."""
    # Imported here: reasoning-gym imports every one of its ~100 task families on first import.
    from reasoning_gym.arithmetic.chain_sum import ChainSumConfig, ChainSumDataset

    ds = ChainSumDataset(
        ChainSumConfig(
            min_terms=cfg.min_terms,
            max_terms=cfg.max_terms,
            min_digits=cfg.min_digits,
            max_digits=cfg.max_digits,
            seed=seed,
            size=size,
        )
    )
    out = []
    for item in ds:
        expr = item["metadata"]["expression"].replace(" ", "")
        out.append(Problem(f"{expr}=", int(item["answer"]), int(item["metadata"]["num_terms"])))
    return out


def _split_seed(seed: int, split: int) -> int:
    """reasoning-gym draws item i of a dataset from Random(seed + i), so datasets seeded 1 apart are the
    same sequence shifted by one. Splits (and run seeds) get index ranges 10^8 apart that never meet."""
    return seed * 10**9 + split * 10**8


def _disjoint(problems: list[Problem], exclude: set[str], size: int) -> list[Problem]:
    out: list[Problem] = []
    seen = set(exclude)
    for p in problems:
        if p.prompt not in seen:
            seen.add(p.prompt)
            out.append(p)
        if len(out) == size:
            break
    return out


def _sft_mix(cfg: TaskConfig, seed: int, held: set[str]) -> list[Problem]:
    """Warm-start problems: `sft_long_fraction` of them have min_terms+1..sft_max_terms terms, the rest
    min_terms; interleaved deterministically so any prefix has the same mix."""
    longest = min(cfg.sft_max_terms, cfg.max_terms)
    n_long = round(cfg.sft_size * cfg.sft_long_fraction) if longest > cfg.min_terms else 0
    short_cfg = cfg.model_copy(update={"max_terms": cfg.min_terms})
    long_cfg = cfg.model_copy(update={"min_terms": min(cfg.min_terms + 1, longest), "max_terms": longest})
    short = [
        p
        for p in _generate(short_cfg, seed=_split_seed(seed, 3), size=2 * cfg.sft_size)
        if p.prompt not in held
    ]
    long = [
        p for p in _generate(long_cfg, seed=_split_seed(seed, 4), size=2 * n_long + 1) if p.prompt not in held
    ][:n_long]
    short = short[: cfg.sft_size - len(long)]
    # Bresenham-style interleave: position i takes a long problem when the running share falls behind.
    out, li, si = [], 0, 0
    for i in range(len(short) + len(long)):
        if li < len(long) and (si >= len(short) or li * (len(short) + len(long)) <= i * len(long)):
            out.append(long[li])
            li += 1
        else:
            out.append(short[si])
            si += 1
    return out


def build_splits(cfg: TaskConfig, seed: int) -> TaskData:
    """Seeded, disjoint SFT / RL-train / held-out splits from the same generator.

    The held-out set is drawn first, then the RL prompts, then the SFT set; no split repeats an
    expression of an earlier one (short chains have few distinct expressions, so duplicates are
    filtered, not just differently seeded).
    The warm start only sees chains up to `sft_max_terms` terms, so RL has longer chains to improve on.
    """
    # Draw more than needed so that filtering duplicates still leaves `size` problems.
    test = _disjoint(_generate(cfg, seed=_split_seed(seed, 1), size=3 * cfg.test_size), set(), cfg.test_size)
    held = {p.prompt for p in test}
    train = _disjoint(
        _generate(cfg, seed=_split_seed(seed, 2), size=3 * cfg.train_size), held, cfg.train_size
    )
    sft = _sft_mix(cfg, seed, held | {p.prompt for p in train})
    for name, split, want in (("test", test, cfg.test_size), ("train", train, cfg.train_size)):
        if len(split) < want:
            raise ValueError(
                f"task: only {len(split)} distinct {name} problems for {name}_size={want}; "
                "widen the digit or term range"
            )
    return TaskData(sft=sft, train=train, test=test)
