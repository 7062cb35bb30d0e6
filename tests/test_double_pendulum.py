"""The double pendulum's truth: Hamilton's and Lagrange's equations agree with each other
and with autograd, the small-angle normal modes are exact, energy is conserved to the
integrator's order, and the motion is chaotic.

A non-default mass, length and gravity are used, so a formula that swaps ``l`` and ``g``
or forgets ``m l²`` fails.
"""

from __future__ import annotations

import math

import pytest
import torch

from conserv_core import integrators, models, training
from conserv_core.systems import ALL_SYSTEMS, DoublePendulum, get_system

PARAMS = dict(mass=1.7, length=0.6, gravity=4.0)

#: float64 agreement of two exact formulas for the same quantity (a few ulps of |z|²)
EXACT = dict(rtol=1e-12, atol=1e-11)
#: relative energy error of float64 RK4 at dt = 5e-4 over t = 2.5 from chaotic starts with
#: both rods able to go over the top (measured 7.5e-11, 4.8e-12 at dt = 2.5e-4: RK4's own
#: error, falling as dt⁴ or faster toward float64 round-off)
TIGHT_ENERGY = 3e-10


def fitted_order(dts: list[float], errors: list[float]) -> float:
    x, y = torch.tensor(dts).log(), torch.tensor(errors, dtype=torch.float64).log()
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


@pytest.fixture
def dp() -> DoublePendulum:
    return get_system("double_pendulum", **PARAMS)


def states(dp: DoublePendulum, n: int = 64, seed: int = 0) -> torch.Tensor:
    """Starts across the whole torus, fast enough to go over the top: ``(n, 4)``."""
    return dp.sample_initial(n, seed=seed, scale=2.0)


def test_registered_and_not_separable():
    dp = get_system("double_pendulum")
    assert ALL_SYSTEMS["double_pendulum"] is DoublePendulum
    assert dp.separable is False  # T depends on the angles: leapfrog is not symplectic here
    assert (dp.dof, dp.state_dim) == (2, 4) and dp.invariant_names() == ("energy",)
    assert dp.gravity == 9.8  # the LNN paper's


def test_vector_field_is_the_symplectic_gradient_of_h(dp):
    z = states(dp).requires_grad_(True)
    (grad,) = torch.autograd.grad(dp.energy(z).sum(), z)  # [∂H/∂θ, ∂H/∂p]
    torch.testing.assert_close(dp.vector_field(z.detach()), torch.cat([grad[:, 2:], -grad[:, :2]], -1), **EXACT)


def test_legendre_map_is_invertible_and_h_is_its_transform_of_l(dp):
    z = states(dp, seed=1)
    q, p = dp.split(z)
    qdot = dp.velocity(z)
    torch.testing.assert_close(dp.momentum(q, qdot), p, **EXACT)
    torch.testing.assert_close(qdot, dp.vector_field(z)[:, :2], **EXACT)
    # p = ∂L/∂q̇ and H = p·q̇ − L
    qd = qdot.clone().requires_grad_(True)
    (dl,) = torch.autograd.grad(dp.lagrangian(q, qd).sum(), qd)
    torch.testing.assert_close(dl, p, **EXACT)
    torch.testing.assert_close((p * qdot).sum(-1) - dp.lagrangian(q, qdot), dp.energy(z), **EXACT)


def test_acceleration_agrees_with_hamilton_and_with_the_lnn_solver(dp):
    """Three routes to θ̈: the closed form, the chain rule through Hamilton's equations,
    and the engine's Euler–Lagrange solver given the true Lagrangian."""
    z = states(dp, seed=2)
    q, qdot = z[:, :2], dp.velocity(z)
    closed = dp.acceleration(q, qdot)
    _, via_hamilton = torch.func.jvp(dp.velocity, (z,), (dp.vector_field(z),))
    torch.testing.assert_close(closed, via_hamilton, **EXACT)
    lnn = models.LagrangianNN(2, lagrangian=dp.lagrangian)
    with torch.no_grad():
        via_euler_lagrange = lnn(torch.cat([q, qdot], -1))[:, 2:]
    torch.testing.assert_close(closed, via_euler_lagrange, rtol=1e-9, atol=1e-9)


def test_energy_is_zero_at_rest_and_six_mgl_upright(dp):
    mgl = PARAMS["mass"] * PARAMS["gravity"] * PARAMS["length"]
    z = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.pi, math.pi, 0.0, 0.0], [math.pi, 0.0, 0.0, 0.0]],
                     dtype=torch.float64)
    torch.testing.assert_close(dp.energy(z), torch.tensor([0.0, 6 * mgl, 4 * mgl], dtype=torch.float64))
    assert (dp.energy(states(dp, 256, seed=3)) >= 0).all()


