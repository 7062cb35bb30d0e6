"""The dashboard's Sweep card (no browser): a sweep from the current settings fills the
front and the ladder, bad input is refused on the card, a results file opens."""

from __future__ import annotations

import time

import holoviews as hv
import panel as pn
import pytest

import app
from app import sweep_view
from conserv_core import pareto


def _dashboard():
    dash = app.Dashboard(autodrain=False, sync_url=False)
    s = dash.session
    s.methods = ["baseline", "penalty"]
    s.config.param.update(steps=10, horizon=0.5, n_test=2, width=16)
    view = dash.sweep_view
    view._card.collapsed = False  # opening the card builds it
    return dash, view


def _finish(view) -> None:
    view._thread.join(120)
    assert not view._thread.is_alive()
    view.drain(force=True)


@pytest.mark.slow
def test_a_sweep_from_the_current_settings_fills_the_front_and_the_ladder():
    dash, view = _dashboard()
    view.param.update(lams="1, 100", n_seeds=2)
    cells = view.cells()
    # the baseline reads no λ: once per seed; the penalty once per λ and seed
    assert sorted((c.values["method"], c.values.get("lam")) for c in cells) == sorted(
        [("baseline", None)] * 2 + [("penalty", 1.0)] * 2 + [("penalty", 100.0)] * 2)
    view.start()
    assert view.running
    _finish(view)
    assert not view.running
    rows = view.rows
    assert len(rows) == 6 and (rows["status"] == "done").all(), rows[["method", "status", "message"]]
    assert view.status.startswith("Sweep finished: 6 runs"), view.status
    # the settings in use reached the runs (10 steps each), the seeds are 0 and 1
    assert set(rows["steps"]) == {10} and set(rows["seed"]) == {0, 1}
    layout = view._pareto.object
    assert isinstance(layout, hv.Layout) and len(layout) == 2  # in and out of distribution
    ladder = pareto.ladder(rows, "energy")
    assert ladder["rung"].tolist() == ["baseline", "penalty λ=1", "penalty λ=100"]
    assert isinstance(view._ladder.object, hv.Layout) and len(view._ladder.object) == 2
    pn.panel(view).get_root()  # the whole card renders
    csv = view._csv().getvalue()
    assert csv.count("\n") == 7  # a header and six rows
    # the rows as a results file, opened on another page; a file of something else is named
    other = app.Dashboard(autodrain=False, sync_url=False).sweep_view
    other._card.collapsed = False
    other.load("pend.csv", csv.encode())
    assert len(other.rows) == 6 and other.status.startswith("Opened"), other.status
    assert isinstance(other._pareto.object, hv.Layout)
    other._file_w.param.update(filename="notes.csv", value=b"a,b\n1,2\n")
    assert other.status.startswith("! results file") and "is not a sweep" in other.status
    assert len(other.rows) == 6  # what was shown stays
    dash.close()


def test_bad_input_is_refused_on_the_card_before_anything_runs():
    dash, view = _dashboard()
    view.lams = "1, -3"
    view._start_w.clicks += 1
    assert view.status.startswith("! λ ladder must be numbers from 0 to") and "-3" in view.status
    assert view._thread is None and not view.running
    view.param.update(lams=", ".join(str(x) for x in range(1, 20)), n_seeds=10)
    view._start_w.clicks += 1
    assert f"at most {sweep_view.MAX_CELLS} runs" in view.status, view.status
    assert view._thread is None
    dash.close()


def test_stop_keeps_the_rows_already_in():
    dash, view = _dashboard()
    view.param.update(lams="1, 10, 100", n_seeds=2)
    view.start()
    while view.rows is None and view._thread.is_alive():  # the first row in, then Stop
        view.drain()
        time.sleep(0.05)
    view.stop()
    _finish(view)
    done = int((view.rows["status"] == "done").sum())
    assert 1 <= done < 8, view.rows[["method", "status"]]
    assert view.status.startswith("Sweep stopped"), view.status
    dash.close()
