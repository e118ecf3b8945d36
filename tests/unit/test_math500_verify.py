"""The verifier on real data, over all 500 rows of MATH500: a row's own worked solution verifies against its
gold answer (>= 99%), and a solution checked against the next row's answer does not (>= 99% of pairs,
leaving out pairs whose two gold answers are themselves equivalent, e.g. `5` and `x=5`)."""

import pytest

from dibs.platform.tasks.math import ScoreStats, score
from dibs.platform.tasks.math_data import packaged_data_dir, read_rows

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def rows():
    return list(read_rows(packaged_data_dir() / "math500.jsonl"))  # shipped with the package: never skipped


def test_own_solution_verifies(rows):
    stats = ScoreStats()
    hits = sum(score(r["solution"], r["answer"], stats=stats) for r in rows)
    assert len(rows) == 500
    assert hits >= 0.99 * len(rows), stats.as_dict()
    assert stats.timeouts == 0


def test_other_rows_answer_does_not(rows):
    n, stats = len(rows), ScoreStats()
    pairs = [(i, (i + 1) % n) for i in range(n)]
    # Two rows whose gold answers are equivalent are no mismatch to detect.
    distinct = [
        (i, j)
        for i, j in pairs
        if not score(f"\\boxed{{{rows[j]['answer']}}}", rows[i]["answer"], stats=ScoreStats())
    ]
    wrong = sum(score(rows[i]["solution"], rows[j]["answer"], stats=stats) for i, j in distinct)
    assert len(distinct) >= 0.99 * n
    assert wrong <= 0.01 * len(distinct), stats.as_dict()
