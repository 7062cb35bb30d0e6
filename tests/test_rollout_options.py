"""Exact in discrete time, end to end: the discrete-gradient rollout and projection as the
trainer, the run spec, the CLI and the dashboard use them (issue 12).

The integrators themselves are checked in ``tests/test_geometric.py`` and the Leray
projection in ``tests/test_leray.py``; here: what a user who flips the options sees.
"""

from __future__ import annotations

import io
import json
import math

import panel as pn
import pytest

import app
from app.settings import query_string
from conserv_core import budget, cli, get_system, training
from conserv_core.runs import RunSpec
from conserv_core.systems import ParameterError
from test_app import click, drain_until, tiny

pytestmark = pytest.mark.timeout(300)


def _comparison(system, methods, **cfg):
    recs = []
    comp = training.Comparison(system, methods, training.make_config(system.key, **cfg), listener=recs.append)
    comp.run()
    evals = {m: [r for r in recs if isinstance(r, training.Evaluation) and r.method == m] for m in methods}
    truth = next(r for r in recs if isinstance(r, training.Evaluation) and r.method == "truth")
    return comp, evals, truth


PEND = dict(steps=60, width=16, horizon=10.0, n_test=4, dtype="float64")


@pytest.mark.slow
def test_the_hnns_own_energy_is_exact_per_step_under_the_discrete_gradient_not_under_rk4():
    """The dotted line of the drift plot: under RK4 the HNN's own energy drifts; under the
    discrete gradient it sits at round-off, in and out of distribution, and so does the
    truth's energy (the dashed floor)."""
    _, evals, truth = _comparison(get_system("pendulum"), ["hnn"], integrator="discrete_gradient", **PEND)
    for ev in evals["hnn"]:  # every evaluation, from the untrained start on
        own = ev.learned_drift
        for suffix in ("", "_ood"):
            exact = max(own[f"energy{suffix}"].rel)
            rk4 = max(own[f"energy_rk4{suffix}"].rel)
            assert exact < 1e-12, (ev.step, suffix, exact)
            assert rk4 > 1e3 * max(exact, 1e-16), (ev.step, suffix, rk4, exact)
    assert max(truth.drift["energy"].rel) < 1e-12
    assert max(truth.drift_ood["energy"].rel) < 1e-12


@pytest.mark.slow
def test_projection_holds_the_true_invariants_of_an_unconstrained_model_but_not_its_trajectory():
    _, evals, _ = _comparison(get_system("pendulum"), ["baseline"], projection=True, **PEND)
    ev = evals["baseline"][-1]
    for key in ("energy", "energy_ood"):
        plain = ev.unprojected[key]
        held = (ev.drift if key == "energy" else ev.drift_ood)["energy"]
        assert max(held.rel) < 1e-9, (key, max(held.rel))
        assert max(plain.rel) > 1e3 * max(max(held.rel), 1e-15), (key, max(plain.rel))
    # what it does not fix: the path (phase) error stays of the size it had without projection
    assert ev.trajectory_error.final > 0.3 * ev.unprojected["trajectory"].final > 0.01


@pytest.mark.slow
def test_projection_and_the_discrete_gradient_change_what_is_shown_never_what_is_learned():
    """Rollout options act on evaluation only: the training losses are bit-identical."""
    sysm = get_system("pendulum")
    plain, _, _ = _comparison(sysm, ["hnn"], **PEND)
    for opts in (dict(projection=True), dict(integrator="discrete_gradient")):
        other, _, _ = _comparison(sysm, ["hnn"], **PEND, **opts)
        a = [p.loss for p in plain.trainers["hnn"].history]
        b = [p.loss for p in other.trainers["hnn"].history]
        assert a == b, opts


@pytest.mark.slow
def test_projection_on_nbody_holds_momentum_and_angular_momentum_too():
    sysm = get_system("nbody", n_bodies=3)
    _, evals, _ = _comparison(sysm, ["baseline"], projection=True, steps=20, width=16, horizon=2.0, n_test=2,
                              dtype="float64")
    ev = evals["baseline"][-1]
    for name in ("energy", "momentum", "angular_momentum"):
        assert max(ev.drift[name].rel) < 1e-8, (name, max(ev.drift[name].rel))
        assert max(ev.unprojected[name].rel) > 1e-6, name


@pytest.mark.slow
def test_leray_projection_keeps_the_baselines_dye_mass_and_says_what_it_costs():
    flow = get_system("flow", grid=32, n_samples=512, n_parcels=64)
    _, evals, _ = _comparison(flow, ["baseline"], projection=True, steps=10, width=16, horizon=0.4)
    ev = evals["baseline"][-1]
    assert max(abs(r) for r in ev.drift["mass"].rel) < 1e-10
    assert max(ev.unprojected["mass"].rel) > 1e-4
    assert 0 < ev.view["velocity_error"] and 0 < ev.view["velocity_error_projected"]


