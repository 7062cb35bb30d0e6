"""The work budget: an oversized run is refused at once with the settings to change, every
default and preset fits with room to spare, and the limit can be raised."""

from __future__ import annotations

import threading
import time

import pytest

from conserv_core import budget, methods, models, training
from conserv_core.presets import PRESETS
from conserv_core.systems import ALL_SYSTEMS, ParameterError, get_system

#: every default demo (the methods a system's page ticks) and preset must fit this many
#: times over under the default limit
HEADROOM = 20
#: all of a system's methods side by side at its recommended config must fit this many
#: times over: priced at what each model really costs (the LNN's Hessians, the symmetric
#: HNN's pairs; benchmarks/bench_budget.py), all seven n-body methods are 2.6e7
#: state-steps, several minutes of a core, ~8x under the limit
ALL_METHODS_HEADROOM = 5


def _work(system, keys, cfg) -> float:
    return sum(t.work for t in budget.estimate(system, keys, cfg))


def _refused_within_a_second(build, stop: threading.Event) -> str:
    """``build()`` raises ParameterError within a second; its one-line message. Were the
    run started, ``stop`` (set after a second) would end it with Stopped, not
    ParameterError: the test fails instead of hanging."""
    timer = threading.Timer(1.0, stop.set)
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
    return msg


def test_the_extreme_link_is_refused_instantly_naming_horizon_and_dt():
    # the dashboard link ?horizon=100000&dt=0.00001, through the engine's two entry points
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum", horizon=1e5, dt=1e-5)
    ev = threading.Event()
    for build in (lambda: training.Comparison(sysm, ["baseline", "hnn"], cfg, stop_event=ev),
                  lambda: training.Trainer(sysm, "baseline", cfg, stop_event=ev)):
        msg = _refused_within_a_second(build, ev)
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
    shown = _work(sysm, methods.default_methods(sysm), cfg)  # the page's ticked methods
    assert shown * HEADROOM < budget.DEFAULT_MAX_WORK, shown
    work = _work(sysm, methods.valid_methods(sysm), cfg)  # all methods side by side
    assert work * ALL_METHODS_HEADROOM < budget.DEFAULT_MAX_WORK, work
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
    # each method alone fits; all side by side do not (every one rolls out at every evaluation).
    # 30 000 steps: the dearest alone, the LNN (15 units a state), needs 1.7e8; all six 2.8e8
    sysm = get_system("pendulum")
    cfg = training.make_config("pendulum", horizon=3e3)
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


# -- prices that match the work: a model's state costs what its model costs ------------
def _rollout_work(system, keys, cfg) -> float:
    return next(t.work for t in budget.estimate(system, keys, cfg) if t.what == "rollouts")


def test_a_64_body_symmetric_hnn_is_refused_before_any_work_naming_the_pairs():
    # ?system=nbody&nbody.n_bodies=64&methods=shnn: priced like two bodies, it held a
    # worker for over an hour; the pair network runs on all 2 016 pairs of every state
    sysm = get_system("nbody", n_bodies=64)
    cfg = training.make_config("nbody")
    ev = threading.Event()
    msg = _refused_within_a_second(lambda: training.Comparison(sysm, ["shnn"], cfg, stop_event=ev), ev)
    assert "2,016 pairs of n_bodies=64" in msg and "lower n_bodies" in msg
    assert "limit is 2.0e+08" in msg and "CONSERV_MAX_WORK" in msg
    # a trusted room raises the limit, by argument or by environment
    need = _work(sysm, ["shnn"], cfg)
    assert budget.check(sysm, ["shnn"], cfg, limit=need) == need


def test_a_64_body_symmetric_hnn_is_admitted_where_the_room_raises_the_limit(monkeypatch):
    sysm = get_system("nbody", n_bodies=64)
    cfg = training.make_config("nbody")
    monkeypatch.setenv(budget.ENV_VAR, "1e10")
    assert budget.check(sysm, ["shnn"], cfg) > budget.DEFAULT_MAX_WORK


def test_the_symmetric_hnn_rollouts_grow_with_the_pairs():
    # 120 pairs at N = 16 against 28 at N = 8 (4.3x), less the per-call overhead: 3-5x,
    # where pricing every state alike gave 1x
    cfg = training.make_config("nbody")
    w8 = _rollout_work(get_system("nbody", n_bodies=8), ["shnn"], cfg)
    w16 = _rollout_work(get_system("nbody", n_bodies=16), ["shnn"], cfg)
    assert 3.0 < w16 / w8 < 5.0, w16 / w8
    # training too: its field is the gradient of the pair sum, backpropagated again
    t8, t16 = (next(t.work for t in budget.estimate(get_system("nbody", n_bodies=n), ["shnn"], cfg)
                    if t.what == "training") for n in (8, 16))
    assert 3.0 < t16 / t8 < 5.0, t16 / t8


def test_a_dense_model_grows_with_the_state_not_the_pairs():
    # the MLP baseline reads 4N inputs: 16 bodies cost it far less than 4x of 8
    cfg = training.make_config("nbody")
    w8 = _rollout_work(get_system("nbody", n_bodies=8), ["baseline"], cfg)
    w16 = _rollout_work(get_system("nbody", n_bodies=16), ["baseline"], cfg)
    assert 1.0 < w16 / w8 < 1.5, w16 / w8


def test_a_model_declares_its_price_and_the_unit_is_the_default():
    # the budget asks the model, never the method's key: a class that says nothing costs a unit
    sysm = get_system("pendulum")
    assert methods.get_method("divfree").cost_per_state(sysm) == models.Cost()  # not applicable: the unit
    flow = get_system("flow")
    assert methods.get_method("divfree").cost_per_state(flow).rollout == 1.0  # the grid is counted instead
    nb = get_system("nbody", n_bodies=64)
    shnn = methods.get_method("shnn").cost_per_state(nb)
    assert shnn.rollout > 1000 and "2,016 pairs" in shnn.why
