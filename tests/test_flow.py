"""The incompressible-flow truth: exact solution, invariants, parcels, data, refusals.

Tolerances are named and explained where they are not round-off.
"""

import math

import pytest
import torch

from conserv_core.systems import ALL_SYSTEMS, ParameterError, get_system
from conserv_core.systems import flow as F

ROUND_OFF = 1e-12  # relative, for quantities the spectral method holds exactly
# ν = 0 with the 2/3 rule is an exact Galerkin truncation: E and Z drift only through the
# RK4 time error (measured ~1e-8 at 64², CFL 0.5, t = 1)
INVISCID_TOL = 1e-6


def small_flow(**params) -> F.Flow:
    base = dict(grid=32, t_end=1.0, n_snapshots=21, horizon=1.0)
    return get_system("flow", **{**base, **params})


def test_registered():
    assert ALL_SYSTEMS["flow"] is F.Flow
    f = get_system("flow")
    assert f.kind == "field" and f.invariant_names() == ("mass", "divergence", "kinetic_energy", "enstrophy")
    assert set(f.equations) and f.teaching_note and f.title


@pytest.mark.parametrize("grid", [32, 64])
def test_taylor_green_decays_exactly(grid):
    nu = 0.05
    f = small_flow(grid=grid, viscosity=nu, initial="taylor_green")
    t, u = f.snapshots()
    x, y = f.grid_xy()
    X, Y = x[None, :], y[:, None]
    u_exact = torch.stack([torch.sin(X) * torch.cos(Y), -torch.cos(X) * torch.sin(Y)])  # (2, n, n)
    decay = torch.exp(-2 * nu * t)[:, None, None, None]
    assert torch.allclose(u, decay * u_exact, rtol=0, atol=1e-10)
    _, omega = f.snapshot_vorticity()
    assert torch.allclose(omega, decay[:, 0] * 2 * torch.sin(X) * torch.sin(Y), rtol=0, atol=1e-10)
    # and the energy follows E(t) = E(0) exp(-4νt) with E(0) = 1/4
    assert torch.allclose(F.kinetic_energy(u), 0.25 * torch.exp(-4 * nu * t), rtol=1e-12, atol=0)


