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


@pytest.mark.slow  # trains real cells (~4 s); the scripted tests below cover Stop fast
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


# -- the card's phase machine (a scripted sweeps.run: no training, each test well under 2 s) --
def _row(cell, status="done"):
    v = cell.values
    return {"method": v["method"], "lam": v.get("lam"), "seed": v["seed"], "status": status,
            "test_mse": 1e-3 * (1 + v["seed"]), "drift_energy_max": 1e-2, "drift_energy_ood_max": 1e-1,
            "message": ""}


@pytest.fixture
def scripted(monkeypatch):
    """``sweeps.run`` replaced by one that sends a row per cell, waiting on ``go`` before
    each; ``fail`` names the cells (by index) whose row says ``error``; ``raise_`` makes
    the sweep itself raise after its first row."""
    import threading

    script = {"go": threading.Semaphore(0), "fail": set(), "raise_": None}

    def run(cells, *, client=None, on_row=None, stop_event=None, **_):
        for i, cell in enumerate(cells):
            while not script["go"].acquire(timeout=0.01):
                if stop_event.is_set():
                    for rest in cells[i:]:
                        on_row(_row(rest, "stopped"))
                    return
            on_row(_row(cell, "error" if i in script["fail"] else "done"))
            if script["raise_"]:
                raise script["raise_"]

    monkeypatch.setattr(sweep_view.sweeps, "run", run)
    return script


def _step(view, script, rows: int) -> None:
    """Let ``rows`` more cells finish and drain them onto the card."""
    for _ in range(rows):
        script["go"].release()
    want = (0 if view.rows is None else len(view.rows)) + rows
    for _ in range(200):
        view.drain()
        if view.rows is not None and len(view.rows) >= want:
            return
        time.sleep(0.01)
    raise AssertionError(f"{want} rows expected, have {view.rows}")


def _seen(view) -> list:
    seen = []
    view.param.watch(lambda e: seen.append((e.new, view.status_kind)), "phase")
    return seen


def test_a_sweep_goes_idle_training_done_and_its_colour_follows(scripted):
    dash, view = _dashboard()
    view.param.update(lams="1", n_seeds=2)  # baseline ×2 + penalty ×2
    seen = _seen(view)
    assert (view.phase, view.running, view._stop_w.disabled) == ("idle", False, True)
    view.start()
    assert (view.phase, view.running, view.status_kind) == ("training", True, "running")
    assert view._start_w.disabled and not view._stop_w.disabled
    _step(view, scripted, 1)
    assert view.phase == "training" and view.status.startswith("1 of 4 runs done"), view.status
    _step(view, scripted, 3)
    _finish(view)
    assert (view.phase, view.running, view.status_kind) == ("done", False, "success")
    assert view.status.startswith("Sweep finished: 4 runs (0 failed)"), view.status
    assert "cl-status success" in view._status_w.object
    assert not view._start_w.disabled and view._stop_w.disabled
    assert seen == [("training", "running"), ("done", "success")]  # progress changes no phase
    view.stop()  # Stop after the end changes nothing
    assert view.phase == "done"
    dash.close()


def test_stop_goes_through_stopping_to_stopped(scripted):
    dash, view = _dashboard()
    view.param.update(lams="1", n_seeds=2)
    seen = _seen(view)
    view.start()
    _step(view, scripted, 1)
    view._stop_w.clicks += 1
    assert (view.phase, view.running, view.status_kind) == ("stopping", True, "warning")
    assert view._stop_w.disabled and view._start_w.disabled  # stopping: nothing to press yet
    _finish(view)
    assert (view.phase, view.running, view.status_kind) == ("stopped", False, "warning")
    assert view.status.startswith("Sweep stopped: 1 of 4 runs kept"), view.status
    assert seen == [("training", "running"), ("stopping", "warning"), ("stopped", "warning")]
    view.start()  # a new sweep from an ended one
    assert view.phase == "training" and view.rows is None
    view.stop()
    _finish(view)
    dash.close()


def test_a_failing_cell_is_a_row_and_a_failing_sweep_fails(scripted):
    dash, view = _dashboard()
    view.param.update(lams="1", n_seeds=1)
    scripted["fail"] = {1}
    view.start()
    _step(view, scripted, 2)
    _finish(view)
    assert view.phase == "done" and view.status.startswith("Sweep finished: 2 runs (1 failed)"), view.status
    scripted["raise_"] = RuntimeError("the cluster went away")
    view.start()
    _step(view, scripted, 1)
    _finish(view)
    assert (view.phase, view.running, view.status_kind) == ("failed", False, "danger")
    assert view.status == "! The sweep stopped: RuntimeError: the cluster went away"
    assert "cl-status danger" in view._status_w.object and "!" not in view._status_w.object
    dash.close()


def test_a_restart_leaves_the_stopped_sweeps_end_behind(scripted):
    dash, view = _dashboard()
    view.param.update(lams="1", n_seeds=1)
    view.start()
    first = view._thread
    view.start()  # the first sweep is stopped; its end must not end the second
    first.join(10)
    view.drain()
    assert view.phase == "training" and view.rows is None
    _step(view, scripted, 2)
    _finish(view)
    assert view.phase == "done" and len(view.rows) == 2
    dash.close()


def test_opening_a_file_is_idle_and_a_refusal_changes_no_phase(scripted):
    dash, view = _dashboard()
    view.param.update(lams="1", n_seeds=1)
    view.start()
    view.lams = "-1"
    view._start_w.clicks += 1  # refused: the running sweep runs on
    assert view.status.startswith("! λ ladder") and view.status_kind == "warning"
    assert view.phase == "training"
    rows = "method,seed,status,test_mse,drift_energy_max\nbaseline,0,done,0.1,0.2\n"
    view.load("r.csv", rows.encode())
    assert (view.phase, view.running, view.status_kind) == ("idle", False, "info")
    view._thread.join(10)
    view.drain()
    assert view.phase == "idle" and len(view.rows) == 1  # the stopped sweep's rows went nowhere
    dash.close()


@pytest.mark.parametrize("start, to", [("idle", "done"), ("idle", "stopping"), ("done", "stopping"),
                                       ("stopped", "done"), ("failed", "stopping"), ("done", "done")])
def test_an_illegal_transition_is_refused(start, to):
    view = sweep_view.SweepView(session=app.LabSession())
    path = {"idle": [], "done": ["training", "done"], "stopped": ["training", "stopped"],
            "failed": ["training", "failed"]}[start]
    for p in path:
        view._enter(p, p)
    with pytest.raises(ValueError, match=f"from {start!r} to {to!r}"):
        view._enter(to, "no")
    assert view.phase == start and view.status == (path[-1] if path else "")


def test_running_and_phase_are_read_only_outside():
    view = sweep_view.SweepView(session=app.LabSession())
    for name, value in (("running", True), ("phase", "training")):
        with pytest.raises(TypeError):
            setattr(view, name, value)
        with pytest.raises(TypeError):
            view.param.update(**{name: value})
    assert (view.phase, view.running) == ("idle", False)
