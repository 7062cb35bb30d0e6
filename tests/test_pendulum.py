"""The pendulum's truth: periods, energy (with and without damping), the Hamiltonian and
Lagrangian structure, the sampler and the refusals.

Non-default masses, lengths and gravities are used throughout, so a formula that swaps
``l`` and ``g`` or forgets ``m l²`` fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conserv_core import integrators, systems
from conserv_core.systems import ParameterError, Pendulum

PARAMS = dict(mass=2.5, length=2.0, gravity=3.0)


def upward_crossings(t: torch.Tensor, q: torch.Tensor) -> np.ndarray:
    """Times where ``q (T,)`` crosses 0 from below, by linear interpolation. Near q = 0 the
    swing is nearly linear in time (q̈ ∝ sin q = 0 there), so the interpolation is accurate."""
    t, q = t.numpy(), q.numpy()
    i = np.nonzero((q[:-1] < 0) & (q[1:] >= 0))[0]
    return t[i] - q[i] * (t[i + 1] - t[i]) / (q[i + 1] - q[i])


def measured_periods(pend: Pendulum, amplitudes, n_small_periods: float) -> list[float]:
    """Release from rest at each amplitude; the mean spacing of upward zero crossings."""
    t0 = 2 * math.pi * math.sqrt(pend.length / pend.gravity)
    dt = t0 / 400
    n = int(n_small_periods * 400)
    z0 = torch.tensor([[a, 0.0] for a in amplitudes], dtype=torch.float64)
    t, z = integrators.rollout(pend.vector_field, z0, dt, n, "rk4")
    periods = []
    for b in range(len(amplitudes)):
        tc = upward_crossings(t, z[:, b, 0])
        assert len(tc) >= 3, (amplitudes[b], tc)
        periods.append(float(np.diff(tc).mean()))
    return periods


def test_small_angle_period():
    pend = systems.get_system("pendulum", **PARAMS)
    expected = 2 * math.pi * math.sqrt(PARAMS["length"] / PARAMS["gravity"])
    (measured,) = measured_periods(pend, [1e-3], n_small_periods=3.2)
    assert abs(measured / expected - 1) < 1e-3, (measured, expected)
    assert pend.period(0.0) == pytest.approx(expected, rel=1e-12)


def test_large_amplitude_period_matches_the_elliptic_integral():
    pend = systems.get_system("pendulum", **PARAMS)
    amplitudes = [1.0, 2.0, 2.8]
    measured = measured_periods(pend, amplitudes, n_small_periods=8)
    for a, m in zip(amplitudes, measured):
        assert pend.period(a) == pytest.approx(m, rel=1e-5), a
        assert pend.period(-a) == pytest.approx(m, rel=1e-5), -a
    # the test means something: at 2.8 rad the period is far from the small-angle one
    assert measured[-1] > 1.5 * pend.period(0.0)


@pytest.mark.parametrize("amplitude", [math.pi, 4.0, -math.pi, math.nan])
def test_period_refuses_non_periodic_amplitudes(amplitude):
    with pytest.raises(ValueError, match="amplitude"):
        Pendulum().period(amplitude)


# -- energy --------------------------------------------------------------------------------
def test_damped_pendulum_loses_energy_monotonically():
    pend = systems.get_system("pendulum", damping=0.3, **PARAMS)
    assert pend.is_conserved("energy") is False
    assert systems.get_system("pendulum", **PARAMS).is_conserved("energy") is True
    z0 = pend.sample_initial(6, seed=3)
    _, z = integrators.rollout(pend.vector_field, z0, 0.02, 1500, "rk4", every=5)
    e = pend.energy(z)  # (T, B)
    e0 = e[0]
    # non-increasing, up to RK4's error near the turning points where dE/dt = 0
    assert (e[1:] - e[:-1] <= 1e-10 * e0).all()
    assert (e[-1] < 0.5 * e0).all()


def test_energy_balance_of_the_damped_field():
    """dH/dt = ∇H · f = −b p² / (m l²) exactly, at any state."""
    b = 0.7
    pend = systems.get_system("pendulum", damping=b, **PARAMS)
    z = random_states(200).requires_grad_(True)
    (grad,) = torch.autograd.grad(pend.energy(z).sum(), z)
    rate = (grad * pend.vector_field(z)).sum(-1)
    expected = -b * z[:, 1] ** 2 / (PARAMS["mass"] * PARAMS["length"] ** 2)
    assert torch.allclose(rate, expected.detach(), rtol=1e-12, atol=1e-12)


def random_states(n: int, seed: int = 0) -> torch.Tensor:
    """States far beyond the training band too: q in [-10, 10], p in [-50, 50]."""
    g = torch.Generator().manual_seed(seed)
    u = 2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1
    return u * torch.tensor([10.0, 50.0], dtype=torch.float64)


def test_vector_field_is_symplectic_gradient_of_energy():
    """With b = 0, f = J ∇H with J = [[0, 1], [−1, 0]], ∇H by autograd of energy()."""
    pend = systems.get_system("pendulum", **PARAMS)
    z = random_states(500).requires_grad_(True)
    (grad,) = torch.autograd.grad(pend.energy(z).sum(), z)
    j_grad = torch.stack([grad[:, 1], -grad[:, 0]], -1)
    assert torch.allclose(pend.vector_field(z).detach(), j_grad, rtol=1e-12, atol=1e-10)


def test_lagrangian_and_momentum_are_the_legendre_transform_of_energy():
    pend = systems.get_system("pendulum", **PARAMS)
    s = random_states(300, seed=1)
    q, qdot = s[:, :1], (s[:, 1:] / 10).requires_grad_(True)
    lag = pend.lagrangian(q, qdot)  # (B,)
    assert lag.shape == (300,)
    (dl_dqdot,) = torch.autograd.grad(lag.sum(), qdot)
    p = pend.momentum(q, qdot)
    assert torch.allclose(p, dl_dqdot, rtol=1e-12)  # p = ∂L/∂q̇
    z = torch.cat([q, p], -1).detach()
    hamiltonian = (p * qdot).sum(-1) - lag  # H = p q̇ − L
    assert torch.allclose(hamiltonian.detach(), pend.energy(z), rtol=1e-12, atol=1e-10)
    assert torch.allclose(pend.velocity(z), qdot.detach(), rtol=1e-12)  # the inverse map
    # Euler–Lagrange: d/dt ∂L/∂q̇ = ∂L/∂q is the field's ṗ
    q_req = q.clone().requires_grad_(True)
    (dl_dq,) = torch.autograd.grad(pend.lagrangian(q_req, qdot.detach()).sum(), q_req)
    assert torch.allclose(dl_dq, pend.vector_field(z)[:, 1:], rtol=1e-12, atol=1e-10)


# -- the sampler ---------------------------------------------------------------------------
def test_sampler_is_seeded():
    pend = systems.get_system("pendulum", **PARAMS)
    a = pend.sample_initial(64, seed=3)
    assert torch.equal(a, pend.sample_initial(64, seed=3))
    assert not torch.allclose(a, pend.sample_initial(64, seed=4))
    assert a.shape == (64, 2) and a.dtype == torch.float64
    assert pend.sample_initial(8, seed=3, dtype=torch.float32).dtype == torch.float32


def test_sampler_energies_fill_the_band():
    band = (0.2, 0.6)
    pend = systems.get_system("pendulum", energy_band=band, **PARAMS)
    separatrix = 2 * PARAMS["mass"] * PARAMS["gravity"] * PARAMS["length"]
    z = pend.sample_initial(500, seed=0)
    frac = pend.energy(z) / separatrix
    assert frac.min() >= band[0] - 1e-12 and frac.max() <= band[1] + 1e-12
    assert frac.min() < band[0] + 0.02 and frac.max() > band[1] - 0.02  # the whole band
    assert (z[:, 0].abs() < math.pi).all()  # librating: between the turning points
    assert (z[:, 0] > 0).any() and (z[:, 0] < 0).any()  # both sides of the vertical
    assert (z[:, 1] > 0).any() and (z[:, 1] < 0).any()  # both senses of motion


def test_sampler_large_scale_gives_rotating_orbits():
    band, scale = (0.1, 0.8), 12.0
    pend = systems.get_system("pendulum", energy_band=band, **PARAMS)
    separatrix = 2 * PARAMS["mass"] * PARAMS["gravity"] * PARAMS["length"]
    z0 = pend.sample_initial(32, seed=0, scale=scale)
    frac = pend.energy(z0) / separatrix
    assert frac.min() >= band[0] * scale - 1e-9 and frac.max() <= band[1] * scale + 1e-9
    assert (frac > 1).all()  # above the separatrix
    # rotating: the angular momentum never changes sign, the angle leaves (−π, π)
    _, z = integrators.rollout(pend.vector_field, z0, 0.01, 1000, "rk4", every=10)
    assert (z[:, :, 1].sign() == z0[:, 1].sign()).all()
    assert (z[-1, :, 0].abs() > math.pi).all()


# -- refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, value", [
    ("mass", -1.0), ("length", 0.0), ("gravity", math.nan), ("damping", -0.1),
    ("gravity", math.inf), ("energy_band", (math.nan, 0.5)), ("energy_band", (0.5, 0.3)),
])
def test_bad_parameters_are_refused_naming_parameter_and_range(name, value):
    for make, what in ((systems.get_system, "pendulum"), (systems.build, Pendulum)):
        with pytest.raises(ParameterError) as err:
            make(what, **{name: value})
        msg = str(err.value)
        assert f"Pendulum.{name}" in msg and systems.describe_range(Pendulum, name) in msg, msg


def test_unknown_parameter_is_refused_listing_the_valid_ones():
    with pytest.raises(ParameterError) as err:
        systems.get_system("pendulum", stiffness=1.0)
    msg = str(err.value)
    assert "stiffness" in msg
    for name in ("mass", "length", "gravity", "damping"):
        assert name in msg
