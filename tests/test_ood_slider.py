"""The live out-of-distribution slider (issue 29, part 3): after a run, the same trained
models are evaluated further out with no training step, and the drift view shows, per
method, the true invariant and a hard model's own learned one pulling apart.

Headless here (the dashboard's widgets, a real run, the drain the periodic callback
does); tests/test_lessons_browser.py-style, a real browser moves the slider too
(``test_the_slider_in_a_browser``).
"""

from __future__ import annotations

import time

import numpy as np
import panel as pn
import pytest
from test_app import click, drain_until, tiny

import app
from app import session as app_session
from conserv_core import runs

pytestmark = pytest.mark.timeout(240)


def _ood_ends(data) -> dict[str, float]:
    """The last value of every curve the energy drift plot draws now."""
    return {k: float(np.nan_to_num(v["drift"][-1])) for k, v in data.drift_series("energy").items() if len(v["drift"])}


def _largest(data, key) -> float:
    return float(np.nanmax(data.drift_series("energy")[key]["drift"]))


@pytest.fixture
def done_dash():
    d = app.Dashboard(autodrain=False, session=app_session.LabSession(executor_=runs.InProcessExecutor()))
    tiny(d, steps=150, width=24, horizon=6.0)
    s = d.session
    root = pn.panel(d).get_root()
    assert d.drift_view.ood_slider.disabled  # nothing to re-evaluate before a run
    click(d.controls.train_button)
    drain_until(d, lambda: not s.running, timeout=180)
    assert s.phase == "done", s.status
    yield d, root
    d.close()


@pytest.mark.slow
def test_moving_the_slider_re_evaluates_the_trained_models_without_training(done_dash):
    d, _ = done_dash
    s, view = d.session, d.drift_view
    assert not view.ood_slider.disabled and s.ood_probe.available
    assert view.ood_slider.value == s.config.ood_factor  # starts at the run's own factor
    steps = {m: (s.data.progress[m].step, len(s.data.history[m])) for m in s.data.methods}
    s.ood = True
    at_run = _ood_ends(s.data)
    view.ood_slider.value = 10.0  # what a browser's slider sends
    assert s.ood_probe.busy and "Evaluating" in view.ood_note.object
    drain_until(d, lambda: not s.ood_probe.busy, timeout=60)
    far = _ood_ends(s.data)
    assert s.data.stress_factor == 10.0
    for m in s.data.methods:
        assert far[m] != at_run[m], m  # the OOD curves moved
    assert far["truth"] != at_run["truth"]  # with the truth's floor
    # no training step: the step counts and loss histories are as the run left them
    assert {m: (s.data.progress[m].step, len(s.data.history[m])) for m in s.data.methods} == steps
    # far out the HNN still holds its own learned energy; its true energy does not
    own, true = _largest(s.data, "hnn:own"), _largest(s.data, "hnn")
    assert own < 1e-3 and true > 10 * own, (own, true)
    assert "Same trained models" in view.ood_note.object and "×10" in view.ood_note.object
    assert s.ood_probe.latencies


@pytest.mark.slow
def test_moves_while_a_job_is_out_merge_to_the_latest(done_dash):
    d, _ = done_dash
    s = d.session
    for f in (4.0, 5.0, 6.0, 7.5):  # a drag: one job out, the rest merged
        d.drift_view.ood_slider.value = f
    drain_until(d, lambda: not s.ood_probe.busy, timeout=90)
    assert s.data.stress_factor == 7.5
    assert len(s.ood_probe.latencies) == 2  # the first move and the latest, nothing between
    # back to a factor already evaluated: drawn at once, no job
    d.drift_view.ood_slider.value = 4.0
    assert not s.ood_probe.busy and s.data.stress_factor == 4.0 and s.ood_probe.latencies[0] == 0.0


@pytest.mark.slow
def test_a_new_run_resets_the_slider_until_it_finishes(done_dash):
    d, _ = done_dash
    s = d.session
    d.drift_view.ood_slider.value = 6.0
    drain_until(d, lambda: not s.ood_probe.busy, timeout=60)
    click(d.controls.train_button)
    assert d.drift_view.ood_slider.disabled and d.drift_view.ood_slider.value == s.config.ood_factor
    assert s.data.stressed is None
    drain_until(d, lambda: not s.running, timeout=180)
    assert not d.drift_view.ood_slider.disabled


