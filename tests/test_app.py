"""The dashboard without a browser: widgets, a short live run, Stop, Reset, errors, URLs.

Runs are real (tiny models, short rollouts). The periodic callback is replaced by calling
``Dashboard.drain()`` from the test, which is exactly what the callback does when served.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import panel as pn
import pytest
from bokeh.models import ColumnDataSource
from panel.io.location import Location

import app
from app import session as app_session
from app import theme
from conserv_core import presets, runs, training
from conserv_core.systems import ALL_SYSTEMS

pytestmark = pytest.mark.timeout(120)


def tiny(dash: app.Dashboard, steps: int = 24, width: int = 8, horizon: float | None = 2.0) -> None:
    """Set a tiny run through the widgets (the path a user's input takes)."""
    w = dash.controls.config_widgets
    w["steps"].value = steps
    w["width"].value = width
    if horizon is not None:
        w["horizon"].value = horizon
    dash.session.evals_per_run = 3


def drain_until(dash: app.Dashboard, cond, timeout: float = 60.0) -> float:
    """Drain like the periodic callback until ``cond()``; return the seconds it took."""
    t0 = time.perf_counter()
    while not cond():
        dash.drain()
        if time.perf_counter() - t0 > timeout:
            raise AssertionError(f"timed out; status: {dash.session.status}")
        time.sleep(0.02)
    dash.drain()
    return time.perf_counter() - t0


def click(button) -> None:
    button.clicks += 1  # the same on_click path a browser click takes


def cds_lengths(root, column: str) -> list[int]:
    return [len(m.data[column]) for m in root.select({"type": ColumnDataSource}) if column in m.data]


@pytest.fixture
def dash():
    d = app.Dashboard(autodrain=False)
    yield d
    d.close()
    assert not d.session.errors or d.session.errors == ["RuntimeError: something broke"], d.session.errors


@pytest.mark.slow
def test_dashboard_and_every_view_render(dash):
    assert pn.panel(dash).get_root() is not None
    for view in (dash.controls, dash.status_view, dash.drift_view, dash.loss_view, dash.system_view,
                 dash.multiplier_view, dash.teaching_view):
        assert pn.panel(view).get_root() is not None
    assert dash.template() is not None


def test_controls_come_from_param_bounds(dash):
    w = dash.controls.config_widgets
    assert (w["steps"].start, w["steps"].end) == training.TrainConfig.param.steps.bounds
    assert "from 1 to 200,000" in w["steps"].description  # the engine's bounds, beside the box
    mass = dash.controls._system_widgets["pendulum"][0]
    mass.value = ALL_SYSTEMS["pendulum"].param.mass.bounds[1] * 2  # beyond the engine's bounds
    assert dash.session.systems["pendulum"].mass == mass.value != ALL_SYSTEMS["pendulum"].param.mass.bounds[1] * 2
    w["steps"].value = 10**7  # refused with its range, and the box shows the value in use
    assert dash.session.config.steps != 10**7 and w["steps"].value == dash.session.config.steps
    assert "steps" in dash.session.status and "to 200,000" in dash.session.status
    assert "cuda" not in w["device"].options or "cuda" in app_session.available_devices()
    # the methods offered follow the system
    dash.session.system = "flow"
    assert list(dash.controls.methods.options.values()) == ["baseline", "divfree", "penalty", "auglag"]
    assert dash.session.methods == ["baseline", "divfree", "penalty"]


@pytest.mark.slow
def test_short_run_streams_into_plots_and_finishes(dash):
    tiny(dash)
    root = pn.panel(dash).get_root()
    status0 = dash.session.status
    click(dash.controls.train_button)
    s = dash.session
    assert s.running and dash.controls.stop_button.disabled is False
    drain_until(dash, lambda: not s.running)
    data = s.data
    assert s.status_kind == "success", s.status
    assert s.status != status0 and "Largest energy drift" in s.status and "truth" in s.status
    assert s.progress == 100 and "steps/s" in s.speed
    for m in ["baseline", "hnn", "penalty"]:
        assert len(data.loss.data[m]["loss"]) >= 10, m
        assert len(data.drift["energy"].data[m]["t"]) > 10, m
        assert data.finished[m].status == "done"
    assert len(data.drift["energy"].data["truth"]["t"]) > 10
    assert len(data.drift["energy"].data["hnn:own"]["t"]) > 10  # the HNN's own energy, dotted
    assert "energy_grid" in data.views.data["hnn"]  # the HNN's level sets for the phase portrait
    assert isinstance(dash.system_view._box.objects[0], pn.Column)  # built, not the placeholder
    # the page's plots hold the data (their ColumnDataSources were updated by the drain)
    assert max(cds_lengths(root, "loss")) >= 10
    assert max(cds_lengths(root, "drift")) > 10
    assert dash.controls.stop_button.disabled is True


@pytest.mark.slow
def test_curves_reach_the_page_as_new_points_not_new_plots(dash):
    """Drawing is cheap per update: the loss curves grow by streamed points (never a
    whole new data set), the figures are the ones built before Train, and their axes
    follow the data."""
    from bokeh.document import Document
    from bokeh.document.events import ColumnDataChangedEvent, ColumnsStreamedEvent
    from bokeh.models import Plot

    tiny(dash, steps=60)
    doc = Document()
    root = pn.panel(dash).get_root(doc)
    doc.add_root(root)
    loss_sources = [m for m in root.select({"type": ColumnDataSource}) if "loss" in m.data]
    plots_before = {p.id for p in root.select({"type": Plot})}
    events = []
    doc.on_change(events.append)
    click(dash.controls.train_button)
    s = dash.session
    drain_until(dash, lambda: not s.running)
    assert s.status_kind == "success", s.status
    mine = {id(m) for m in loss_sources}
    streamed = [e for e in events if isinstance(e, ColumnsStreamedEvent) and id(e.model) in mine]
    replaced = [e for e in events if isinstance(e, ColumnDataChangedEvent) and id(e.model) in mine]
    assert len(streamed) >= 3 and not replaced
    # every point arrived exactly once, in order
    lengths = sorted(len(m.data["loss"]) for m in loss_sources)
    assert lengths == sorted(len(h) for h in s.data.history.values())
    for m in loss_sources:
        assert np.all(np.diff(m.data["step"]) > 0)
    # the same figures (those a browser already has), their axes around the data
    assert {p.id for p in root.select({"type": Plot})} >= plots_before
    loss_plot = next(p for p in root.select({"type": Plot}) if p.title.text == "Training loss")
    assert loss_plot.x_range.end == s.config.steps
    lo = min(np.nanmin(m.data["loss"]) for m in loss_sources)
    assert 0 < loss_plot.y_range.start < lo


@pytest.mark.slow
def test_plots_grow_while_training(dash):
    tiny(dash, steps=200, horizon=1.0)
    dash.session.evals_per_run = 8
    root = pn.panel(dash).get_root()  # one page: the run's plots are added to it at Train
    click(dash.controls.train_button)
    s = dash.session
    drain_until(dash, lambda: s.data.n_points > 0 and len(s.data.latest_eval) == 3)
    first = max(cds_lengths(root, "loss"))
    progress = s.progress
    drain_until(dash, lambda: s.progress > progress + 20 or not s.running)
    assert max(cds_lengths(root, "loss")) > first
    assert max(cds_lengths(root, "drift")) > 0
    click(dash.controls.stop_button)
    drain_until(dash, lambda: not s.running, timeout=5)


def test_stop_ends_within_a_second_and_keeps_curves(dash):
    tiny(dash, steps=100_000, horizon=1.0)
    click(dash.controls.train_button)
    s = dash.session
    run = s.run
    drain_until(dash, lambda: s.data.n_points >= 3)
    t0 = time.perf_counter()
    click(dash.controls.stop_button)
    assert run.finished.wait(timeout=5)
    stopped_in = time.perf_counter() - t0
    drain_until(dash, lambda: not s.running, timeout=5)
    assert stopped_in < 1.0, f"the worker took {stopped_in:.2f} s to stop"
    assert s.status_kind == "warning" and "Stopped at step" in s.status
    assert all(f.status == "stopped" for f in s.data.finished.values())
    kept = {m: len(s.data.loss.data[m]["loss"]) for m in s.data.methods}
    assert min(kept.values()) > 0
    time.sleep(0.2)
    dash.drain()
    assert {m: len(s.data.loss.data[m]["loss"]) for m in s.data.methods} == kept
    assert not run.thread.is_alive()


def _final_curves(s: app_session.LabSession) -> dict:
    """Every method's last drift curves and its loss history: what a run ends with."""
    return {m: (tuple((q, tuple(c.rel)) for q, c in sorted(ev.drift.items())), ev.test_mse,
                tuple(p.loss for p in s.data.history[m]))
            for m, ev in s.data.latest_eval.items()}


@pytest.mark.slow
def test_pause_step_resume_ends_with_the_curves_of_an_uninterrupted_run():
    plain = app.Dashboard(autodrain=False)
    paused = app.Dashboard(autodrain=False)
    try:
        for d in (plain, paused):
            tiny(d, steps=60)
        click(plain.controls.train_button)
        drain_until(plain, lambda: not plain.session.running)
        assert plain.session.phase == "done", plain.session.status
        s, c = paused.session, paused.controls
        assert c.pause_button.disabled and c.step_button.disabled  # no run yet
        click(c.train_button)
        assert not c.pause_button.disabled and c.step_button.disabled
        click(c.pause_button)
        assert s.paused and c.pause_button.label == "Resume"
        drain_until(paused, lambda: s.phase == "paused")
        at = s._paused_step
        assert f"Paused at step {at:,} of 60" in s.status and "Step runs one more evaluation interval" in s.status
        assert s.running and not c.step_button.disabled and not c.stop_button.disabled
        # the curves shown are those of the paused models: every method evaluated at that step
        assert {m: ev.step for m, ev in s.data.latest_eval.items()} == {m: at for m in s.data.methods}
        click(c.step_button)
        assert s.phase == "training" and "Stepping" in s.status and c.step_button.disabled
        drain_until(paused, lambda: s.phase == "paused")
        assert s._paused_step == at + 20 and f"Paused at step {at + 20:,}" in s.status
        click(c.pause_button)  # Resume
        assert not s.paused and s.phase == "training" and c.pause_button.label == "Pause"
        drain_until(paused, lambda: not s.running)
        assert s.phase == "done", s.status
        assert c.pause_button.disabled and c.step_button.disabled
        assert _final_curves(s) == _final_curves(plain.session)
        assert not s.errors
    finally:
        plain.close()
        paused.close()


def test_stop_while_paused_ends_the_run_and_keeps_its_curves(dash):
    tiny(dash, steps=60)
    s = dash.session
    dash.train()
    dash.pause()
    drain_until(dash, lambda: s.phase == "paused")
    shown = dict(s.data.latest_eval)
    click(dash.controls.stop_button)
    drain_until(dash, lambda: not s.running, timeout=10)
    assert s.phase == "stopped" and "Stopped at step" in s.status and not s.paused
    assert all(f.status == "stopped" for f in s.data.finished.values())
    assert s.data.latest_eval == shown
    dash.step(), dash.resume()  # after the end: nothing happens, nothing breaks
    assert s.phase == "stopped" and not s.errors


def test_reset_stops_and_clears(dash):
    tiny(dash, steps=100_000, horizon=1.0)
    click(dash.controls.train_button)
    s = dash.session
    run = s.run
    drain_until(dash, lambda: s.data.n_points > 0)
    click(dash.controls.reset_button)
    assert s.data is None and not s.running and s.progress == 0
    assert run.finished.wait(timeout=5)
    assert "Cleared" in s.status
    assert dash.drain() == 0  # the old run's records are dropped, not drawn


def test_changing_system_stops_the_run_cleanly(dash):
    tiny(dash, steps=100_000, horizon=1.0)
    click(dash.controls.train_button)
    s = dash.session
    run = s.run
    drain_until(dash, lambda: s.data.n_points > 0)
    dash.controls.system.value = "nbody"
    assert run.finished.wait(timeout=5)
    assert s.data is None and not s.running
    assert s.status_kind == "warning" and "system changed" in s.status
    assert s.methods == theme.default_methods("nbody") == ["baseline", "hnn", "penalty"]


def test_two_dashboards_do_not_share_state():
    a, b = app.Dashboard(autodrain=False), app.Dashboard(autodrain=False)
    try:
        assert a.session is not b.session and a.session.config is not b.session.config
        a.controls.config_widgets["seed"].value = 42
        a.controls._system_widgets["pendulum"][3].value = 0.3  # damping
        b.controls.methods.value = ["baseline"]
        assert b.session.config.seed == 0 and b.session.systems["pendulum"].damping == 0.0
        assert a.session.methods == theme.default_methods("pendulum")
        tiny(a)
        tiny(b)
        b.controls.config_widgets["steps"].value = 12
        click(a.controls.train_button)
        click(b.controls.train_button)
        drain_until(a, lambda: not a.session.running)
        drain_until(b, lambda: not b.session.running)
        assert a.session.data.methods == theme.default_methods("pendulum")
        assert b.session.data.methods == ["baseline"]
        assert b.session.data.progress["baseline"].step == 12
        assert a.session.data.progress["baseline"].step == 24
        assert a.session.data.system.damping == 0.3 and b.session.data.system.damping == 0.0
        assert a.session.data.loss is not b.session.data.loss
    finally:
        a.close()
        b.close()


def test_diverging_run_reports_nan_and_keeps_curves(dash, monkeypatch):
    real_step = training.Trainer.step

    def step(self):
        if self.method.key == "hnn" and self.step_count >= 8:
            raise FloatingPointError(f"loss became nan at step {self.step_count + 1} (lr=0.005); kept the weights")
        return real_step(self)

    monkeypatch.setattr(training.Trainer, "step", step)
    tiny(dash, steps=24)
    click(dash.controls.train_button)
    s = dash.session
    drain_until(dash, lambda: not s.running)
    assert s.status_kind == "danger"
    assert "NaN" in s.status and "HNN" in s.status and "kept" in s.status
    assert s.data.finished["hnn"].status == "diverged"
    assert len(s.data.loss.data["hnn"]["loss"]) >= 5  # the curve up to the bad step stays
    assert len(s.data.drift["energy"].data["hnn"]["t"]) > 0
    assert s.data.finished["baseline"].status == "done"


def test_callback_errors_go_to_the_status_line(dash, monkeypatch):
    def boom():
        raise RuntimeError("something broke")

    monkeypatch.setattr(dash.session, "train", boom)
    click(dash.controls.train_button)  # must not raise
    assert dash.session.status_kind == "danger" and "something broke" in dash.session.status
    dash.controls.methods.value = []
    monkeypatch.undo()
    click(dash.controls.train_button)
    assert dash.session.status_kind == "warning" and "Tick at least one method" in dash.session.status
    assert dash.session.run is None


def test_worker_failure_is_reported(dash, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no data today")

    monkeypatch.setattr(training.Comparison, "from_plan", broken)
    click(dash.controls.train_button)
    drain_until(dash, lambda: not dash.session.running, timeout=10)
    assert dash.session.status_kind == "danger" and "no data today" in dash.session.status


def test_url_parameters_configure_the_dashboard():
    loc = Location(search="?system=nbody&methods=baseline,lnn&steps=123&seed=7&lr=0.002"
                          "&nbody.n_bodies=3&integrator=leapfrog&ood_factor=5")
    d = app.Dashboard(autodrain=False, location=loc)
    try:
        s = d.session
        assert s.system == "nbody" and s.methods == ["baseline", "lnn"]
        assert (s.config.steps, s.config.seed, s.config.lr) == (123, 7, 0.002)
        assert s.config.integrator == "leapfrog" and s.config.ood_factor == 5
        assert s.systems["nbody"].n_bodies == 3
        assert d.controls.methods.value == ["baseline", "lnn"] and d.controls.system.value == "nbody"
        # and back: a change lands in the URL, so the address bar reproduces the run
        d.controls.config_widgets["seed"].value = 11
        d.controls._system_widgets["nbody"][0].value = 4
        assert "seed=11" in loc.search and "nbody.n_bodies=4" in loc.search
        assert "pendulum." not in loc.search  # only the current system's parameters
        cfg = s.build_config()
        assert (cfg.seed, cfg.steps, cfg.threads) == (11, 123, s.threads)
    finally:
        d.close()


def test_a_preset_link_restores_the_preset_and_its_overrides():
    loc = Location(search="?preset=hnn-table1-pendulum&steps=100")
    d = app.Dashboard(autodrain=False, location=loc)
    try:
        s, p = d.session, presets.PRESETS["hnn-table1-pendulum"]
        assert s.system == "pendulum" and s.methods == list(p.methods)
        assert s.systems["pendulum"].energy_band == p.system_params["energy_band"]  # a tuple: via the preset
        assert s.config.width == p.config["width"] and s.config.batch_size == p.config["batch_size"]
        assert s.config.steps == 100  # the link's own value on top
        assert d.controls.preset.value == "hnn-table1-pendulum"
        d.controls.system.value = "spring"  # the preset no longer describes the settings
        assert s.preset == "" and "preset=hnn" not in loc.search
    finally:
        d.close()


def test_bad_url_values_are_refused_not_fatal():
    loc = Location(search="?system=pendulum&steps=-5&methods=baseline,divfree")
    d = app.Dashboard(autodrain=False, location=loc)
    try:
        assert d.session.config.steps >= 1
        assert d.session.methods == ["baseline"]
        assert d.session.status_kind == "warning"
    finally:
        d.close()


def test_presets_apply(dash):
    for name, p in presets.PRESETS.items():
        dash.controls.preset.value = name
        s = dash.session
        assert s.system == p.system and s.methods == list(p.methods), name
        for k, v in p.system_params.items():
            assert getattr(s.systems[p.system], k) == v, (name, k)
        assert p.title in s.status


def test_lnn_card_and_widget_follow_the_lagrangian_form(dash):
    """The LNN preset picks the mechanical form: the widget shows it, and the LNN's
    teaching card shows that form's Lagrangian; back to generic, the card follows."""
    dash.controls.preset.value = "lnn-double-pendulum"
    assert dash.session.config.lnn_form == "mechanical"
    assert dash.controls.config_widgets["lnn_form"].value == "mechanical"

    def lnn_card_text():
        (card,) = [c for c in dash.teaching_view._box.objects if c.title.startswith("Lagrangian")]
        return " ".join(str(o.object) for o in card.objects)

    assert "Form: mechanical" in lnn_card_text() and "M_\\theta(q)" in lnn_card_text()
    dash.controls.config_widgets["lnn_form"].value = "generic"
    assert dash.session.config.lnn_form == "generic"
    assert "Form: generic" in lnn_card_text() and "mathrm{MLP}" in lnn_card_text()


def test_downloads_hold_curves_and_summary(dash):
    tiny(dash)
    click(dash.controls.train_button)
    drain_until(dash, lambda: not dash.session.running)
    frame = pd.read_csv(io.StringIO(dash.controls.csv.callback().read()))
    assert set(frame["method"]) >= {"baseline", "hnn", "penalty", "truth"}
    assert set(frame["curve"]) >= {"loss", "violation", "drift", "drift_ood", "learned_drift"}
    summary = json.loads(dash.controls.json.callback().read())
    assert summary["system"] == "pendulum" and summary["config"]["seed"] == 0
    by = {m["method"]: m for m in summary["methods"]}
    assert set(by) == {"baseline", "hnn", "penalty"}
    for m in by.values():
        assert m["status"] == "done" and m["steps"] == 24
        assert math.isfinite(m["drift"]["energy"]["final"])
    assert "system=pendulum" in summary["url_query"]


def test_every_plot_view_consumes_channels_its_streams_hold(dash):
    """``consumes`` is what a plot view says it reads (app/views/__init__.py): each name
    must be one of the session's StreamSet channels, or the declaration has gone stale."""
    streams = dash.session.streams
    assert streams is not None
    for view in (dash.loss_view, dash.multiplier_view, dash.drift_view, dash.system_view):
        assert view.consumes and all(hasattr(streams, c) for c in view.consumes), (type(view).__name__,
                                                                                  view.consumes)


@pytest.mark.slow
@pytest.mark.parametrize("system", [k for k in ALL_SYSTEMS if k != "pendulum"])
def test_every_system_draws_its_views(dash, system):
    dash.controls.system.value = system
    s = dash.session
    valid = s.valid_methods()
    methods = theme.default_methods(system, valid)[:2] + (["auglag"] if system == "nbody" else [])
    dash.controls.methods.value = methods
    assert s.methods == methods
    tiny(dash, steps=6, horizon=0.2 if ALL_SYSTEMS[system].kind == "field" else 1.0)
    s.evals_per_run = 1
    root = pn.panel(dash).get_root()
    click(dash.controls.train_button)
    drain_until(dash, lambda: not s.running, timeout=90)
    assert s.status_kind == "success", s.status
    assert set(s.data.invariants) <= set(s.data.latest_eval[methods[0]].drift)
    assert max(cds_lengths(root, "drift")) > 0
    assert isinstance(dash.system_view._box.objects[0], pn.Column)  # built, not the placeholder
    if "auglag" in methods:
        assert max(cds_lengths(root, "value")) > 0  # the multiplier trace
        assert s.data.mult_rows
    if system == "nbody":
        dash.system_view.orbit = 2  # another test case redraws without error
    if ALL_SYSTEMS[system].kind == "field":
        assert max(cds_lengths(root, "image")) > 0  # the ∇·u heat map
        dash.system_view.field_of = methods[1]
        dash.system_view.frame = 0.5
    assert s.status_kind == "success", s.status


def test_server_options_default_to_localhost():
    from app.__main__ import make_parser

    args = make_parser().parse_args([])
    assert (args.address, args.port, args.threads) == ("127.0.0.1", 5006, 1)
    args = make_parser().parse_args(["--address", "0.0.0.0", "--allow-websocket-origin", "lab:5006",
                                     "--allow-websocket-origin", "x:1", "--threads", "2"])
    assert args.allow_websocket_origin == ["lab:5006", "x:1"] and args.threads == 2


def test_threads_is_a_server_setting(monkeypatch):
    monkeypatch.setenv("CONSERV_THREADS", "3")
    d = app.Dashboard(autodrain=False)
    try:
        assert d.session.build_config().threads == 3
    finally:
        d.close()


@pytest.mark.slow
def test_engine_never_imports_the_ui_or_the_reproductions():
    code = ("import sys, conserv_core, conserv_core.training, conserv_core.cli, conserv_core.presets,"
            " conserv_core.sweeps, conserv_core.runs, conserv_core.problems;"
            "bad = [m for m in ('panel', 'holoviews', 'bokeh', 'app', 'reproductions') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)



def test_an_over_budget_link_is_refused_before_any_work():
    loc = Location(search="?horizon=100000&dt=0.00001")
    d = app.Dashboard(autodrain=False, location=loc)
    try:
        s = d.session
        assert s.config.horizon == 100000 and s.config.dt == 1e-05
        t0 = time.perf_counter()
        click(d.controls.train_button)
        assert time.perf_counter() - t0 < 1.0
        assert s.run is None and s.phase == "idle" and not s.running
        assert s.status_kind == "danger" and "Cannot start" in s.status
        assert "horizon=100000" in s.status and "dt=1e-05" in s.status and "limit" in s.status
    finally:
        d.close()


def test_a_64_body_symmetric_hnn_link_is_refused_with_the_pairs_named():
    # priced like two bodies before issue 31, it held a worker for over an hour
    loc = Location(search="?system=nbody&nbody.n_bodies=64&methods=shnn")
    d = app.Dashboard(autodrain=False, location=loc)
    try:
        s = d.session
        assert s.system == "nbody" and s.current_system.n_bodies == 64 and list(s.methods) == ["shnn"]
        t0 = time.perf_counter()
        click(d.controls.train_button)
        assert time.perf_counter() - t0 < 1.0
        assert s.run is None and s.phase == "idle" and s.status_kind == "danger", s.status
        assert "2,016 pairs of n_bodies=64" in s.status and "lower n_bodies" in s.status, s.status
    finally:
        d.close()


def _spam_train(d: app.Dashboard, clicks: int = 50) -> list:
    """Press Train ``clicks`` times in a row, settings unchanged (a burst a busy page sends
    in one websocket message), run the run out, and return the handles submitted."""
    ex = d.session.executor
    submitted = []
    real_submit = ex.submit

    def counting_submit(*args, **kwargs):
        submitted.append(real_submit(*args, **kwargs))
        return submitted[-1]

    ex.submit = counting_submit
    try:
        for _ in range(clicks):
            click(d.controls.train_button)
        drain_until(d, lambda: not d.session.running)
    finally:
        ex.submit = real_submit
    return submitted


def _ran_the_settings(d: app.Dashboard, steps: int) -> None:
    s = d.session
    assert s.phase == "done", s.status
    assert s.data.spec.config["steps"] == steps and s.data.progress["baseline"].step == steps
    assert all(f.status == "done" for f in s.data.finished.values())


@pytest.mark.slow
def test_fifty_train_presses_in_a_row_start_one_run():
    d = app.Dashboard(autodrain=False, session=app_session.LabSession(executor_=runs.InProcessExecutor()))
    try:
        tiny(d, steps=18)
        submitted = _spam_train(d)
        assert len(submitted) == 1, f"{len(submitted)} runs for one burst of presses"
        _ran_the_settings(d, 18)
        # other settings are another run: the press replaces the current one, as before
        click(d.controls.train_button)
        first = d.session.run
        d.controls.config_widgets["steps"].value = 12
        click(d.controls.train_button)
        assert d.session.run is not first and first.stop_requested
        drain_until(d, lambda: not d.session.running)
        _ran_the_settings(d, 12)
    finally:
        d.close()


# ---------------------------------------------------------------------------------------
# sessions on a Dask cluster (scheduler and workers as processes: conftest's ``cluster``)
# ---------------------------------------------------------------------------------------
@pytest.fixture
def dask_ex(cluster):
    from conserv_core import runs

    ex = runs.DaskExecutor.connect(cluster)
    yield ex
    ex.close()


def _dash_on(ex) -> app.Dashboard:
    return app.Dashboard(autodrain=False, session=app_session.LabSession(executor_=ex))


def _runs_sent_to_workers(dask_scheduler=None) -> int:
    return len({t[0] for t in dask_scheduler.transition_log
                if str(t[0]).startswith("conserv-run-") and t[2] == "processing"})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fifty_train_presses_start_one_run_on_a_local_cluster():
    ex = runs.DaskExecutor.local(n_workers=1, dashboard_address="127.0.0.1:0")
    d = _dash_on(ex)
    try:
        tiny(d, steps=18)
        submitted = _spam_train(d)
        assert len(submitted) == 1, f"{len(submitted)} runs for one burst of presses"
        assert ex.client.run_on_scheduler(_runs_sent_to_workers) == 1
        _ran_the_settings(d, 18)
    finally:
        d.close()
        ex.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_session_trains_on_dask_workers_and_draws_every_view(dask_ex):
    d = _dash_on(dask_ex)
    try:
        tiny(d)
        root = pn.panel(d).get_root()
        click(d.controls.train_button)
        s = d.session
        assert s.phase in ("preparing", "queued") and s.running
        drain_until(d, lambda: not s.running, timeout=180)
        assert s.phase == "done" and s.status_kind == "success", s.status
        assert s.run is None
        assert max(cds_lengths(root, "loss")) >= 10 and max(cds_lengths(root, "drift")) > 10
        assert "energy_grid" in s.data.views.data["hnn"]
        assert all(f.status == "done" for f in s.data.finished.values())
    finally:
        d.close()


@pytest.mark.timeout(300)
def test_a_queued_session_shows_its_place_stays_live_and_replaces_its_run(dask_ex):
    from conserv_core import runs

    blockers = [dask_ex.submit(runs.RunSpec("pendulum", {}, ("baseline",),
                                            dict(steps=200_000, eval_every=100_000, width=8, seed=i)))
                for i in range(2)]
    d = _dash_on(dask_ex)
    try:
        deadline = time.monotonic() + 60
        while not all(h.phase == "running" for h in blockers):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        tiny(d)
        s = d.session
        click(d.controls.train_button)
        first = s.run
        assert s.phase == "queued" and s.running
        assert "Waiting for a free worker: next in line, about" in s.status and "replaces this run" in s.status
        d.drain()
        # the controls stay live while it waits; a change is said to apply to the next run
        d.controls.config_widgets["seed"].value = 5
        assert "applies to the next run" in s.status and s.phase == "queued"
        click(d.controls.train_button)  # again: replaces the waiting run, keeping its place
        assert s.run is not first and first.stop_requested and s.run.order == first.order
        assert s.phase == "queued" and s.run.spec.config["seed"] == 5
        for h in blockers:
            h.stop()
        drain_until(d, lambda: s.phase in ("preparing", "training", "done"), timeout=120)
        drain_until(d, lambda: not s.running, timeout=180)
        assert s.phase == "done", s.status
        assert first.finished.is_set() and not [r for r in first.queue if isinstance(r, runs.Started)]
    finally:
        for h in blockers:
            h.stop()
        d.close()


def test_phase_transitions_are_checked():
    s = app_session.LabSession()
    assert s.phase == "idle" and s.status_kind == "info"
    s._enter("preparing", "x")
    assert s.running and s.status_kind == "running"
    s._enter("done", "y")
    assert not s.running and s.status_kind == "success"
    with pytest.raises(ValueError, match="cannot go from 'done' to 'training'"):
        s._enter("training", "z")
    # the phase is the one run state: running follows it, and neither is set from outside
    for name, value in (("phase", "training"), ("running", True), ("paused", True)):
        with pytest.raises(TypeError, match="Constant parameter"):
            setattr(s, name, value)
    assert s.phase == "done" and not s.running and not s.paused
    from app import phases

    for phase, kind in phases.PHASES.items():
        assert kind in s.param.status_kind.objects, phase
    s.close()


def test_a_served_session_drains_on_its_documents_periodic_callback():
    """Served, the drain is Bokeh's periodic callback on the page's own document (public
    API, no busy mark per tick, dropped with the session), and ``close`` removes it."""
    import asyncio
    import weakref

    from bokeh.document import Document

    class Context:  # what makes a document served, as far as Panel asks
        pass

    ctx, doc = Context(), Document()
    doc._session_context = weakref.ref(ctx)
    s = app_session.LabSession()
    s.autodrain = True

    async def served():
        pn.state.curdoc = doc  # a context variable: set in this task only
        s._ensure_periodic()
        assert s.drainer.periodic.active and len(doc.session_callbacks) == 1
        s._ensure_periodic()  # once per session
        assert len(doc.session_callbacks) == 1
        s.close()
        assert not s.drainer.periodic.active and not doc.session_callbacks

    # on a thread of its own: a served page's test before may leave a loop running on this one
    failed = []

    def run():
        try:
            asyncio.run(served())
        except BaseException as err:  # noqa: BLE001 -- handed to the test's thread
            failed.append(err)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    if failed:
        raise failed[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_dead_workers_session_run_starts_over_elsewhere_and_says_so(dask_ex):
    import os
    import signal

    d = _dash_on(dask_ex)
    try:
        tiny(d, steps=100_000)  # long enough to kill; 200 000 is over the budget (~an hour)
        s = d.session
        click(d.controls.train_button)
        drain_until(d, lambda: s.data.n_points >= 3 and s.phase == "training", timeout=120)
        where, lost = s.run.where, s.data
        pid = dask_ex.client.run(os.getpid, workers=[where])[where]
        os.kill(pid, signal.SIGKILL)
        # the scheduler sends the run to the other worker: the page says so and starts over
        drain_until(d, lambda: s.data is not lost, timeout=60)
        assert s.phase == "preparing" and "Worker lost, rerunning" in s.status, s.status
        assert s.run.where != where and s.run.restarts == 1 and s.data.n_points == 0
        drain_until(d, lambda: s.phase == "training" and s.data.n_points >= 1, timeout=60)
        click(d.controls.stop_button)
        drain_until(d, lambda: not s.running, timeout=10)
        assert s.phase == "stopped" and not s.errors
        dask_ex.client.wait_for_workers(2, timeout=60)
    finally:
        d.close()


def test_an_unreachable_cluster_is_said_on_the_page_not_raised():
    from conserv_core import runs

    class Gone(runs.Executor):
        def _launch(self, handle):
            raise OSError("Timed out trying to connect to tcp://10.9.9.9:8786")

        def _stop(self, handle):
            pass

    ex = Gone()
    d = app.Dashboard(autodrain=False, session=app_session.LabSession(executor_=ex))
    try:
        tiny(d)
        click(d.controls.train_button)
        s = d.session
        assert s.run is None and s.phase == "idle" and not s.running
        assert s.status_kind == "danger" and "Cannot reach the training cluster" in s.status
        assert ex.active() == []
        assert not s.errors  # handled, not an unexpected error
    finally:
        d.close()


def _a_page_renders() -> None:
    d = app.Dashboard(autodrain=False)
    try:
        assert pn.panel(d).get_root() is not None
    finally:
        d.close()


def test_a_page_renders_when_bokehs_current_document_was_left_destroyed():
    """Bokeh's ``patch_curdoc`` has no ``finally``: a session callback that raised leaves its
    document patched in after the session is destroyed, and every later HoloViews render
    failed with "Patched curdoc has been previously destroyed" (the full suite hit it in
    whichever page-building test ran next)."""
    from bokeh.document import Document
    from bokeh.io import doc as bokeh_doc

    gone = bokeh_doc.patch_curdoc(Document())
    gone.__enter__()  # entered and never exited, as after the raising callback; its doc is garbage now
    try:
        with pytest.raises(RuntimeError, match="previously destroyed"):
            bokeh_doc.curdoc()
        _a_page_renders()
    finally:
        bokeh_doc._PATCHED_CURDOCS.pop()


def test_a_page_renders_when_the_current_document_is_destroyed_but_alive():
    """The other shape of the same leak (the full suite hit it in test_rollout_options): a
    destroyed document still referenced, so ``curdoc()`` returns it without an error and
    HoloViews' render failed on its deleted ``_theme``."""
    from bokeh.document import Document
    from bokeh.io import doc as bokeh_doc

    doc = Document()
    for attr in ("_roots", "_theme", "_template"):  # what Document.destroy deletes
        delattr(doc, attr)
    patch = bokeh_doc.patch_curdoc(doc)
    patch.__enter__()
    try:
        assert bokeh_doc.curdoc() is doc and not hasattr(doc, "_theme")
        _a_page_renders()
    finally:
        bokeh_doc._PATCHED_CURDOCS.pop()
