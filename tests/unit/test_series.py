import math

import pytest

from dibs.dashboards.series import series

pytestmark = pytest.mark.unit

ROWS = [
    {
        "step": 2,
        "name": "eval/accuracy",
        "value": 0.5,
        "rollouts_consumed": 512,
        "tokens_generated": 9000,
        "wall_seconds": 20.0,
    },
    {
        "step": 0,
        "name": "eval/accuracy",
        "value": 0.25,
        "rollouts_consumed": 0,
        "tokens_generated": 0,
        "wall_seconds": 5.0,
    },
    {
        "step": 1,
        "name": "rollout/reward_mean",
        "value": 0.1,
        "rollouts_consumed": 256,
        "tokens_generated": 4000,
        "wall_seconds": 10.0,
    },
]


def test_series_orders_by_step_and_picks_axis():
    assert series(ROWS, "eval/accuracy") == [(0, 0.25), (2, 0.5)]
    assert series(ROWS, "eval/accuracy", x="rollouts_consumed") == [(0, 0.25), (512, 0.5)]


def test_series_rejects_unknown_axis():
    with pytest.raises(ValueError, match="x-axis must be one of"):
        series(ROWS, "eval/accuracy", x="epoch")


def test_series_against_updates_reads_the_budget_updates_rows():
    # budget/updates is 4 at step 1 and 8 at step 2; step 0 is 0 without a row; a step without a row
    # (a run recorded before the metric) gets NaN rather than dropping the point.
    rows = ROWS + [
        {
            "step": 1,
            "name": "budget/updates",
            "value": 4.0,
            "rollouts_consumed": 256,
            "tokens_generated": 4000,
            "wall_seconds": 10.0,
        },
        {
            "step": 2,
            "name": "budget/updates",
            "value": 8.0,
            "rollouts_consumed": 512,
            "tokens_generated": 9000,
            "wall_seconds": 20.0,
        },
    ]
    assert series(rows, "eval/accuracy", x="updates") == [(0, 0.25), (8.0, 0.5)]
    assert series(rows, "rollout/reward_mean", x="updates") == [(4.0, 0.1)]
    (x0, _), (x2, _) = series(ROWS, "eval/accuracy", x="updates")
    assert x0 == 0 and math.isnan(x2)
