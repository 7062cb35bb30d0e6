"""The work budget: an oversized run is refused at once with the settings to change, every
default and preset fits with room to spare, and the limit can be raised."""

from __future__ import annotations

import threading
import time

import pytest

from conserv_core import budget, methods, training
from conserv_core.presets import PRESETS
from conserv_core.systems import ALL_SYSTEMS, ParameterError, get_system

#: every default demo and preset must fit this many times over under the default limit
HEADROOM = 20


def _work(system, keys, cfg) -> float:
    return sum(t.work for t in budget.estimate(system, keys, cfg))


def test_the_extreme_link_is_refused_instantly_naming_horizon_and_dt():
    # the dashboard link ?horizon=100000&dt=0.00001, through the engine's two entry points
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum", horizon=1e5, dt=1e-5)
    ev = threading.Event()
    for build in (lambda: training.Comparison(sysm, ["baseline", "hnn"], cfg, stop_event=ev),
                  lambda: training.Trainer(sysm, "baseline", cfg, stop_event=ev)):
        # were the run started, the stop would end it (Stopped, not ParameterError): the
        # test fails instead of hanging
        timer = threading.Timer(1.0, ev.set)
        timer.start()
        t0 = time.perf_counter()
        try:
            with pytest.raises(ParameterError) as err:
                build()
        finally:
            timer.cancel()
        assert time.perf_counter() - t0 < 1.0
        msg = str(err.value)
        assert "\n" not in msg
        assert "horizon=100000" in msg and "dt=1e-05" in msg
        assert "limit is 2.0e+08" in msg and "CONSERV_MAX_WORK" in msg


def test_a_long_horizon_at_the_default_dt_is_refused_too():
    # a million RK4 steps per rollout: minutes for the truth alone, far more for a model
    sysm = get_system("pendulum")
    with pytest.raises(ParameterError, match="horizon=100000 / dt=0.1"):
        budget.check(sysm, ["baseline"], training.make_config("pendulum", horizon=1e5))


@pytest.mark.parametrize("system", list(ALL_SYSTEMS))
def test_every_recommended_default_fits_with_headroom(system):
    sysm = get_system(system)
    cfg = training.make_config(system)
    work = _work(sysm, methods.valid_methods(sysm), cfg)  # all methods side by side
    assert work * HEADROOM < budget.DEFAULT_MAX_WORK, work
    assert budget.check(sysm, methods.valid_methods(sysm), cfg) == work


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_fits_with_headroom(name):
    p = PRESETS[name]
    sysm = get_system(p.system, **p.system_params)
    work = _work(sysm, p.methods, training.make_config(p.system, **p.config))
    assert work * HEADROOM < budget.DEFAULT_MAX_WORK, work


def test_a_normal_default_run_is_accepted_and_a_lower_limit_refuses_it():
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum", steps=2, n_test=2)
    tr = training.Trainer(sysm, "baseline", cfg)  # builds data and truth: the limit let it through
    assert tr.problem.z_true.shape[1] == 4
    with pytest.raises(ParameterError, match="limit is 1.0e\\+03"):
        training.Trainer(sysm, "baseline", cfg, max_work=1e3)


def test_raising_the_limit_admits_the_run_by_argument_and_by_environment(monkeypatch):
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum", horizon=1e5, dt=1e-5)
    need = _work(sysm, ["baseline"], cfg)
    assert budget.check(sysm, ["baseline"], cfg, limit=need) == need
    monkeypatch.setenv(budget.ENV_VAR, repr(need))
    assert budget.check(sysm, ["baseline"], cfg) == pytest.approx(need)
    monkeypatch.setenv(budget.ENV_VAR, "1e3")
    with pytest.raises(ParameterError):  # the variable lowers it too
        budget.check(sysm, ["baseline"], training.make_config("pendulum"))


@pytest.mark.parametrize("value", ["lots", "0", "-5", "nan", "inf"])
def test_a_bad_limit_in_the_environment_is_named(monkeypatch, value):
    monkeypatch.setenv(budget.ENV_VAR, value)
    with pytest.raises(ParameterError, match=budget.ENV_VAR):
        budget.max_work()


def test_more_methods_and_more_evaluations_cost_more():
    sysm = get_system("pendulum")
    one = _work(sysm, ["baseline"], training.make_config("pendulum"))
    assert _work(sysm, ["baseline", "hnn"], training.make_config("pendulum")) > one
    assert _work(sysm, ["baseline"], training.make_config("pendulum", eval_every=10)) > one


def test_a_huge_flow_solve_is_refused_naming_the_grid():
    # 256² with snapshots 5e-5 apart to t=100: two million solver steps of ~24 ms each
    sysm = get_system("flow", grid=256, t_end=0.05, n_snapshots=1001, horizon=100.0)
    with pytest.raises(ParameterError, match="flow solver.*grid=256"):
        budget.check(sysm, ["baseline"], training.make_config("flow"))


def test_many_dye_parcels_over_a_long_horizon_are_refused_naming_them():
    sysm = get_system("flow", n_parcels=100_000, horizon=100.0, dt=0.001)
    with pytest.raises(ParameterError, match="dye rollouts.*parcels"):
        budget.check(sysm, ["baseline"], training.make_config("flow"))


def test_a_comparison_counts_all_its_methods_together():
    # each method alone fits; all side by side do not (every one rolls out at every evaluation)
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum", horizon=2e4)
    keys = methods.valid_methods(sysm)
    for k in keys:
        budget.check(sysm, [k], cfg)
    ev = threading.Event()
    timer = threading.Timer(1.0, ev.set)  # a run let through is stopped: the test fails fast
    timer.start()
    t0 = time.perf_counter()
    try:
        # every method at each of its 11 evaluations (steps/10 apart, the first at step 0), and the truth once
        with pytest.raises(ParameterError, match=f"× {len(keys) * 11 + 1} rollouts"):
            training.Comparison(sysm, keys, cfg, stop_event=ev)
    finally:
        timer.cancel()
    assert time.perf_counter() - t0 < 1.0
