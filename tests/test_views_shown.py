"""The app, not the engine, decides what to draw: how many test trajectories and how fine a
grid an evaluation's ``view`` arrays hold is a :class:`~conserv_core.problems.ViewSpec`
that the system view sets and a run carries (``RunSpec.view``). It changes what is sent,
never what is measured: a smaller view is a slice of the default one, bit for bit.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import app
from conserv_core import problems, records, runs
from conserv_core.systems import ParameterError
from app.views import system as system_view

SMALL = {"trajectories": 2, "energy_grid": 11, "field_grid": 16}


def evaluations(system: str, methods: tuple, view: dict) -> list:
    spec = runs.RunSpec(system, {}, methods, {"steps": 2, "eval_every": 1, "width": 8, "seed": 3}, view=view)
    got: list = []
    runs.execute(spec.validate(), got.append, threading.Event())
    assert not [r for r in got if isinstance(r, runs.Failed)], got
    return [r for r in got if isinstance(r, records.Evaluation)]


def test_the_defaults_are_what_the_dashboard_drew():
    assert problems.ViewSpec() == problems.ViewSpec(trajectories=4, energy_grid=41, field_grid=64)
    assert system_view.SHOWN == problems.ViewSpec()


def test_a_pendulum_run_sends_as_many_trajectories_and_as_fine_a_grid_as_asked():
    big, small = evaluations("pendulum", ("hnn",), {}), evaluations("pendulum", ("hnn",), SMALL)
    assert len(big) == len(small)
    for b, s in zip(big, small):
        assert records.to_dict(b)["drift"] == records.to_dict(s)["drift"]  # the measurement is the same
        assert b.test_mse == s.test_mse and b.violation == s.violation
        if not b.view:
            continue
        assert b.view["true"].shape[1] == 4 and s.view["true"].shape[1] == 2
        np.testing.assert_array_equal(s.view["true"], b.view["true"][:, :2])
        np.testing.assert_array_equal(s.view["model"], b.view["model"][:, :2])
        assert b.view["energy_grid"]["H"].shape == (41, 41) and s.view["energy_grid"]["H"].shape == (11, 11)


@pytest.mark.slow
def test_a_flow_run_sends_its_field_on_the_grid_asked():
    big, small = evaluations("flow", ("baseline",), {}), evaluations("flow", ("baseline",), SMALL)
    b, s = big[-1], small[-1]
    assert b.view["u"].shape == (64, 64, 2) and s.view["u"].shape == (16, 16, 2) and s.view["div"].shape == (16, 16)
    np.testing.assert_array_equal(s.view["mass"], b.view["mass"])
    assert records.to_dict(b)["drift"] == records.to_dict(s)["drift"]


def test_a_spec_carries_its_view_and_leaves_an_empty_one_out():
    plain = runs.RunSpec("pendulum", {}, ("baseline",))
    assert "view" not in plain.to_dict()  # a sweep's cell keys are what they were
    spec = runs.RunSpec("pendulum", {}, ("baseline",), view=SMALL)
    assert runs.RunSpec.from_dict(spec.to_dict()) == spec
    assert spec.view_spec == problems.ViewSpec(**SMALL)


@pytest.mark.parametrize("view, message", [
    ({"trajectorys": 2}, "view takes trajectories, energy_grid, field_grid; got trajectorys"),
    ({"field_grid": 10_000}, r"view field_grid must be an integer in \[2, 256\]; got 10000"),
    ({"energy_grid": 4.5}, r"view energy_grid must be an integer"),
])
def test_a_bad_view_is_refused_before_any_work(view, message):
    with pytest.raises(ParameterError, match=message):
        runs.RunSpec("pendulum", {}, ("baseline",), view=view).validate()


def test_the_dashboards_runs_carry_what_its_system_view_draws(monkeypatch):
    monkeypatch.setattr(system_view, "SHOWN", problems.ViewSpec(**SMALL))
    d = app.Dashboard(autodrain=False, sync_url=False)
    try:
        assert d.session.shown == problems.ViewSpec(**SMALL)
        handle = d.train()
        assert handle.spec.view_spec == problems.ViewSpec(**SMALL)
    finally:
        d.close()
