"""The charge truth (advection–diffusion by a flow): conservation, exact solutions, order,
the flux's continuity, refusals. Tolerances are named and explained where not round-off.

The system is not registered yet (issue 32, item 1): these tests build it directly.
"""

import math

import numpy as np
import pytest
import torch

from conserv_core.systems import ALL_SYSTEMS, ParameterError, build
from conserv_core.systems import charge as C
from conserv_core.systems import flow as F

ROUND_OFF = 1e-13  # relative, for what the spectral method holds exactly
# the time derivative measured by a 4th-order central difference of the solver's own
# output at h = 1e-3: truncation ~h⁴·|∂⁵ρ| and round-off ~1e-16/h, both far under this
FD_TOL = 1e-7


def small(**params) -> C.Charge:
    base = dict(grid=32, t_end=1.0, n_snapshots=11, horizon=1.0)
    return build(C.Charge, **{**base, **params})


def state_of(system: C.Charge, rho0: torch.Tensor) -> torch.Tensor:
    """``(ω̂, ρ̂)`` with the system's initial flow and a given density grid."""
    g = system.spectral
    return g.mask * g.forward(torch.stack([system.initial_vorticity(), rho0]))


def test_not_registered_yet():
    assert "charge" not in ALL_SYSTEMS


@pytest.mark.parametrize("velocity", ["navier_stokes", "frozen"])
@pytest.mark.parametrize("kappa", [0.0, 0.02])
def test_charge_constant_over_a_long_solve(velocity, kappa):
    s = small(velocity=velocity, kappa=kappa, initial_density="random", mean_u=0.4, mean_v=-0.7, horizon=8.0)
    t = s.snapshot_times()
    states = s.solve(t)  # (T, 2, n, m)
    assert t[-1] >= 8.0 and len(t) > 80
    # the k = 0 mode is multiplied by k = 0 every stage: it never changes, bit for bit
    assert torch.equal(states[:, 1, 0, 0], states[0, 1, 0, 0].expand(len(t)))
    rho, _, _ = s.fields(states)
    q = C.charge(rho)
    assert ((q - q[0]).abs().max() / q[0].abs()) < ROUND_OFF
    # and the density did move: the check is not passed by a field standing still
    assert (rho[-1] - rho[0]).abs().max() > 0.1


@pytest.mark.parametrize("kappa", [0.01, 0.1])
def test_single_mode_decays_exactly(kappa):
    s = small(kappa=kappa, initial_flow="rest")
    x, y = s.grid_xy()
    mode = torch.cos(2 * x[None, :] - 3 * y[:, None])  # |k|² = 13
    t = torch.tensor([0.3, 1.0, 2.5, 7.0], dtype=torch.float64)
    rho, _, _ = s.fields(s.solve(t, state_of(s, 1.0 + mode)))
    exact = 1.0 + torch.exp(-kappa * 13 * t)[:, None, None] * mode
    assert (rho - exact).abs().max() < ROUND_OFF


@pytest.mark.parametrize("kappa", [0.0, 0.05])
def test_uniform_flow_translates_exactly(kappa):
    U, V = 0.7, -1.3
    s = small(kappa=kappa, initial_flow="rest", mean_u=U, mean_v=V)
    x, y = s.grid_xy()
    X, Y = x[None, :], y[:, None]

    def rho_exact(t):  # ρ(x − Ut, t), each mode damped by exp(−κ|k|²t)
        xs, ys = X - U * t, Y - V * t
        return (1.0 + math.exp(-5 * kappa * t) * torch.cos(xs + 2 * ys)
                + 0.5 * math.exp(-10 * kappa * t) * torch.sin(3 * xs - ys))

    t = torch.tensor([0.37, 1.9, 4.2], dtype=torch.float64)  # shifts off the grid
    rho, j, _ = s.fields(s.solve(t, state_of(s, rho_exact(0.0))))
    for k, tk in enumerate(t.tolist()):
        assert (rho[k] - rho_exact(tk)).abs().max() < ROUND_OFF
    # the flux is ρU − κ∇ρ: at κ = 0 exactly ρU
    if kappa == 0.0:
        assert torch.allclose(j, rho[:, None] * torch.tensor([U, V], dtype=torch.float64)[:, None, None],
                              rtol=0, atol=ROUND_OFF)


