"""Answer extraction and Math-Verify scoring: hand-written cases, garbage, the timeout path."""

import threading
import time

import pytest

from dibs.platform.tasks import math as mt
from dibs.platform.tasks.math import ScoreStats, extract_answer, last_boxed, score

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        (
            "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
        ),  # nested braces
        ("\\boxed{1} first, then \\boxed{2}", "2"),  # the last box wins
        ("the answer is $\\boxed 5$", "5"),  # `\boxed x` without braces
        ("\\fbox{12} minutes", "12"),
        ("$\\framebox{204}$ minutes", "204"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces inside
        ("\\boxed{7} and then \\boxed{8", "7"),  # an unclosed last box falls back to the earlier one
        ("no box here", None),
        ("\\boxedx{3}", None),  # not the command
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Step 1 ...\nThe final answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("Final Answer: 42", "42"),
        ("answer: 1\nmore work\nThe answer is 7.", "7"),  # the last such line
        ("I think \\boxed{9}\nThe answer is 7.", "9"),  # a box beats the line
        ("nothing final here", None),
    ],
)
def test_final_answer_line_fallback(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "response, gold",
    [
        ("\\boxed{0.5}", "\\frac{1}{2}"),  # decimal vs fraction
        ("\\boxed{1/2}", "0.5"),  # plain vs decimal
        ("\\boxed{\\dfrac12}", "1/2"),  # LaTeX shorthand vs plain
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}"),
        ("\\boxed{x^2+2x+1}", "(x+1)^2"),  # symbolic equality
        ("\\boxed{[1, 3)}", "[1,3)"),  # interval
        ("\\boxed{(-\\infty, 2]}", "(-\\infty,2]"),
        ("\\boxed{\\{1,2,3\\}}", "\\{3,2,1\\}"),  # sets ignore order
        ("\\boxed{(1,2)}", "(1, 2)"),  # tuple
        ("\\boxed{-18, 2, -1}", "$2,-1,-18$"),  # OlympiadBench: a list of values, `$` delimiters
        ("\\boxed{5\\text{ cm}}", "5"),  # units stripped by Math-Verify's normalisation
        ("\\boxed{90^\\circ}", "90"),
        ("\\boxed{10\\%}", "10"),
        ("\\boxed{27}", 27.0),  # AMC golds are floats
        ("\\boxed 7", "7"),
        ("\\fbox{12}", "12"),
        ("The final answer is $\\frac{3}{4}$.", "0.75"),
    ],
)
def test_equivalent_forms_score_one(response, gold):
    assert score(response, gold, stats=ScoreStats()) == 1.0


@pytest.mark.parametrize(
    "response, gold",
    [
        ("\\boxed{2}", "3"),
        ("\\boxed{(2,1)}", "(1,2)"),  # tuples are ordered
        ("\\boxed{(1,3]}", "[1,3)"),  # open vs closed ends
        ("\\boxed{1} then \\boxed{2}", "1"),  # only the last box counts
    ],
)
def test_different_answers_score_zero(response, gold):
    assert score(response, gold, stats=ScoreStats()) == 0.0


@pytest.mark.parametrize(
    "response, gold, counter",
    [
        (None, "1", "errors"),
        (b"\\boxed{1}", "1", "errors"),
        (12, "12", "errors"),
        ("\\boxed{1}", None, "errors"),
        ("\\boxed{1}", ["1"], "errors"),
        ("\\boxed{" + "9" * 5000 + "}", "9", "errors"),  # too long to verify
        ("\\boxed{{{{" * 1000, "1", "no_answer"),  # unbalanced braces: nothing to verify
        ("x" * 2_000_000, "1", "no_answer"),  # huge string without an answer
        ("\\boxed{\\frac{}{}}\\left(", "1", None),  # malformed LaTeX: 0, however the parser fails
    ],
)
def test_garbage_scores_zero_and_is_counted(response, gold, counter):
    stats = ScoreStats()
    assert score(response, gold, stats=stats) == 0.0
    assert stats.calls == 1 and stats.correct == 0
    if counter is not None:
        assert getattr(stats, counter) == 1


def test_default_stats_count_when_none_given():
    before = mt.DEFAULT_STATS.as_dict()["calls"]
    score("\\boxed{1}", "1")
    assert mt.DEFAULT_STATS.as_dict()["calls"] == before + 1


def test_timeout_scores_zero_counts_and_stops_the_check(monkeypatch):
    stopped = threading.Event()

    def endless(answer, gold):  # a pure-Python loop, as a runaway sympy simplification
        try:
            while True:
                pass
        finally:
            stopped.set()

    monkeypatch.setattr(mt, "_equivalent", endless)
    stats = ScoreStats()
    out = {}
    # From a worker thread: where Math-Verify's own signal-based timeout cannot work.
    t = threading.Thread(
        target=lambda: out.setdefault("v", score("\\boxed{1}", "1", stats=stats, timeout_s=0.2))
    )
    t0 = time.perf_counter()
    t.start()
    t.join(10)
    assert out["v"] == 0.0 and stats.timeouts == 1 and stats.errors == 0
    assert time.perf_counter() - t0 < 5
    assert stopped.wait(5), "the abandoned check kept running"


def test_scoring_from_threads_matches_inline():
    from concurrent.futures import ThreadPoolExecutor

    pairs = [("\\boxed{0.5}", "1/2"), ("\\boxed{3}", "4"), ("\\boxed{[1,2]}", "[1,2]")] * 4
    stats = ScoreStats()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: score(*p, stats=stats), pairs))
    assert got == [1.0, 0.0, 1.0] * 4
    assert stats.as_dict() == {"calls": 12, "correct": 8, "no_answer": 0, "errors": 0, "timeouts": 0}
