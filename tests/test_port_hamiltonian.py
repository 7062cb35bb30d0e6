"""The port-Hamiltonian network: dissipation by structure (issue 11, part 2).

``ż = (J − R_θ)∇H_θ`` with ``R_θ = [[0, 0], [0, s L_θL_θᵀ]] ⪰ 0``: its learned energy can
only fall, for any weights and at any state. Checked on untrained weights, 10× outside any
training range, in float64; each check fails when the PSD factor is dropped (``R = L``)
or the sign of the friction flipped.
"""

from __future__ import annotations

import math

import pytest
import torch

from conserv_core import get_system, integrators, models, training

F64 = torch.float64


def _model(dof: int, seed: int = 0, r_scale: float = 1.0):
    m = models.build("phnn", dof=dof, width=32, depth=2, activation="tanh",
                     generator=torch.Generator().manual_seed(seed)).to(F64)
    m.r_scale.fill_(r_scale)
    return m


def _states(n: int, dim: int, scale: float = 10.0, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, dim, generator=g, dtype=F64)


@pytest.mark.parametrize("dof", [1, 3])
def test_the_learned_energy_can_only_fall_and_at_exactly_the_structures_rate(dof):
    model = _model(dof)
    z = _states(512, 2 * dof).requires_grad_(True)
    f = model(z).detach()
    (grad_h,) = torch.autograd.grad(model.learned_energy(z).sum(), z)
    rate = (grad_h * f).sum(-1)  # dH_θ/dt along the model's own flow
    scale = grad_h.norm(dim=-1) * f.norm(dim=-1) + 1e-300
    assert (rate / scale).max() <= 1e-12, float((rate / scale).max())
    # and it is −∇Hᵀ R ∇H, the power the learned friction dissipates
    torch.testing.assert_close(-rate, model.dissipated_power(z.detach()), rtol=1e-10, atol=1e-12)
    assert float(-rate.mean()) > 0  # untrained, it does dissipate (the check can tell)


@pytest.mark.parametrize("dof", [1, 3])
def test_the_dissipation_is_symmetric_positive_semidefinite_on_the_momenta_only(dof):
    model = _model(dof)
    z = _states(256, 2 * dof)
    with torch.no_grad():
        r = model.dissipation(z)
    torch.testing.assert_close(r, r.mT, rtol=0, atol=0)
    assert float(torch.linalg.eigvalsh(r).min()) >= -1e-12
    assert float(r[:, :dof].abs().max()) == 0.0 and float(r[:, :, :dof].abs().max()) == 0.0


@pytest.mark.slow
def test_a_trained_model_damps_the_low_swings_too():
    """Friction does no work at the turning points (∂H/∂p ≈ 0), so the data cannot see
    D_θ there. With a free-signed Cholesky factor, training parked L_θ's zero set at
    p ≈ 0 and a low swing, |p| small all along, was left nearly undamped (D_θ ≈ 0.01–0.04
    where b m l² = 0.3; the damped-pendulum lesson's energy then lagged the truth's).
    The positive (softplus) diagonal leaves no zero set to park."""
    sysm = get_system("pendulum", damping=0.3)
    cfg = training.make_config("pendulum", steps=300, seed=1, n_test=4)
    tr = training.Trainer(sysm, "phnn", cfg).run()
    z = tr.problem.z_true[:, :4].reshape(-1, 2)
    low = z[z[:, 1].abs() < 0.3]  # small momenta: late, low swings and the turning points
    with torch.no_grad():
        d = tr.model.damping(low.to(torch.float32)).reshape(-1)
    true = sysm.damping * sysm.inertia
    assert 0.5 * true < float(d.mean()) < 2.0 * true, float(d.mean())


def test_zero_dissipation_is_the_hnn():
    model = _model(2, r_scale=0.0)
    hnn = models.build("hnn", dof=2, width=32, depth=2, activation="tanh").to(F64)
    hnn.net.load_state_dict(model.net.state_dict())
    z = _states(64, 4)
    torch.testing.assert_close(model(z), hnn(z), rtol=0, atol=0)


@pytest.mark.slow
def test_the_discrete_gradient_rollout_never_raises_the_learned_energy():
    model = _model(1)
    z0 = _states(8, 2, scale=2.0)
    with torch.no_grad():
        _, z = integrators.rollout(model.gradient_form, z0, 0.1, 400, method="discrete_gradient")
        h = model.learned_energy(z.reshape(-1, 2)).reshape(z.shape[:2])
    rise = (h[1:] - h[:-1]) / h[0].abs().clamp_min(1e-12)
    assert float(rise.max()) <= 1e-12, float(rise.max())
    assert float((h[-1] - h[0]).max()) < 0


@pytest.mark.slow
def test_a_damped_run_measures_each_model_against_the_truths_own_energy():
    """Energy is not conserved with damping: the drift curve is |E_model(t) − E_true(t)|,
    not |E(t) − E(0)| (under which the HNN, which keeps E(0), looked perfect), and the
    truth draws no line of its own."""
    sysm = get_system("pendulum", damping=0.5)
    cfg = training.make_config("pendulum", steps=30, width=16, horizon=6.0, n_test=4, dtype="float64")
    recs = []
    training.Comparison(sysm, ["hnn", "phnn"], cfg, listener=recs.append).run()
    truth = next(r for r in recs if isinstance(r, training.Evaluation) and r.method == "truth")
    assert "energy" not in truth.drift
    ev = [r for r in recs if isinstance(r, training.Evaluation) and r.method == "hnn"][-1]
    e_true = sysm.energy(torch.as_tensor(ev.view["true"][-1]))
    e0 = sysm.energy(torch.as_tensor(ev.view["true"][0]))
    assert float((e_true / e0).max()) < 0.2  # the truth lost most of its energy by t = 6
    assert ev.drift["energy"].final > 0.5  # the HNN kept its own: wrong by about that much
    assert ev.view["power"] < 0.05 * ev.view["power_true"]  # and drains (almost) none
    ph = [r for r in recs if isinstance(r, training.Evaluation) and r.method == "phnn"][-1]
    assert ph.view["power"] > 0 and math.isfinite(ph.drift["energy"].final)


def test_the_page_tells_a_student_what_to_look_for_when_damping_is_on():
    from app import theme

    assert "Damping is on" in theme.look_for(get_system("pendulum", damping=0.3))
    assert "Damping is on" not in theme.look_for(get_system("pendulum"))