@pytest.mark.parametrize("system, methods, cfg, needle", [
    ("pendulum", ["baseline", "hnn"], dict(integrator="discrete_gradient"), "applies to hnn"),
    ("pendulum", ["lnn"], dict(integrator="discrete_gradient"), "not to lnn"),
    ("flow", ["divfree"], dict(integrator="discrete_gradient"), "ODE systems"),
    ("pendulum", ["baseline"], dict(projection=True, damping=0.3), "does not conserve"),
    ("pendulum", ["baseline"], dict(projection=True, invariants=["momentum"]), "must be among energy"),
])
def test_options_that_cannot_apply_are_refused_before_any_work(system, methods, cfg, needle):
    params = {"damping": cfg.pop("damping")} if "damping" in cfg else {}
    spec = RunSpec(system, params, methods, cfg)
    with pytest.raises(ParameterError, match=needle):
        spec.validate()
    with pytest.raises(ParameterError, match=needle):
        training.Comparison(get_system(system, **params), methods, training.make_config(system, **cfg))


@pytest.mark.parametrize("tol", [0.0, -1e-9, float("nan"), 0.1])
def test_a_projection_tolerance_outside_its_range_is_named(tol):
    with pytest.raises(ParameterError, match=r"projection_tol.*\(0\.0, 0\.01\]"):
        training.make_config("pendulum", projection_tol=tol)


def test_the_options_add_their_cost_to_the_work_budget():
    sysm = get_system("pendulum")
    base = budget.estimate(sysm, ["baseline"], training.make_config("pendulum"))
    proj = budget.estimate(sysm, ["baseline"], training.make_config("pendulum", projection=True))
    work = lambda terms: next(t.work for t in terms if t.what == "rollouts")  # noqa: E731
    assert work(proj) > 2.5 * work(base)


# -- the command line ---------------------------------------------------------------------------
TINY = ["--steps", "4", "--width", "8", "--eval-every", "2", "--n-test", "2", "--horizon", "0.5", "--quiet"]


def test_cli_runs_with_the_options_and_lists_them(tmp_path):
    out = io.StringIO()
    path = tmp_path / "dg.json"
    rc = cli.main(["run", "--system", "pendulum", "--method", "hnn", "--integrator", "discrete_gradient",
                   "--dtype", "float64", "--json", str(path), *TINY], out=out)
    assert rc == 0, out.getvalue()
    res = json.loads(path.read_text())
    assert res["config"]["integrator"] == "discrete_gradient"
    rc = cli.main(["compare", "--system", "pendulum", "--methods", "baseline,penalty", "--projection", *TINY],
                  out=io.StringIO())
    assert rc == 0
    out = io.StringIO()
    assert cli.main(["methods"], out=out) == 0
    assert "--projection" in out.getvalue() and "discrete_gradient" in out.getvalue()


def test_cli_refuses_the_discrete_gradient_for_a_baseline_in_one_line(capsys):
    rc = cli.main(["compare", "--system", "pendulum", "--methods", "baseline,hnn", "--integrator",
                   "discrete_gradient", *TINY], out=io.StringIO())
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "applies to hnn" in err[0], err


# -- the dashboard ------------------------------------------------------------------------------
@pytest.fixture
def dash():
    d = app.Dashboard(autodrain=False)
    yield d
    d.close()
    assert not d.session.errors, d.session.errors


@pytest.mark.slow
def test_the_projection_toggle_draws_the_unprojected_lines_and_its_card(dash):
    tiny(dash)
    dash.controls.config_widgets["projection"].value = True
    s = dash.session
    assert s.config.projection is True
    assert "projection=true" in query_string(s.system, s.methods, s.config, s.current_system)
    titles = [c.title for c in dash.teaching_view._box.objects]
    assert any("hard at inference" in t for t in titles), titles
    pn.panel(dash).get_root()
    click(dash.controls.train_button)
    drain_until(dash, lambda: not s.running)
    assert s.status_kind == "success", s.status
    drawn = s.data.drift["energy"].data
    for m in s.methods:
        assert len(drawn[f"{m}:raw"]["t"]) > 10, m
    assert "without projection" in dash.status_view.legend.object


def test_the_discrete_gradient_draws_the_hnns_own_energy_under_both_and_refuses_a_baseline(dash):
    tiny(dash)
    s = dash.session
    dash.controls.methods.value = ["hnn"]
    dash.controls.config_widgets["integrator"].value = "discrete_gradient"
    assert any("Discrete-gradient" in c.title for c in dash.teaching_view._box.objects)
    click(dash.controls.train_button)
    drain_until(dash, lambda: not s.running)
    assert s.status_kind == "success", s.status
    drawn = s.data.drift["energy"].data
    assert len(drawn["hnn:own"]["t"]) > 10 and len(drawn["hnn:own_rk4"]["t"]) > 10
    assert "under RK4" in dash.status_view.legend.object
    dash.controls.methods.value = ["hnn", "baseline"]
    click(dash.controls.train_button)
    assert not s.running and s.status_kind == "danger" and "applies to hnn" in s.status, s.status


@pytest.mark.slow
def test_a_flow_session_with_projection_reports_the_velocity_cost(dash):
    dash.controls.system.value = "flow"
    s = dash.session
    dash.controls.methods.value = ["baseline"]
    dash.controls.config_widgets["projection"].value = True
    tiny(dash, steps=4, horizon=0.2)
    s.evals_per_run = 1
    pn.panel(dash).get_root()
    click(dash.controls.train_button)
    drain_until(dash, lambda: not s.running, timeout=120)
    assert s.status_kind == "success", s.status
    assert "baseline:raw" in s.data.drift["mass"].data
    text = dash.system_view._box.objects[0].objects[-1].object
    assert "Leray projection on" in text and "→" in text
    assert math.isfinite(s.data.latest_eval["baseline"].view["velocity_error_projected"])