@pytest.mark.parametrize("initial", ["taylor_green", "random"])
def test_solver_velocity_is_divergence_free(initial):
    f = small_flow(initial=initial)
    _, u = f.snapshots()
    scale = u.pow(2).mean().sqrt() * f.grid / 3  # |∇u| is at most k_max |u|
    assert F.grid_divergence(u).abs().max() < ROUND_OFF * scale
    # and at arbitrary points and times, evaluated from the Fourier series
    xy = 2 * math.pi * torch.rand(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.linspace(0, 1, 500, dtype=torch.float64)
    assert f.divergence(xy, t).abs().max() < ROUND_OFF * f.divergence_scale()


@pytest.mark.parametrize("seed", [0, 1])
def test_inviscid_energy_and_enstrophy_conserved(seed):
    f = get_system("flow", grid=64, viscosity=0.0, field_seed=seed, t_end=1.0, n_snapshots=11, horizon=1.0)
    assert f.is_conserved("kinetic_energy") and f.is_conserved("enstrophy")
    t, omega = f.snapshot_vorticity()
    e = F.kinetic_energy(F.velocity_field(omega))
    z = F.enstrophy(omega)
    assert (e / e[0] - 1).abs().max() < INVISCID_TOL
    assert (z / z[0] - 1).abs().max() < INVISCID_TOL
    # the flow did evolve: otherwise conservation would be trivial
    assert (omega[-1] - omega[0]).abs().max() > 0.1 * omega[0].abs().max()


def test_viscous_energy_decays_at_rate_two_nu_enstrophy():
    nu = 0.02
    f = small_flow(viscosity=nu, n_snapshots=41)
    assert not f.is_conserved("kinetic_energy") and f.is_conserved("mass")
    t, omega = f.snapshot_vorticity()
    e, z = F.kinetic_energy(F.velocity_field(omega)), F.enstrophy(omega)
    assert (e[1:] < e[:-1]).all() and (z[1:] < z[:-1]).all()
    # dE/dt = -2νZ; central differences at Δt = 0.025 are accurate to ~1e-4 relative
    de_dt = (e[2:] - e[:-2]) / (t[2:] - t[:-2])
    assert torch.allclose(de_dt, -2 * nu * z[1:-1], rtol=1e-3, atol=0)


def test_same_seed_same_flow_at_every_grid():
    coarse, fine = small_flow(grid=32).initial_vorticity(), small_flow(grid=64).initial_vorticity()
    assert torch.allclose(coarse, fine[::2, ::2], rtol=0, atol=1e-12)
    assert not torch.allclose(coarse, small_flow(field_seed=1).initial_vorticity())


def test_point_velocity_matches_grid_and_interpolates_in_time():
    f = small_flow()
    t, u = f.snapshots()  # (T,), (T, 2, n, n)
    pts = f.grid_points()
    n = f.grid
    at = f.velocity(pts, float(t[4])).T.reshape(2, n, n)
    assert torch.allclose(at, u[4], rtol=0, atol=1e-12)
    mid = f.velocity(pts, float(0.25 * t[4] + 0.75 * t[5])).T.reshape(2, n, n)
    assert torch.allclose(mid, 0.25 * u[4] + 0.75 * u[5], rtol=0, atol=1e-12)
    # a time per point gives the same as one shared time
    tt = torch.full((pts.shape[0],), float(t[7]) + 0.01, dtype=torch.float64)
    assert torch.allclose(f.velocity(pts, tt), f.velocity(pts, float(tt[0])), rtol=0, atol=1e-13)
    # periodic: a point and its image one period away agree
    assert torch.allclose(f.velocity(pts[:50] + 2 * math.pi, 0.3), f.velocity(pts[:50], 0.3), atol=1e-12)


def test_float32_in_float32_out():
    f = small_flow()
    xy = f.dye_patch(64, dtype=torch.float32)
    assert f.velocity(xy, 0.2).dtype == torch.float32
    assert f.divergence(xy, torch.full((64,), 0.2)).dtype == torch.float32
    assert torch.allclose(f.velocity(xy, 0.2).double(), f.velocity(xy.double(), 0.2), atol=1e-5)


def test_true_parcels_keep_mass_and_area():
    f = small_flow()
    _, xy, log_j = f.carry()
    assert log_j.shape == (xy.shape[0], f.n_parcels)
    assert (f.mass(log_j) - 1).abs().max() < 1e-6
    # the patch really moved and deformed
    assert (xy[-1] - xy[0]).norm(dim=-1).max() > 0.3
    # geometry: the carried boundary's polygon keeps its area up to its chord error, which
    # falls as 1/m² with the number of boundary points m (fitted order ≈ 2)
    errs = []
    for m in (256, 512, 1024):
        _, b, _ = f.carry(xy0=f.dye_boundary(m))
        area = F.patch_area(b)
        errs.append(float((area / area[0] - 1).abs().max()))
    order = math.log2(errs[0] / errs[1]), math.log2(errs[1] / errs[2])
    assert all(1.6 < o < 2.4 for o in order), (errs, order)
    assert errs[-1] < 1e-4


def test_compressible_field_mass_follows_liouville():
    """u = (sin x, 0): x(t) = 2 atan(tan(x0/2) e^t) and J = ∂x/∂x0 in closed form, so the
    parcel mass must change, and by exactly this much."""
    f = small_flow(patch_center=(2.0, 3.0), patch_radius=0.5)

    def vel(xy, t):
        return torch.stack([torch.sin(xy[:, 0]), torch.zeros_like(xy[:, 0])], -1)

    def div(xy, t):
        return torch.cos(xy[:, 0])

    x0 = f.dye_patch()
    t, xy, log_j = F.carry(vel, div, x0, horizon=1.0, dt=0.01)
    tt, a = t[:, None], x0[:, 0]
    exact_log_j = tt - torch.log(torch.cos(a / 2) ** 2 + torch.sin(a / 2) ** 2 * torch.exp(2 * tt))
    assert torch.allclose(log_j, exact_log_j, rtol=0, atol=1e-8)
    exact_x = 2 * torch.atan(torch.tan(a / 2) * torch.exp(tt))
    assert torch.allclose(xy[..., 0], exact_x, rtol=0, atol=1e-8)
    m = f.mass(log_j)
    assert abs(float(m[-1]) - 1) > 0.1
    # the polygon area of the carried boundary tells the same story
    _, b, _ = F.carry(vel, div, f.dye_boundary(1024), horizon=1.0, dt=0.01)
    area = F.patch_area(b)
    assert torch.allclose(area / area[0], m, rtol=2e-3, atol=0)


def test_dye_patch_is_uniform_on_the_disc():
    f = small_flow(patch_radius=0.5, patch_center=(1.0, 2.0))
    xy = f.dye_patch(4000)
    r = (xy - torch.tensor([1.0, 2.0], dtype=torch.float64)).norm(dim=-1)
    assert r.max() <= 0.5
    # uniform density: the fraction inside radius ρ is (ρ/R)²
    for rho in (0.2, 0.35):
        assert abs(float((r < rho).double().mean()) - (rho / 0.5) ** 2) < 2e-3
    assert F.patch_area(f.dye_boundary(4096)) == pytest.approx(math.pi * 0.25, rel=1e-6)


def test_sample_data():
    f = small_flow(n_samples=500, noise=0.1)
    d = f.sample_data(seed=3)
    assert d.xyt.shape == (500, 3) and d.u.shape == (500, 2) and d.u.dtype == torch.float32
    assert torch.equal(d.xyt, f.sample_data(seed=3).xyt) and not torch.equal(d.xyt, f.sample_data(seed=4).xyt)
    assert d.xyt[:, :2].min() >= 0 and d.xyt[:, :2].max() < 2 * math.pi
    assert d.xyt[:, 2].min() >= 0 and d.xyt[:, 2].max() <= f.t_end
    x = d.xyt.double()
    resid = d.u.double() - f.velocity(x[:, :2], x[:, 2])
    assert 0.08 < float(resid.std()) < 0.12  # the noise asked for, no more
    clean = small_flow(n_samples=500, noise=0.0).sample_data(seed=3, dtype=torch.float64)
    assert torch.allclose(clean.u, f.velocity(clean.xyt[:, :2], clean.xyt[:, 2]), atol=0)
    a, b = d.split(0.8, seed=0)
    assert len(a) == 400 and len(b) == 100


@pytest.mark.parametrize(
    ("params", "name", "range_text"),
    [
        (dict(grid=7), "grid", "[32, 256]"),
        (dict(grid=512), "grid", "[32, 256]"),
        (dict(grid=66 + 1), "grid", "[32, 256]"),
        (dict(viscosity=-0.1), "viscosity", "[0.0, 1.0]"),
        (dict(viscosity=float("nan")), "viscosity", "[0.0, 1.0]"),
        (dict(patch_center=(float("nan"), 1.0)), "patch_center", "6.28"),
        (dict(initial="vortex"), "initial", "taylor_green"),
    ],
)
def test_refusals_name_parameter_and_range(params, name, range_text):
    with pytest.raises(ParameterError, match=name) as err:
        get_system("flow", **params)
    assert range_text in str(err.value)


def test_odd_grid_refused_when_set_later():
    f = get_system("flow")
    with pytest.raises(ValueError, match=r"grid must be an even integer in \[32, 256\]"):
        f.grid = 65
    assert f.grid == 64


def test_cache_follows_parameters_and_horizon():
    f = small_flow()
    xy = f.dye_patch(100)
    before = f.velocity(xy, 0.8)
    f.viscosity = 0.2  # a dashboard edits the live object: nothing stale may survive
    after = f.velocity(xy, 0.8)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, small_flow(viscosity=0.2).velocity(xy, 0.8), atol=0)
    # parcels that outlast the training window get a solved field, not a frozen one
    long = small_flow(horizon=1.5)
    assert float(long.snapshot_times()[-1]) == pytest.approx(1.5)
    assert not torch.allclose(long.velocity(xy, 1.4), long.velocity(xy, 1.0))
    assert torch.allclose(long.velocity(xy, 0.7), small_flow().velocity(xy, 0.7), rtol=0, atol=1e-12)