@pytest.mark.slow
def test_fourth_order_in_dt():
    # Taylor–Green flow (|u| + |v| ≤ 1: RK4 stable up to dt ≈ 0.25 at k_max = 10) and a
    # random density, coupled Navier–Stokes, a mean flow, diffusion: every term is in play
    s = small(initial_flow="taylor_green", initial_density="random", kappa=0.02, viscosity=0.02,
              mean_u=0.3, mean_v=0.2)
    s0 = s.initial_state()
    t = torch.tensor([1.0], dtype=torch.float64)

    def rho_at(dt):
        return s.fields(s.solve(t, s0, fixed_dt=dt))[0][0]

    ref = rho_at(1 / 512)
    dts = np.array([1 / 8, 1 / 16, 1 / 32, 1 / 64])
    errs = np.array([float((rho_at(dt) - ref).abs().max()) for dt in dts])
    order = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert 3.7 < order < 4.4, (order, errs)
    assert errs[-1] > 1e3 * ROUND_OFF  # the finest error is still time error, not round-off


@pytest.mark.parametrize("velocity", ["navier_stokes", "frozen"])
def test_grid_flux_divergence_is_minus_the_rate(velocity):
    s = small(velocity=velocity, initial_density="random", kappa=0.03, mean_u=-0.5, mean_v=0.8)
    g = s.spectral
    states = s.solve(torch.tensor([0.0, 0.4], dtype=torch.float64))
    for state in states:
        rho, j, uv = s.fields(state)
        div_j = F.grid_divergence(j)  # (n, n)
        rate = g.inverse(s.rate(state)[1])  # ∂ρ/∂t as the solver integrates it
        scale = rate.abs().max()
        assert (rate + div_j).abs().max() < ROUND_OFF * scale
        # and the advective form, written out here: −P(u·∇ρ) + κ∇²ρ (u divergence-free)
        r_hat = g.forward(rho)
        rx, ry = g.inverse(g.ikx * r_hat), g.inverse(g.iky * r_hat)
        advective = g.inverse(-g.mask * g.forward(uv[0] * rx + uv[1] * ry) - s.kappa * g.k2 * r_hat)
        assert (rate - advective).abs().max() < ROUND_OFF * scale
    # the rate is the time derivative of the solver's own output (4th-order central
    # difference over steps of h, whose own error ~h⁵ is far below the difference's)
    h = 1e-3
    start = states[1:]  # the state at 0.4 − 2h, say: the system is autonomous
    path = torch.cat([start, s.solve(h * torch.arange(1.0, 5.0, dtype=torch.float64), start[0], fixed_dt=h)])
    r = s.fields(path)[0]  # (5, n, n) at −2h, −h, 0, h, 2h
    fd = (r[0] - 8 * r[1] + 8 * r[3] - r[4]) / (12 * h)
    rate = g.inverse(s.rate(path[2])[1])
    assert (fd - rate).abs().max() < FD_TOL * rate.abs().max()


def test_snapshots_and_data():
    s = small(initial_density="random", n_samples=64)
    t, rho, j = s.snapshots()
    assert rho.shape == (len(t), 32, 32) and j.shape == (len(t), 2, 32, 32)
    xyt, target = s.sample_data(seed=3, dtype=torch.float64)
    again, _ = s.sample_data(seed=3, dtype=torch.float64)
    assert torch.equal(xyt, again) and xyt.shape == (64, 3) and target.shape == (64, 3)
    assert xyt[:, 2].max() <= s.t_end + 1e-12
    # each target is the snapshot at that grid point
    n, dx = s.grid, 2 * math.pi / s.grid
    it = torch.round(xyt[:, 2] / s.snapshot_dt).long()
    ix, iy = torch.round(xyt[:, 0] / dx).long() % n, torch.round(xyt[:, 1] / dx).long() % n
    assert torch.equal(target[:, 0], rho[it, iy, ix]) and torch.equal(target[:, 1], j[it, 0, iy, ix])


@pytest.mark.parametrize("name, value, text", [
    ("kappa", -0.1, "[0.0, 1.0]"),
    ("kappa", float("nan"), "[0.0, 1.0]"),
    ("mean_u", 6.0, "[-5.0, 5.0]"),
    ("grid", 33, "[32, 256]"),
    ("velocity", "stokes", "navier_stokes"),
])
def test_refuses_out_of_range(name, value, text):
    with pytest.raises(ParameterError) as err:
        build(C.Charge, **{name: value})
    assert name in str(err.value) and text in str(err.value)
