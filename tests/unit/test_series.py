import pytest

from dibs.dashboards.series import series

pytestmark = pytest.mark.unit

ROWS = [
    {"step": 2, "name": "eval/accuracy", "value": 0.5, "rollouts_consumed": 512, "tokens_generated": 9000,
     "wall_seconds": 20.0},
    {"step": 0, "name": "eval/accuracy", "value": 0.25, "rollouts_consumed": 0, "tokens_generated": 0,
     "wall_seconds": 5.0},
    {"step": 1, "name": "rollout/reward_mean", "value": 0.1, "rollouts_consumed": 256,
     "tokens_generated": 4000, "wall_seconds": 10.0},
]


def test_series_orders_by_step_and_picks_axis():
    assert series(ROWS, "eval/accuracy") == [(0, 0.25), (2, 0.5)]
    assert series(ROWS, "eval/accuracy", x="rollouts_consumed") == [(0, 0.25), (512, 0.5)]


def test_series_rejects_unknown_axis():
    with pytest.raises(ValueError, match="x-axis must be one of"):
        series(ROWS, "eval/accuracy", x="epoch")
