"""The Leray projection of a learned field: divergence-free everywhere, the identity on
divergence-free fields, zero on gradients, and mass-conserving under :func:`Flow.carry`.

All on untrained (seeded) weights, float64 unless stated. Tolerances that are not
round-off are named and explained.
"""

import copy
import math

import pytest
import torch

from conserv_core import models
from conserv_core.leray import LerayField
from conserv_core.models import divfree
from conserv_core.systems import get_system
from conserv_core.systems.flow import spectral_grid

ROUND_OFF = 1e-12  # relative, for what the spectral projection holds exactly
TIMES = (0.0, 0.7, 1.9)


def small_flow(**params):
    return get_system("flow", **{"grid": 32, **params})


def baseline(seed: int = 0, arch: str = "field_mlp"):
    return models.build(arch, generator=torch.Generator().manual_seed(seed)).double()


def random_points(n: int = 256, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (2 * math.pi * torch.rand(n, 2, generator=g, dtype=torch.float64)).to(dtype)


def gradient_scale(model, xy, t) -> float:
    """rms over the points of the Frobenius norm of ``∇u`` (autograd): what ``∇·u`` is
    measured against."""
    p = xy.clone().requires_grad_(True)
    u = model(p, t)
    rows = [torch.autograd.grad(u[:, i].sum(), p, retain_graph=True)[0] for i in range(2)]
    return float(torch.stack(rows, 1).pow(2).sum((1, 2)).mean().sqrt())


MEAN = (0.3, -0.2)


def taylor_green(xy, t):
    """Exactly band-limited and divergence-free, with a mean flow and a time dependence."""
    x, y = xy[:, 0], xy[:, 1]
    a = math.exp(-0.5 * float(t))
    return torch.stack([a * torch.sin(x) * torch.cos(y) + MEAN[0], -a * torch.cos(x) * torch.sin(y) + MEAN[1]], -1)


def gradient_field(xy, t):
    """``∇φ`` with ``φ = sin x cos 2y``, plus the mean flow (which is not a gradient)."""
    x, y = xy[:, 0], xy[:, 1]
    return torch.stack([torch.cos(x) * torch.cos(2 * y) + MEAN[0], -2 * torch.sin(x) * torch.sin(2 * y) + MEAN[1]], -1)


# -- 1. divergence-free at every point ----------------------------------------------------
def test_projected_divergence_is_round_off_off_grid():
    flow, model = small_flow(), baseline()
    lf = LerayField(model, flow)
    xy = random_points()
    for t in TIMES:
        scale = gradient_scale(model, xy, t)
        d = lf.divergence(xy, t)
        assert d.abs().max() <= ROUND_OFF * scale, t
        # computed as the series of i k·ĉ_k, not assumed: round-off, not zeros
        assert (d != 0).any()
        # the unprojected baseline at the same points: O(1) relative, so the test can tell
        raw = divfree.divergence(model, xy, t)
        assert raw.pow(2).mean().sqrt() > 0.05 * scale, t


def test_projected_velocity_is_divergence_free_by_finite_differences():
    # independent of the divergence row: 4th-order central differences of the velocity
    # series itself. FD error at h = 1e-3: ~h⁴|∂⁵u| + ε|u|/h, measured ~3e-12 absolute.
    flow, model = small_flow(), baseline()
    lf = LerayField(model, flow)
    xy, h, t = random_points(), 1e-3, 0.5

    def d(i):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = h
        v = lambda s: lf.velocity(xy + s * e, t)[:, i]  # noqa: E731
        return (-v(2) + 8 * v(1) - 8 * v(-1) + v(-2)) / (12 * h)

    assert (d(0) + d(1)).abs().max() <= 1e-9 * gradient_scale(model, xy, t)


# -- 2. the identity on divergence-free fields --------------------------------------------
def test_projection_keeps_a_band_limited_divergence_free_field_exactly():
    flow = small_flow()
    lf = LerayField(taylor_green, flow)
    xy = random_points()
    for t in TIMES:
        u = taylor_green(xy, t)
        assert torch.allclose(lf.velocity(xy, t), u, rtol=0, atol=ROUND_OFF), t
        assert lf.projection_error(t) < ROUND_OFF


def test_projection_of_the_divfree_model_is_the_identity_up_to_truncation():
    # The stream-function network is divergence-free but not band-limited (tanh makes
    # harmonics of its Fourier features), so on the grid P u differs from u by the modes
    # the 2/3 rule drops: measured 2e-4 (rms, relative) at 64², 4e-2 at 32². Against the
    # truncated u (mask · û) only aliasing of the dropped modes remains: measured 1e-8.
    flow = get_system("flow", grid=64)
    g = spectral_grid(64)
    model = baseline(arch="divfree")
    lf = LerayField(model, flow)
    pts = flow.grid_points()
    for t in (0.0, 1.3):
        with torch.no_grad():
            u = model(pts, t)
        u_trunc = g.inverse(g.mask * g.forward(u.T.reshape(2, 64, 64))).reshape(2, -1).T
        pu = lf.velocity(pts, t)
        rms = u.pow(2).mean().sqrt()
        assert (pu - u).pow(2).mean().sqrt() < 1e-3 * rms
        assert (pu - u_trunc).pow(2).mean().sqrt() < 1e-6 * rms
        assert lf.projection_error(t) < 1e-3


# -- 3. zero on gradients -----------------------------------------------------------------
def test_projection_removes_a_gradient_field_but_keeps_the_mean():
    flow = small_flow()
    xy = random_points()
    mean = torch.tensor(MEAN, dtype=torch.float64).expand(xy.shape[0], 2)
    lf = LerayField(gradient_field, flow)
    assert torch.allclose(lf.velocity(xy, 0.3), mean, rtol=0, atol=ROUND_OFF)
    # and a sum splits exactly (Helmholtz–Leray): P(TG + ∇φ) = TG
    both = LerayField(lambda p, t: taylor_green(p, t) + gradient_field(p, t) - torch.tensor(MEAN, dtype=p.dtype), flow)
    assert torch.allclose(both.velocity(xy, 0.3), taylor_green(xy, 0.3), rtol=0, atol=ROUND_OFF)


# -- 4. mass under carry ------------------------------------------------------------------
def test_dye_mass_is_conserved_through_the_projected_baseline():
    flow, model = small_flow(), baseline()
    lf = LerayField(model, flow)
    _, xy, logj = flow.carry(lf.velocity, lf.divergence, flow.dye_patch(), 0.0, flow.horizon, flow.dt)
    assert torch.isfinite(xy).all()
    assert (flow.mass(logj) - 1).abs().max() <= 1e-10
    # the same baseline without the projection loses or gains dye visibly
    _, _, logj_raw = flow.carry(lambda p, t: model(p, t).detach(),
                                lambda p, t: divfree.divergence(model, p, t).detach(),
                                flow.dye_patch(), 0.0, flow.horizon, flow.dt)
    assert (flow.mass(logj_raw) - 1).abs().max() > 1e-4


# -- 5. float32 ---------------------------------------------------------------------------
def test_float32_in_float32_out():
    flow = small_flow()
    m32 = models.build("field_mlp", generator=torch.Generator().manual_seed(0))
    m64 = copy.deepcopy(m32).double()
    lf32, lf64 = LerayField(m32, flow, dtype=torch.float32), LerayField(m64, flow)
    xy64 = random_points()
    xy32 = xy64.float()
    u, d = lf32.velocity(xy32, 0.5), lf32.divergence(xy32, 0.5)
    assert u.dtype == torch.float32 and d.dtype == torch.float32 and u.shape == (256, 2) and d.shape == (256,)
    ref = lf64.velocity(xy64, 0.5)
    assert (u.double() - ref).abs().max() < 1e-5 * ref.abs().max()  # float32 sampling of the model
    assert d.abs().max() <= ROUND_OFF * gradient_scale(m64, xy64, 0.5)


# -- times and the cache ------------------------------------------------------------------
def test_tensor_times_match_float_times():
    lf = LerayField(baseline(), small_flow())
    xy = random_points(60)
    t = torch.tensor([0.0, 0.4, 1.1], dtype=torch.float64).repeat(20)
    out = lf.velocity(xy, t)
    for tj in (0.0, 0.4, 1.1):
        sel = t == tj
        assert torch.equal(out[sel], lf.velocity(xy[sel], tj))
    with pytest.raises(ValueError, match="shape"):
        lf.velocity(xy, t[:5])


def test_cache_is_lru_by_time_and_follows_the_weights():
    model = baseline()
    lf = LerayField(model, small_flow(), cache_size=2)
    xy = random_points(16)
    lf.velocity(xy, 0.1)
    lf.divergence(xy, 0.1)
    lf.velocity(xy, 0.2)
    assert lf.n_samples == 2
    lf.velocity(xy, 0.1)  # a hit, and now the most recent
    lf.velocity(xy, 0.3)  # evicts 0.2
    assert lf.n_samples == 3
    lf.velocity(xy, 0.2)
    assert lf.n_samples == 4
    before = lf.velocity(xy, 0.2).clone()
    with torch.no_grad():
        model.net[-1].bias.add_(0.5)  # an optimiser step, in place
    after = lf.velocity(xy, 0.2)
    assert lf.n_samples == 5 and not torch.allclose(before, after)
