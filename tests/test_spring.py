"""The mass-spring's truth: the closed-form solution anchors the integrators, the
Hamiltonian and Lagrangian structure, the HNN paper's parameters, the sampler.

Non-unit ``k`` and ``m`` are used where a swapped formula would hide at ``k = m = 1``.
"""

from __future__ import annotations

import math

import pytest
import torch

from conserv_core import integrators, models
from conserv_core.systems import ALL_SYSTEMS, Spring, get_system

PARAMS = dict(k=3.0, mass=0.7)

#: float64 round-off over a few hundred closed-form evaluations
ROUND_OFF = 1e-12


def fitted_order(dts: list[float], errors: list[float]) -> float:
    """Least-squares slope of log(error) against log(dt)."""
    x, y = torch.tensor(dts).log(), torch.tensor(errors, dtype=torch.float64).log()
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def test_registered_separable_with_energy():
    s = get_system("spring")
    assert ALL_SYSTEMS["spring"] is Spring and s.separable
    assert s.invariant_names() == ("energy",) and s.is_conserved("energy")
    assert (s.dof, s.state_dim) == (1, 2)


def test_exact_solution_is_periodic_and_conserves_energy():
    s = get_system("spring", **PARAMS)
    z0 = s.sample_initial(8, seed=0)
    period = 2 * math.pi * math.sqrt(PARAMS["mass"] / PARAMS["k"])
    t = torch.linspace(0.0, 3 * period, 301, dtype=torch.float64)
    z = s.exact_solution(z0, t)  # (T, B, 2)
    assert z.shape == (301, 8, 2) and torch.equal(z[0], z0)
    torch.testing.assert_close(z[-1], z0, rtol=0, atol=ROUND_OFF)  # three whole periods
    e = s.energy(z)
    assert float(((e - e[0]).abs() / e[0]).max()) < ROUND_OFF
    # it solves the ODE: finite differences of the exact path match the vector field
    h = 1e-5
    ahead = s.exact_solution(z0, torch.tensor([h], dtype=torch.float64))[0]
    behind = s.exact_solution(z0, torch.tensor([-h], dtype=torch.float64))[0]
    torch.testing.assert_close((ahead - behind) / (2 * h), s.vector_field(z0), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("method", sorted(integrators.INTEGRATORS))
def test_every_integrator_converges_to_the_exact_solution_at_its_order(method):
    """The closed form anchors the solvers: the fitted slope of the error at t = 2 against
    dt is each method's order (within 0.3)."""
    s = get_system("spring", **PARAMS)
    z0 = s.sample_initial(4, seed=1)
    t_end = 2.0
    exact = s.exact_solution(z0, torch.tensor([t_end], dtype=torch.float64))[0]
    dts = [0.04, 0.02, 0.01] if method != "euler" else [0.004, 0.002, 0.001]
    errors = []
    for dt in dts:
        field = s.gradient_form if method in integrators.NEEDS_ENERGY else s.vector_field
        _, z = integrators.rollout(field, z0, dt, int(round(t_end / dt)), method)
        errors.append(float((z[-1] - exact).abs().max()))
    assert fitted_order(dts, errors) == pytest.approx(integrators.ORDER[method], abs=0.3), errors


def test_reference_rollout_is_the_exact_solution():
    s = get_system("spring", **PARAMS)
    z0 = s.sample_initial(5, seed=2)
    t = torch.linspace(0.0, 4.0, 9, dtype=torch.float64)
    torch.testing.assert_close(s.reference_rollout(z0, t), s.exact_solution(z0, t), rtol=0, atol=0)
    rk4 = integrators.solve(s.vector_field, z0, t, "rk4", max_dt=1e-3)
    torch.testing.assert_close(s.reference_rollout(z0, t), rk4, rtol=0, atol=1e-10)


def test_vector_field_is_the_symplectic_gradient_of_the_energy():
    s = get_system("spring", **PARAMS)
    z = s.sample_initial(16, seed=3, scale=4.0).requires_grad_(True)
    (grad,) = torch.autograd.grad(s.energy(z).sum(), z)
    torch.testing.assert_close(s.vector_field(z.detach()), torch.cat([grad[:, 1:], -grad[:, :1]], -1))


def test_legendre_map_and_lagrangian():
    s = get_system("spring", **PARAMS)
    z = s.sample_initial(16, seed=4)
    q, p = s.split(z)
    qdot = s.velocity(z)
    torch.testing.assert_close(qdot, s.vector_field(z)[:, :1])
    torch.testing.assert_close(s.momentum(q, qdot), p)
    torch.testing.assert_close((p * qdot).sum(-1) - s.lagrangian(q, qdot), s.energy(z))
    # the engine's Euler–Lagrange solver on the true Lagrangian gives q̈ = −(k/m) q
    lnn = models.LagrangianNN(1, lagrangian=s.lagrangian)
    with torch.no_grad():
        qddot = lnn(torch.cat([q, qdot], -1))[:, 1:]
    torch.testing.assert_close(qddot, -PARAMS["k"] / PARAMS["mass"] * q)


def test_paper_parameters_give_h_equal_q2_plus_p2():
    """k = 2, m = 1/2 is the HNN paper's H = q² + p²; its starts lie on circles of radius r
    in the (q, p) plane, r uniform in radius_band."""
    s = get_system("spring", k=2.0, mass=0.5, radius_band=(0.1, 1.0))
    z = s.sample_initial(2000, seed=5)
    torch.testing.assert_close(s.energy(z), z.pow(2).sum(-1))
    torch.testing.assert_close(s.vector_field(z), torch.cat([2 * z[:, 1:], -2 * z[:, :1]], -1))
    r = z.norm(dim=-1)
    assert 0.1 <= float(r.min()) < 0.11 and 0.99 < float(r.max()) <= 1.0
    assert abs(float(r.mean()) - 0.55) < 0.02  # uniform in radius, not in area
    angle = torch.atan2(z[:, 1], z[:, 0])
    assert float(angle.min()) < -3.0 and float(angle.max()) > 3.0


def test_scale_grows_the_orbits():
    s = get_system("spring", **PARAMS)
    e1 = s.energy(s.sample_initial(500, seed=6))
    e3 = s.energy(s.sample_initial(500, seed=6, scale=3.0))
    torch.testing.assert_close(e3, 9 * e1)  # radius × 3, energy × 9
