"""Studio figures (pages/charts_history.py) that carry a decision: how a shopper's history is laid out."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pages import charts_history


def _history(times) -> pd.DataFrame:
    n = len(times)
    return pd.DataFrame({"when": pd.to_datetime(times, unit="s"), "item_id": [f"i{j}" for j in range(n)],
                         "title": [f"Product {j}" for j in range(n)], "category": ["A", "B"] * (n // 2) + ["A"] * (n % 2),
                         "event": ["purchase"] * n})


def test_a_one_day_history_is_drawn_in_order_with_whole_steps():
    """11 events of a one-day log share one timestamp: in time they are 2 overlapping dots on an axis ticked in
    fractions of a millisecond; in order they are 11 dots, one per whole step, oldest first."""
    frame = _history([1_537_401_600] * 11)
    assert not charts_history.timeline_by_time(frame["when"])
    fig = charts_history.history_timeline(frame)
    xs = np.sort(np.concatenate([np.asarray(t.x, dtype=float) for t in fig.data]))
    assert xs.tolist() == list(range(1, 12))
    assert fig.layout.xaxis.title.text == "event, oldest first" and fig.layout.xaxis.dtick == 1
    assert all("Product" in str(t.customdata) for t in fig.data)  # the title is on hover


def test_a_history_with_its_own_times_is_drawn_in_time():
    frame = _history(np.arange(6) * 3600 + 1_537_401_600)
    assert charts_history.timeline_by_time(frame["when"])
    fig = charts_history.history_timeline(frame)
    assert pd.api.types.is_datetime64_any_dtype(pd.Series(np.concatenate([t.x for t in fig.data])))
    assert not charts_history.timeline_by_time(frame["when"].iloc[:1])  # one event: nothing to space
    assert not charts_history.timeline_by_time(pd.Series(np.arange(5)))  # no timestamps: positions


def test_the_training_figure_draws_the_popularity_yardstick_beside_the_validation_curve():
    from pages import charts as studio_charts

    fig = studio_charts.training_curves([(0.5, 2.0), (1.0, 1.5)], [(1, 0.02), (2, 0.03)], reference=0.012)
    line = next(t for t in fig.data if t.name.startswith("most popular products"))
    assert list(line.y) == [0.012, 0.012] and list(line.x) == [1, 2] and line.yaxis == "y2"
    assert line.name == "most popular products: 0.012"
    assert not [t for t in studio_charts.training_curves([], [(1, 0.02)]).data if t.name.startswith("most popular")]
