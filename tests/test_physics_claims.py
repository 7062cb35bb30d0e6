"""The claims the product makes, checked on the default short CPU runs.

Each comparison trains with the system's recommended configuration (what the dashboard
and ``conserv compare`` use), once per module, and the tests read its results:

* pendulum: HNN's true-energy drift at the horizon is at most 1/5 of the baseline's;
* flow: the divergence-free field's mass drift is at most 1e-4 and the baseline's at
  least ten times larger;
* n-body: HNN's energy drift is below the baseline's; the symmetric HNN's momentum
  drift is at least 1e6 times below the HNN's, its angular momentum 1e3 times, and its
  energy drift at most a fifth of the HNN's;
* double pendulum (the ``lnn-double-pendulum`` preset): the mechanical LNN's energy
  drift is at most a third of the baseline's;
* soft constraints: the penalty's violation is below the baseline's; the augmented
  Lagrangian's multipliers move and its violation falls during training;
* out of distribution: the hard constraint's own invariant holds to round-off while the
  penalty's violation grows;
* damped pendulum: the port-Hamiltonian network's energy error against the truth's E(t)
  is at most a tenth of the HNN's, and it drains energy at the truth's rate (within 15%)
  where the HNN drains none.
"""

from __future__ import annotations

import pytest

from conserv_core import get_system, training

pytestmark = pytest.mark.slow


def _config(system: str, **kw) -> training.TrainConfig:
    """The recommended configuration, evaluated only at the start and the end: the
    evaluations in between change no trained number (they draw nothing from the run's
    generators; ``test_training`` checks it), and on n-body they were four fifths of the
    fixture's time."""
    cfg = training.make_config(system, **kw)
    cfg.eval_every = cfg.steps
    return cfg


def _compare(system: str, methods: list[str], params: dict | None = None, **kw):
    sysm = get_system(system, **(params or {}))
    records = []
    comp = training.Comparison(sysm, methods, _config(system, **kw), listener=records.append)
    comp.run()
    for tr in comp.trainers.values():
        assert tr.status == "done", (tr.method.key, tr.message)
    return comp, records


@pytest.fixture(scope="module")
def pendulum():
    return _compare("pendulum", ["baseline", "hnn", "lnn", "penalty", "auglag"])


@pytest.fixture(scope="module")
def flow():
    return _compare("flow", ["baseline", "divfree", "penalty"])


@pytest.fixture(scope="module")
def nbody():
    return _compare("nbody", ["baseline", "hnn", "shnn"])


@pytest.fixture(scope="module")
def damped():
    return _compare("pendulum", ["hnn", "phnn"], params={"damping": 0.3})


def final(comp, method, quantity="energy"):
    return comp.trainers[method].last_eval.drift[quantity].final


def test_pendulum_hnn_energy_drift_at_most_a_fifth_of_baseline(pendulum):
    comp, _ = pendulum
    assert final(comp, "hnn") <= final(comp, "baseline") / 5, (final(comp, "hnn"), final(comp, "baseline"))


def test_pendulum_lnn_energy_drift_below_baseline(pendulum):
    comp, _ = pendulum
    assert final(comp, "lnn") < final(comp, "baseline")


def test_pendulum_hard_models_conserve_their_learned_energy(pendulum):
    comp, _ = pendulum
    for m in ("hnn", "lnn"):
        ev = comp.trainers[m].last_eval
        # the model's own energy is conserved up to the rollout integrator's error
        assert ev.learned_drift["energy"].final < 1e-3, (m, ev.learned_drift["energy"].final)
        assert ev.learned_drift["energy_ood"].final < 1e-2, (m, ev.learned_drift["energy_ood"].final)


def test_penalty_violation_below_baseline(pendulum, flow):
    for comp, _ in (pendulum, flow):
        v = {m: comp.trainers[m].last_eval.violation for m in ("baseline", "penalty")}
        assert v["penalty"] < v["baseline"], v


def test_auglag_multipliers_move_and_violation_falls(pendulum):
    comp, _ = pendulum
    hist = comp.trainers["auglag"].history
    mults = [h.multipliers.get("energy", 0.0) for h in hist]
    assert mults[0] == 0.0 and max(mults) > 0.0
    first = sum(h.violation for h in hist[:50]) / 50
    last = sum(h.violation for h in hist[-50:]) / 50
    assert last < first / 3, (first, last)