@pytest.mark.slow
def test_a_stopped_run_arms_the_slider_with_the_models_as_they_stood():
    d = app.Dashboard(autodrain=False, session=app_session.LabSession(executor_=runs.InProcessExecutor()))
    try:
        s = d.session
        tiny(d, steps=20_000, width=16, horizon=4.0)
        click(d.controls.train_button)
        drain_until(d, lambda: all(s.data.progress.get(m) and s.data.progress[m].step >= 50 for m in s.data.methods),
                    timeout=120)
        click(d.controls.stop_button)
        drain_until(d, lambda: not s.running, timeout=60)
        assert s.phase == "stopped", s.status
        assert not d.drift_view.ood_slider.disabled and s.ood_probe.available
        stopped_at = {m: w[0] for m, w in s.data.weights.items()}
        assert stopped_at and all(0 < n < 20_000 for n in stopped_at.values()), stopped_at
        d.drift_view.ood_slider.value = 8.0
        drain_until(d, lambda: not s.ood_probe.busy, timeout=90)
        assert s.data.stress_factor == 8.0
        assert {m: ev.step for m, ev in s.data.stressed.items() if m in stopped_at} == stopped_at
    finally:
        d.close()


@pytest.mark.slow
def test_the_flow_gets_its_dye_and_violation_out_there():
    d = app.Dashboard(autodrain=False, session=app_session.LabSession(executor_=runs.InProcessExecutor()))
    try:
        s = d.session
        s.system = "flow"
        tiny(d, steps=30, width=8, horizon=None)
        click(d.controls.train_button)
        drain_until(d, lambda: not s.running, timeout=180)
        assert s.phase == "done", s.status
        d.drift_view.ood_slider.value = 8.0
        drain_until(d, lambda: not s.ood_probe.busy, timeout=90)
        note = d.drift_view.ood_note.object
        assert "mass drift of the dye patch carried out to later times (to ×8 the training window)" in note, note
        assert "beyond the training band" not in note
        # the flow has an OOD set (the dye at later times): the switch works and says what it is
        assert not d.drift_view.ood_toggle.disabled
        assert "dye patch carried at later times" in d.drift_view.ood_label.object
        s.ood = True
        assert {"truth", *s.data.methods} <= set(s.data.drift_series("mass"))
    finally:
        d.close()


@pytest.mark.slow
def test_every_value_of_the_slider_is_evaluated_ahead_so_a_move_is_drawn_at_once(done_dash):
    from app import ood
    from conserv_core import training

    d, _ = done_dash
    s = d.session
    assert ood.ahead_order(3.0)[:3] == [3.0, 2.0, 4.0] and len(ood.ahead_order(3.0)) == 10
    drain_until(d, lambda: not s.ood_probe.working, timeout=120)
    assert sorted(s.ood_probe._seen) == [float(f) for f in range(1, 11)]
    assert s.data.stressed is None and not s.ood_probe.latencies  # nothing drawn unasked
    d.drift_view.ood_slider.value = 7.0
    assert not s.ood_probe.busy and s.data.stress_factor == 7.0 and s.ood_probe.latencies == [0.0]
    # what was evaluated ahead is the move's own answer, bit for bit
    sysm, cfg = s.data.spec.build()
    direct = training.reevaluate(sysm, cfg, dict(s.data.weights), ood_factor=7.0)
    for m, ev in direct.items():
        ahead = s.data.stressed[m]
        for q, curve in ev.drift_ood.items():
            assert ahead.drift_ood[q].rel == curve.rel, (m, q)


@pytest.mark.slow
def test_a_move_to_the_factor_on_its_way_waits_for_it_and_nothing_is_evaluated_ahead_while_a_run_queues(done_dash):
    d, _ = done_dash
    s, probe = d.session, d.session.ood_probe
    # nearest the run's own factor first, as many at once as the executor has slots, each
    # one job for every method (one problem built)
    slots = s.executor.slots
    assert list(probe._ahead) == [3.0, 2.0, 4.0][:slots]
    assert all(len(fut) == 1 for fut in probe._ahead.values())
    d.drift_view.ood_slider.value = 5.0  # not yet on its way: a move of its own
    assert probe._job is not None and 5.0 not in probe._todo and 5.0 not in probe._ahead
    drain_until(d, lambda: probe._job is None and probe._ahead, timeout=60)
    on_way = next(iter(probe._ahead))
    d.drift_view.ood_slider.value = on_way
    assert probe.busy and probe._job is None  # no second job for it
    drain_until(d, lambda: not probe.busy, timeout=60)
    assert s.data.stress_factor == on_way and probe.latencies[0] > 0

    class Queued:
        phase = "queued"

    real = s.executor.active
    s.executor.active = lambda: [Queued()]
    try:
        drain_until(d, lambda: not probe._ahead, timeout=60)
        left = list(probe._todo)
        for _ in range(5):
            d.drain()
        assert not probe._ahead and probe._todo == left and left  # held back while a run waits
    finally:
        s.executor.active = real
    drain_until(d, lambda: not probe.working, timeout=120)
    assert not probe._todo