def test_small_oscillations_have_the_normal_mode_frequencies(dp):
    """Linearised at rest, the frequencies are ω² = (2 ± √2) g / l (equal masses and
    lengths): the eigenvalues of the Jacobian of the true field are ±iω."""
    jac = torch.autograd.functional.jacobian(lambda z: dp.vector_field(z[None])[0], torch.zeros(4, dtype=torch.float64))
    eig = torch.linalg.eigvals(jac)
    assert float(eig.real.abs().max()) < 1e-12
    omega = sorted(float(w) for w in eig.imag if w > 0)
    g_l = PARAMS["gravity"] / PARAMS["length"]
    expected = [math.sqrt((2 - math.sqrt(2)) * g_l), math.sqrt((2 + math.sqrt(2)) * g_l)]
    assert omega == pytest.approx(expected, rel=1e-12)


@pytest.mark.slow
def test_truth_conserves_energy_under_a_tight_integrator(dp):
    """RK4's energy error falls at least as fast as dt⁴ (its order; measured ~dt⁵ at these
    steps), and at dt = 5e-4 it is below 3e-10 of the energy over t = 2.5 of chaotic motion:
    what remains is the integrator's, not the physics'."""
    z0 = states(dp, 8, seed=4)
    e0 = dp.energy(z0)
    t_end, errors, dts = 2.0, [], [0.02, 0.01, 0.005]
    for dt in dts:
        _, z = integrators.rollout(dp.vector_field, z0, dt, int(round(t_end / dt)), "rk4")
        errors.append(float(((dp.energy(z[-1]) - e0).abs() / e0).max()))
    assert fitted_order(dts, errors) > 3.5, errors
    _, z = integrators.rollout(dp.vector_field, z0, 5e-4, 5000, "rk4", every=50)
    drift = ((dp.energy(z) - e0).abs() / e0).max()
    assert float(drift) < TIGHT_ENERGY, float(drift)


def test_motion_is_chaotic():
    """Two starts 1e-9 apart part by more than ten-million-fold within t = 10 (high
    energy), while both keep their energy to 1e-5: chaos, not integrator error."""
    dp = get_system("double_pendulum")
    z0 = torch.tensor([[2.0, 2.5, 0.0, 0.0]], dtype=torch.float64)
    z0 = torch.cat([z0, z0 + torch.tensor([[1e-9, 0.0, 0.0, 0.0]], dtype=torch.float64)])
    _, z = integrators.rollout(dp.vector_field, z0, 5e-3, 2000, "rk4", every=200)
    gap = (z[:, 0] - z[:, 1]).norm(dim=-1)
    assert float(gap[-1]) > 1e-2, gap.tolist()
    assert float(((dp.energy(z) - dp.energy(z0)).abs() / dp.energy(z0)).max()) < 1e-5


@pytest.mark.slow
def test_leapfrog_still_runs_on_a_non_separable_field(dp):
    """Leapfrog is not symplectic here, but it is a consistent method: it converges, and a
    training run that picks it for its rollouts completes."""
    z0 = states(dp, 4, seed=5)
    exact = integrators.solve(dp.vector_field, z0, torch.tensor([0.0, 0.5], dtype=torch.float64), "rk4", 1e-3)[-1]
    errors = []
    for dt in (0.01, 0.005):
        _, z = integrators.rollout(dp.vector_field, z0, dt, int(round(0.5 / dt)), "leapfrog")
        errors.append(float((z[-1] - exact).abs().max()))
    assert errors[1] < errors[0] / 1.8, errors
    cfg = training.make_config("double_pendulum", steps=2, width=16, n_test=2, horizon=0.5,
                               integrator="leapfrog", eval_every=2)
    tr = training.Trainer(get_system("double_pendulum"), "lnn", cfg).run()
    assert tr.status == "done", tr.message
    assert all(c.final == c.final for c in tr.last_eval.drift.values())  # finite, not NaN


def test_sampler_ranges_and_scale(dp):
    s = get_system("double_pendulum", max_angle=1.0, max_speed=2.0)
    z = s.sample_initial(4000, seed=6)
    w = s.velocity(z)
    assert float(z[:, :2].abs().max()) <= 1.0 and float(z[:, :2].abs().max()) > 0.99
    assert float(w.abs().max()) <= 2.0 + 1e-12 and float(w.abs().max()) > 1.98
    far = s.sample_initial(4000, seed=6, scale=10.0)  # angles capped at π
    assert float(far[:, :2].abs().max()) <= math.pi
    assert float(s.energy(far).mean()) > 3 * float(s.energy(z).mean())