def test_flow_divfree_mass_drift_tiny_and_baseline_ten_times_larger(flow):
    comp, _ = flow
    div, base = final(comp, "divfree", "mass"), final(comp, "baseline", "mass")
    assert div <= 1e-4, div
    assert base >= 10 * max(div, 1e-7), (div, base)


def test_nbody_hnn_energy_drift_below_baseline(nbody):
    comp, _ = nbody
    assert final(comp, "hnn") < final(comp, "baseline")


def test_nbody_symmetric_hnn_keeps_both_momenta_where_the_hnn_does_not(nbody):
    """Noether in practice: the same data and budget, an energy with the symmetries. The
    largest drift over the horizon (measured, seeds 0-2: P exactly 0 against the HNN's
    5e-2; L 8e-7-1e-6 against 1e-2; energy 2-3e-4 against 8e-3-1.4e-2)."""
    comp, _ = nbody
    worst = {m: {k: max(c.rel) for k, c in comp.trainers[m].last_eval.drift.items()} for m in ("hnn", "shnn")}
    assert worst["shnn"]["momentum"] <= 1e-6 * worst["hnn"]["momentum"], worst
    assert worst["shnn"]["angular_momentum"] <= 1e-3 * worst["hnn"]["angular_momentum"], worst
    assert worst["shnn"]["energy"] <= worst["hnn"]["energy"] / 5, worst


def test_double_pendulum_preset_mechanical_lnn_drifts_far_less_than_baseline():
    """The preset the dashboard offers for the LNN paper, at its own size (measured: the
    LNN's energy drift at t = 10 is 0.0099 against the baseline's 0.12)."""
    from conserv_core.presets import PRESETS

    preset = PRESETS["lnn-double-pendulum"]
    sysm = get_system(preset.system, **preset.system_params)
    comp = training.Comparison(sysm, list(preset.methods), _config(preset.system, **preset.config))
    comp.run()
    assert comp.trainers["lnn"].model.form == "mechanical"
    for tr in comp.trainers.values():
        assert tr.status == "done", (tr.method.key, tr.message)
    assert final(comp, "lnn") <= final(comp, "baseline") / 3, (final(comp, "lnn"), final(comp, "baseline"))
    # its own energy holds to the rollout integrator's error
    assert comp.trainers["lnn"].last_eval.learned_drift["energy"].final < 1e-3


def test_out_of_distribution_hard_holds_soft_leaks(pendulum, flow):
    # divergence-free: the true constraint itself is held to round-off, anywhere
    comp, _ = flow
    ev = comp.trainers["divfree"].last_eval
    assert ev.violation_ood < 1e-4 and ev.violation < 1e-4
    pen = comp.trainers["penalty"].last_eval
    assert pen.violation_ood > 3 * pen.violation, (pen.violation, pen.violation_ood)
    # pendulum: the penalty was trained in the energy band only; beyond it the violation grows
    comp, _ = pendulum
    pen = comp.trainers["penalty"].last_eval
    assert pen.violation_ood > 3 * pen.violation, (pen.violation, pen.violation_ood)


def test_damped_pendulum_port_hamiltonian_is_the_right_hard_constraint(damped):
    """Measured (seeds 0-2): largest energy error 0.014-0.034 for phnn against 1.01-1.03
    for the HNN; drained power 0.93-0.98 of the truth's for phnn, under 0.02 for the HNN.
    (Against the baseline the error is mixed over seeds, so no claim is made here.)"""
    comp, _ = damped
    worst = {m: max(comp.trainers[m].last_eval.drift["energy"].rel) for m in ("hnn", "phnn")}
    assert worst["phnn"] <= 0.1 * worst["hnn"], worst
    view = {m: comp.trainers[m].last_eval.view for m in ("hnn", "phnn")}
    true = view["phnn"]["power_true"]
    assert abs(view["phnn"]["power"] - true) <= 0.15 * true, (view["phnn"]["power"], true)
    assert abs(view["hnn"]["power"]) <= 0.05 * true, (view["hnn"]["power"], true)
