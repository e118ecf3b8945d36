"""Answer verification for the paper's math setting (docs/method.md §6: checked with Math-Verify).

`score(response, gold)` takes the response's final answer (its last `\\boxed{...}` / `\\boxed x` /
`\\fbox{...}` / `\\framebox{...}`, else a final "answer is ..." line) and asks Math-Verify whether it
equals the gold answer: equivalent forms (1/2, 0.5, `\\frac{1}{2}`), LaTeX vs plain text, intervals,
sets and tuples match, and units are stripped where Math-Verify's normalisation strips them.

Math-Verify's own timeout uses `signal.alarm`, which only works in the main thread of the main
interpreter, so it breaks in Ray workers' threads and in thread pools. We switch it off
(`parsing_timeout=None`, `timeout_seconds=None`) and run each check in a daemon thread that we wait on
for `timeout_s`; a check that overruns scores 0, is counted, and is interrupted best-effort (an
exception raised into the thread; sympy is pure Python, so it stops at its next bytecode).

Nothing raises: garbage (not a string, an unbalanced brace, a 10 MB answer, a parser error) scores
0 and is counted in a `ScoreStats`.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 5.0  # per check, as Math-Verify's own default
MAX_ANSWER_CHARS = 2000  # a longer "final answer" is garbage, not an answer to verify
_BOX_COMMANDS = ("\\boxed", "\\fbox", "\\framebox")
_BOX = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
_FINAL_LINE = re.compile(r"(?i)(?:final answer|answer)\s*(?:is|:)\s*:?\s*(.+)$")


class CheckTimeout(Exception):
    """A verification ran past its timeout."""


class _Abandoned(BaseException):
    """Raised into a check's thread after its timeout, so that it stops instead of burning a core."""


@dataclass
class ScoreStats:
    """What `score` saw; thread-safe counters. `errors` counts garbage inputs and parser failures."""

    calls: int = 0
    correct: int = 0
    no_answer: int = 0  # the response had no boxed answer or final-answer line
    errors: int = 0
    timeouts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {k: getattr(self, k) for k in ("calls", "correct", "no_answer", "errors", "timeouts")}


# The process-wide counter `score` uses when the caller passes none: `score(response, gold)` is the
# issue's signature, and "counts it" needs somewhere to count. Callers that want their own numbers
# (an evaluation, a test) pass `stats=`.
DEFAULT_STATS = ScoreStats()


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (nested braces), `\\boxed x`, `\\fbox{...}` or
    `\\framebox{...}`; None when there is none or its braces never close."""
    matches = list(_BOX.finditer(text))
    for m in reversed(matches):
        rest = text[m.end() :]
        if rest.startswith("{"):
            inner = _braced(rest)
            if inner is not None:
                return inner.strip()
            continue  # unbalanced: an earlier, well-formed box may still be the answer
        if rest[:1] == " ":  # `\boxed 5`: up to the end of the token
            token = re.match(r"\s*([^\s$]+)", rest)
            if token:
                return token.group(1).rstrip(".")
    return None


def _braced(s: str) -> str | None:
    """`s` starts with `{`: its content up to the matching `}` (escaped braces skipped)."""
    depth, i = 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return s[1:i]
        i += 1
    return None


def final_answer_line(text: str) -> str | None:
    """The last line of the form `... answer is X` / `Final answer: X`, X without `$` and trailing dots."""
    for line in reversed(text.strip().splitlines()):
        m = _FINAL_LINE.search(line)
        if m:
            answer = m.group(1).strip().rstrip(".").strip().strip("$").strip().rstrip(".").strip()
            return answer or None
    return None


def extract_answer(text: str) -> str | None:
    """The response's final answer: its last box, else its final-answer line."""
    boxed = last_boxed(text)
    return boxed if boxed is not None else final_answer_line(text)


@functools.cache
def _math_verify() -> Any:
    """Imported on first use (it pulls in sympy and the ANTLR LaTeX parser: seconds); its warning that
    the signal timeout is off is expected here (we time checks ourselves), so it is silenced."""
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify


def _parse(answer: str) -> list:
    """Math-Verify's parse of a bare answer, as a boxed expression (its LaTeX normalisation applies)."""
    mv = _math_verify()
    configs = [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]
    return mv.parse("\\boxed{" + answer + "}", extraction_config=configs, parsing_timeout=None)


@functools.lru_cache(maxsize=8192)
def _parse_gold(gold: str) -> tuple:
    """Gold answers repeat k times per problem: parse each once (sympy objects are immutable)."""
    return tuple(_parse(gold))


def gold_text(gold: Any) -> str:
    """A gold answer as text: `$...$` delimiters dropped, integral floats as integers (AMC: 27.0 -> 27)."""
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
        raise TypeError(f"gold answer must be a string or a number, got {type(gold).__name__}")
    if isinstance(gold, float):
        return str(int(gold)) if gold.is_integer() else repr(gold)
    text = str(gold).strip()
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return text


def _equivalent(answer: str, gold: str) -> bool:
    parsed_gold = list(_parse_gold(gold))
    parsed = _parse(answer)
    if not parsed_gold or not parsed:
        return False
    return bool(_math_verify().verify(parsed_gold, parsed, timeout_seconds=None))


def run_with_timeout(fn: Callable[[], T], timeout_s: float | None) -> T:
    """`fn()` in a daemon thread, waited on for `timeout_s` seconds (None: no limit, called inline).
    Raises CheckTimeout when it overruns, after raising `_Abandoned` into the thread."""
    if timeout_s is None:
        return fn()
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except _Abandoned:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            out["error"] = e

    worker = threading.Thread(target=target, name="dibs-math-verify", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(_Abandoned))
        raise CheckTimeout(f"verification took more than {timeout_s} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


def score(
    response: str, gold: str, *, stats: ScoreStats | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S
) -> float:
    """1.0 iff the response's final answer is equivalent to `gold` under Math-Verify, else 0.0.

    Never raises: a non-string response, a gold answer that is neither text nor a number, an answer
    longer than MAX_ANSWER_CHARS, a parser failure or a check past `timeout_s` scores 0 and is counted
    in `stats` (DEFAULT_STATS when None)."""
    stats = stats if stats is not None else DEFAULT_STATS
    stats.count("calls")
    try:
        if not isinstance(response, str):
            raise TypeError(f"response must be a string, got {type(response).__name__}")
        gold_str = gold_text(gold)
        answer = extract_answer(response)
        if answer is None:
            stats.count("no_answer")
            return 0.0
        if len(answer) > MAX_ANSWER_CHARS or len(gold_str) > MAX_ANSWER_CHARS:
            raise ValueError("answer too long to verify")
        ok = run_with_timeout(lambda: _equivalent(answer, gold_str), timeout_s)
    except CheckTimeout:
        stats.count("timeouts")
        return 0.0
    except Exception:  # noqa: BLE001 - garbage in, 0 out, counted (module docstring)
        stats.count("errors")
        return 0.0
    if ok:
        stats.count("correct")
    return 1.0 if ok else 0.0