# -- the out-of-distribution dye test (issue 29): the same patch at later times ------------
def _ood_evaluations(ood_factor: float, keys=("baseline", "divfree")):
    """Untrained models (float64) on a small flow: the problem, the truth's evaluation
    and each model's."""
    from conserv_core import training

    f = small_flow(n_parcels=64)
    cfg = training.make_config("flow", steps=1, width=16, dtype="float64", n_colloc=64, ood_factor=ood_factor)
    evs, problem = {}, None
    for k in keys:
        torch.manual_seed(0)
        tr = training.Trainer(f, k, cfg, problem=problem)
        problem = tr.problem
        evs[k] = tr.evaluate()
    return f, problem, problem.truth(), evs


def test_ood_dye_starts_later_and_only_a_hard_constraint_keeps_its_mass():
    f, problem, truth, evs = _ood_evaluations(3.0)
    # the same duration as the in-distribution carry, from t_end·(3 − 1): ending 3 windows out
    # (t_end: the latest training sample's time)
    t_end = problem.t_end
    assert 0.99 * f.t_end < t_end <= f.t_end
    t_in = evs["baseline"].drift["mass"].t
    for ev in (truth, *evs.values()):
        t = ev.drift_ood["mass"].t
        assert t[0] == pytest.approx(2 * t_end) and t[-1] == pytest.approx(2 * t_end + f.horizon)
        assert len(t) == len(ev.drift["mass"].t)
        d = ev.drift_ood["divergence"].t if "divergence" in ev.drift_ood else t
        assert d[0] == pytest.approx(2 * t_end) and d[-1] == pytest.approx(2 * t_end + f.horizon)
    assert t_in[0] == 0.0
    # the truth is incompressible at every time (frozen past its solved span, still ∇·u = 0)
    assert truth.drift_ood["mass"].largest < ROUND_OFF
    # a stream-function field is divergence-free for any weights, at any time: round-off
    assert evs["divfree"].drift_ood["mass"].largest < ROUND_OFF
    # a plain network's field has sources and sinks out there too, and not the same as in it
    base = evs["baseline"]
    assert base.drift_ood["mass"].largest > 1e-4
    assert base.drift_ood["mass"].rel != base.drift["mass"].rel


@pytest.mark.slow
def test_ood_dye_at_factor_one_is_the_in_distribution_test():
    _, _, truth, evs = _ood_evaluations(1.0)
    for ev in (truth, *evs.values()):
        for q in ev.drift:
            a, b = ev.drift[q], ev.drift_ood[q]
            assert b.t == pytest.approx(a.t, abs=1e-12), q
            assert b.rel == pytest.approx(a.rel, rel=1e-9, abs=1e-15), q
    assert evs["baseline"].drift_ood["mass"].largest > 1e-4  # not two zeros agreeing
