"""A conserved density ρ (a charge, a dye concentration) carried by a 2D flow on ``[0, 2π)²``.

Truth is the advection–diffusion equation in conservation form

    ∂ρ/∂t + ∇·J = 0,    J = ρ u − κ ∇ρ,    u = u'(x, y, t) + U,

with ``u'`` the velocity of :mod:`conserv_core.systems.flow`'s Navier–Stokes vorticity
(``velocity="navier_stokes"``: ω is advanced in the same IF-RK4 step as ρ, so the charge
sees the flow evolve) or that velocity held at its initial field (``velocity="frozen"``:
a steady stirring, cheaper and easier to learn), and ``U = (mean_u, mean_v)`` a uniform
mean flow. The default is the evolving flow: it is the same flow the ``flow`` system shows
(same grid and seed, same initial field), so a lesson can put the two side by side; the
frozen one is for quick fits (``tests/test_charge_training.py``). Q is exact either way.
The coupled state ``s = (ω̂, ρ̂)`` is advanced as ``ds/dt = L s + N(s)``:

* ``L`` is diagonal: ``−ν k² − i k·U`` for ω̂ and ``−κ k² − i k·U`` for ρ̂. Diffusion *and* the
  mean flow are integrated exactly by the integrating factor, so a single Fourier mode
  decays as ``exp(−κ|k|²t)`` and a field under a uniform flow translates as ``ρ(x − Ut)``
  to round-off, whatever the step.
* ``N`` is the fluctuation's transport, formed on the grid and de-aliased by the 2/3 rule:
  ``−u'·∇ω`` for ω (exactly :meth:`SpectralGrid.nonlinear`), and ``−i k·(u'ρ)^`` for ρ, the
  flux form. Its ``k = 0`` entry is a product with ``k = 0``: exactly zero in floating point,
  so the total charge ``Q = ∫ρ dA = (2π)² ρ̂₀/n²`` never changes, not even by round-off.
  With ``u'`` divergence-free and band-limited the flux form equals the advective form
  ``−u'·∇ρ`` on the kept modes (``tests/test_charge.py`` checks both).

Classical RK4 on ``N`` (Lawson's integrating-factor RK4, as in ``flow.py``) is fourth
order in dt; the step is the flow's CFL step (the mean flow needs none: it is in ``L``).

The grid flux :meth:`Charge.flux` is the de-aliased ``J = P(ρu) − κ∇ρ`` (``P`` keeps the
2/3-rule modes), so ``∂ρ̂/∂t = −i k·Ĵ`` holds for the semi-discrete system to round-off:
the snapshots ``(ρ, J)`` a model learns from satisfy the continuity equation exactly.

Layout as in ``flow.py``: grids ``[..., iy, ix]`` with ``x_i = y_i = 2π i / n``; flux grids
``(..., 2, n, n)``, component 0 along x.

Wiring that remains (issue 32, item 1): the system is *not* registered. :class:`Charge`
subclasses :class:`~conserv_core.systems.base.System`, not ``FieldSystem``, whose contract
(velocity, dye parcels, ``mass`` from ``log J``) is the flow's; registration needs that
contract generalised (or a ``"density"`` family) with a view, data and an evaluation, plus
methods using the models of :mod:`conserv_core.models.continuity`.

References:
    Kassam & Trefethen, SIAM J. Sci. Comput. 26 (2005) (integrating-factor RK4).
    Orszag, J. Atmos. Sci. 28 (1971) (the 2/3 rule).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, ClassVar

import param
import torch

from conserv_core import integrators
from conserv_core.systems import flow
from conserv_core.systems.base import System, Tensor

TWO_PI = flow.TWO_PI
#: area of the periodic square, ``∫ dA``
AREA = TWO_PI**2
#: the random initial density has modes ``|k| ≤ DENSITY_MAX_K`` around its mean
DENSITY_MAX_K = 4
#: concentration of the ``blob`` initial density ``exp(c (cos(x − x₀) + cos(y − y₀) − 2))``
BLOB_CONCENTRATION = 2.0


def if_rk4_step(s_hat: Tensor, dt: float, lin: Tensor, nonlinear: Callable[[Tensor], Tensor]) -> Tensor:
    """One integrating-factor (Lawson) RK4 step of ``ds/dt = L s + N(s)`` with ``L`` diagonal.

    The same arithmetic as :meth:`flow.SpectralGrid.step`, for any diagonal (complex) ``L``
    broadcastable to ``s_hat``: the linear part is exact, ``N`` is integrated to order 4.
    """
    e_half = torch.exp(0.5 * dt * lin)
    e_full = e_half * e_half
    k1 = nonlinear(s_hat)
    k2 = nonlinear(e_half * (s_hat + 0.5 * dt * k1))
    k3 = nonlinear(e_half * s_hat + 0.5 * dt * k2)
    k4 = nonlinear(e_full * s_hat + dt * e_half * k3)
    return e_full * s_hat + (dt / 6.0) * (e_full * k1 + 2.0 * e_half * (k2 + k3) + k4)


def charge(rho: Tensor) -> Tensor:
    """``Q = ∫ρ dA`` of density grids ``(..., n, n) -> (...)`` (exact for band-limited ρ)."""
    return AREA * rho.mean((-2, -1))


class Charge(System):
    """Advection–diffusion of a density ρ by a 2D flow on ``[0, 2π)²``, pseudo-spectral truth.

    :meth:`solve` returns ρ and the vorticity at requested times; :meth:`snapshots` caches
    ``n_snapshots`` of them on ``[0, t_end]`` (continued at the same spacing to cover
    ``horizon``) with the flux ``J`` on the grid.
    """

    key: ClassVar[str] = "charge"
    kind: ClassVar[str] = "field"
    view_family: ClassVar[str] = "density"
    title: ClassVar[str] = "Charge carried by a flow (advection–diffusion)"
    equations: ClassVar[dict[str, str]] = {
        "Continuity": r"\partial_t\rho + \nabla\cdot\mathbf J = 0,\qquad "
                      r"\mathbf J = \rho\,\mathbf u - \kappa\nabla\rho",
        "Total charge": r"Q = \int\rho\,dA,\qquad \frac{dQ}{dt} = 0",
    }
    teaching_note: ClassVar[str] = (
        "A density is stirred by a flow and spreads by diffusion; nothing is created or destroyed, "
        "so the total charge Q stays fixed. A network built as the divergence of an antisymmetric "
        "potential keeps Q for any weights; a plain one keeps it only where it was taught."
    )
    time_label: ClassVar[str] = "time t (s, domain 2π × 2π)"

    grid = flow._EvenInteger(default=64, bounds=(32, 256), doc="Solver grid points per side (even).")
    kappa = param.Number(default=0.01, bounds=(0.0, 1.0), label="Diffusivity κ",
                         doc="Diffusivity κ ≥ 0 of the density.")
    viscosity = param.Number(default=0.01, bounds=(0.0, 1.0), label="Viscosity ν",
                             doc="Kinematic viscosity ν ≥ 0 of the carrying flow.")
    velocity = param.Selector(default="navier_stokes", objects=["navier_stokes", "frozen"],
                              doc="The carrying flow evolves by Navier–Stokes, or stays at its initial field.")
    initial_flow = param.Selector(default="random", objects=["random", "taylor_green", "rest"],
                                  doc="Initial vorticity of the flow (as Flow's), or a fluid at rest.")
    field_seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Seed of the random initial flow.")
    mean_u = param.Number(default=0.0, bounds=(-5.0, 5.0), doc="Uniform mean flow U, x component.")
    mean_v = param.Number(default=0.0, bounds=(-5.0, 5.0), doc="Uniform mean flow U, y component.")
    initial_density = param.Selector(default="blob", objects=["blob", "random"],
                                     doc="A periodic bump at the centre, or seeded random modes |k| ≤ 4 around 1.")
    density_seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Seed of the random initial density.")
    t_end = param.Number(default=2.0, bounds=(0.05, 20.0), doc="Training data cover t in [0, t_end].")
    n_snapshots = param.Integer(default=41, bounds=(2, 1001), doc="Solver snapshots on [0, t_end].")
    horizon = param.Number(default=2.0, bounds=(0.01, 100.0),
                           doc="Evaluated time span; snapshots continue past t_end to cover it.")
    n_samples = param.Integer(default=4096, bounds=(16, 1_000_000), doc="Training points (x, y, t).")
    noise = param.Number(default=0.0, bounds=(0.0, 1.0), doc="Std of Gaussian noise on the targets (ρ, J).")

    # -- parameters derived ---------------------------------------------------------------
    @property
    def spectral(self) -> flow.SpectralGrid:
        return flow.spectral_grid(self.grid)

    @property
    def snapshot_dt(self) -> float:
        return self.t_end / (self.n_snapshots - 1)

    @property
    def t_span(self) -> float:
        return flow.solved_span(self.t_end, self.snapshot_dt, self.horizon)

    def grid_xy(self) -> tuple[Tensor, Tensor]:
        """Grid coordinates ``x (n,)``, ``y (n,)`` float64."""
        x = torch.arange(self.grid, dtype=torch.float64) * (TWO_PI / self.grid)
        return x, x.clone()

    def invariant_names(self) -> tuple[str, ...]:
        return ("charge",)

    # -- initial fields -------------------------------------------------------------------
    def initial_vorticity(self) -> Tensor:
        """``ω(x, y, 0)`` ``(n, n)``: Flow's field for the same grid and seed, or zero at rest."""
        if self.initial_flow == "rest":
            return torch.zeros(self.grid, self.grid, dtype=torch.float64)
        return flow.Flow(grid=self.grid, initial=self.initial_flow, field_seed=self.field_seed).initial_vorticity()

    def initial_rho(self) -> Tensor:
        """``ρ(x, y, 0)`` ``(n, n)`` float64, positive, mean near 1.

        ``blob``: ``exp(c (cos(x − π) + cos(y − π) − 2))`` plus 0.2, exactly periodic and analytic
        (its spectrum falls faster than geometrically). ``random``: ``1 + Σ a_k cos(k·x + φ_k)``
        over ``0 < |k| ≤ 4`` with seeded amplitudes, rms 0.3.
        """
        x, y = self.grid_xy()
        if self.initial_density == "blob":
            c = BLOB_CONCENTRATION
            return 0.2 + torch.exp(c * (torch.cos(x - math.pi)[None, :] + torch.cos(y - math.pi)[:, None] - 2.0))
        g = torch.Generator().manual_seed(self.density_seed)
        k = torch.arange(-DENSITY_MAX_K, DENSITY_MAX_K + 1, dtype=torch.float64)
        ky, kx = torch.meshgrid(k, k, indexing="ij")
        keep = ((kx**2 + ky**2) > 0) & ((kx**2 + ky**2) <= DENSITY_MAX_K**2)
        kx, ky = kx[keep], ky[keep]  # (M,)
        amp = torch.randn(kx.shape, generator=g, dtype=torch.float64)
        phase = TWO_PI * torch.rand(kx.shape, generator=g, dtype=torch.float64)
        waves = torch.cos(kx[:, None, None] * x[None, None, :] + ky[:, None, None] * y[None, :, None]
                          + phase[:, None, None])  # (M, n, n)
        rho = (amp[:, None, None] * waves).sum(0)
        return 1.0 + 0.3 * rho / rho.pow(2).mean().sqrt()

    # -- the semi-discrete system ---------------------------------------------------------
    def linear(self) -> Tensor:
        """The diagonal ``L`` of ``d(ω̂, ρ̂)/dt = L (ω̂, ρ̂) + N``: ``(2, n, m)`` complex128."""
        g = self.spectral
        shift = -(g.ikx * self.mean_u + g.iky * self.mean_v)  # −i k·U; the Nyquist mode carries none
        nu = 0.0 if self.velocity == "frozen" else self.viscosity
        w_lin = -nu * g.k2 + (0.0 * shift if self.velocity == "frozen" else shift)
        return torch.stack([w_lin, -self.kappa * g.k2 + shift])  # complex128

    def nonlinear(self, s_hat: Tensor) -> Tensor:
        """De-aliased ``N(ω̂, ρ̂) = (−u'·∇ω, −∇·(u'ρ))`` in spectral space, ``(2, n, m) -> (2, n, m)``.

        ``u'`` is the velocity of ω̂ (mean dropped). Frozen flow: the ω entry is zero.
        """
        g = self.spectral
        w_hat, r_hat = s_hat[0], s_hat[1]
        psi = w_hat * g.inv_k2
        u, v, rho = g.inverse(torch.stack([g.iky * psi, -g.ikx * psi, r_hat]))  # 3 × (n, n)
        prod = g.forward(torch.stack([u * rho, v * rho]))  # (2, n, m)
        n_rho = -g.mask * (g.ikx * prod[0] + g.iky * prod[1])
        n_w = torch.zeros_like(w_hat) if self.velocity == "frozen" else g.nonlinear(w_hat)
        return torch.stack([n_w, n_rho])

    def rate(self, s_hat: Tensor) -> Tensor:
        """``d(ω̂, ρ̂)/dt = L s + N(s)``, the right-hand side the solver integrates, ``(2, n, m)``."""
        return self.linear() * s_hat + self.nonlinear(s_hat)

    def initial_state(self) -> Tensor:
        """``(ω̂, ρ̂)`` at ``t = 0``, truncated to the kept modes: ``(2, n, m)`` complex128."""
        g = self.spectral
        return g.mask * g.forward(torch.stack([self.initial_vorticity(), self.initial_rho()]))

    def solve(self, t: Tensor, state0: Tensor | None = None, max_dt: float | None = None,
              fixed_dt: float | None = None) -> Tensor:
        """The state ``(ω̂, ρ̂)`` at increasing times ``t (T,)`` from ``state0`` at ``t = 0``:
        ``(T, 2, n, m)`` complex128 (use :meth:`fields` for grids).

        Towards each time it takes the fewest equal steps no longer than the flow's CFL
        step (re-read every ``flow.CFL_RECHECK`` steps) and ``max_dt``; at rest with no
        ``max_dt`` the system is linear and one (exact) step per interval is taken.
        ``fixed_dt``: equal steps of at most that size, whatever the CFL limit says (for
        convergence studies; the caller keeps it stable).
        """
        g = self.spectral
        s_hat = self.initial_state() if state0 is None else state0.to(torch.complex128)
        lin = self.linear()
        cap = math.inf if max_dt is None else float(max_dt)
        if fixed_dt is not None:  # a convergence study's step: no CFL, no recheck
            return self._solve_fixed(t, s_hat, lin, float(fixed_dt))
        out, now = [], 0.0
        for target in t.detach().double().cpu().tolist():
            if target < now - 1e-12:
                raise ValueError(f"solve needs increasing times >= 0; got {target} after {now}")
            while target > now:
                step_max = min(cap, g.max_dt(s_hat[0]))
                n_sub = 1 if math.isinf(step_max) else max(1, math.ceil((target - now) / step_max - 1e-9))
                h = (target - now) / n_sub
                for _ in range(min(n_sub, flow.CFL_RECHECK)):
                    integrators.check_stop()
                    s_hat = if_rk4_step(s_hat, h, lin, self.nonlinear)
                now = target if n_sub <= flow.CFL_RECHECK else now + flow.CFL_RECHECK * h
            out.append(s_hat)
        return torch.stack(out)

    def _solve_fixed(self, t: Tensor, s_hat: Tensor, lin: Tensor, dt: float) -> Tensor:
        out, now = [], 0.0
        for target in t.detach().double().cpu().tolist():
            if target < now - 1e-12:
                raise ValueError(f"solve needs increasing times >= 0; got {target} after {now}")
            n_sub = math.ceil((target - now) / dt - 1e-9) if target > now else 0
            for _ in range(n_sub):
                integrators.check_stop()
                s_hat = if_rk4_step(s_hat, (target - now) / n_sub, lin, self.nonlinear)
            now = target
            out.append(s_hat)
        return torch.stack(out)

    def fields(self, s_hat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Grids of states ``(..., 2, n, m)``: ``ρ (..., n, n)``, ``J (..., 2, n, n)``, ``u (..., 2, n, n)``
        (the full velocity, mean flow included)."""
        g = self.spectral
        w_hat, r_hat = s_hat[..., 0, :, :], s_hat[..., 1, :, :]
        uv = g.inverse(g.velocity_hat(w_hat))  # (..., 2, n, n)
        uv = uv + torch.tensor([self.mean_u, self.mean_v], dtype=torch.float64)[:, None, None]
        rho = g.inverse(r_hat)
        return rho, self.flux(rho, uv), uv

    def flux(self, rho: Tensor, uv: Tensor) -> Tensor:
        """The de-aliased flux ``J = P(ρu) − κ∇ρ`` of grids ``ρ (..., n, n)``, ``u (..., 2, n, n)``:
        ``(..., 2, n, n)``. ``P`` keeps the 2/3-rule modes, the ones the solver keeps."""
        g = self.spectral
        adv = g.mask * g.forward(rho[..., None, :, :] * uv)  # (..., 2, n, m)
        r_hat = g.forward(rho)
        grad = torch.stack([g.ikx * r_hat, g.iky * r_hat], -3)
        return g.inverse(adv - self.kappa * grad)

    # -- snapshots ------------------------------------------------------------------------
    def snapshot_times(self) -> Tensor:
        """``(T,)``: ``0, Δ, …, t_span`` with ``Δ = t_end / (n_snapshots − 1)``."""
        n = round(self.t_span / self.snapshot_dt) + 1
        return torch.arange(n, dtype=torch.float64) * self.snapshot_dt

    def snapshots(self) -> tuple[Tensor, Tensor, Tensor]:
        """Cached: ``t (T,)``, ``ρ (T, n, n)``, ``J (T, 2, n, n)``, float64 (do not modify)."""
        return _solve_cached(self._solve_key())

    def _solve_key(self) -> tuple:
        return tuple((name, getattr(self, name)) for name in _SOLVE_PARAMS)

    # -- data -----------------------------------------------------------------------------
    def sample_data(self, seed: int = 0, dtype: torch.dtype = torch.float32, device=None,
                    n: int | None = None) -> tuple[Tensor, Tensor]:
        """Seeded training data from the snapshots in ``[0, t_end]``: ``n`` (default
        ``n_samples``) grid points and snapshot times, ``xyt (n, 3) = [x, y, t]`` and targets
        ``(n, 3) = [ρ, J_x, J_y]`` (plus Gaussian noise of std ``noise``)."""
        n = self.n_samples if n is None else n
        t, rho, j = self.snapshots()
        g = torch.Generator().manual_seed(seed)
        n_train = self.n_snapshots  # snapshots 0 .. n_snapshots-1 cover [0, t_end]
        it = torch.randint(0, n_train, (n,), generator=g)
        iy = torch.randint(0, self.grid, (n,), generator=g)
        ix = torch.randint(0, self.grid, (n,), generator=g)
        x, y = self.grid_xy()
        xyt = torch.stack([x[ix], y[iy], t[it]], -1)
        target = torch.stack([rho[it, iy, ix], j[it, 0, iy, ix], j[it, 1, iy, ix]], -1)
        if self.noise > 0:
            target = target + self.noise * torch.randn(target.shape, generator=g, dtype=torch.float64)
        return xyt.to(dtype=dtype, device=device), target.to(dtype=dtype, device=device)


_SOLVE_PARAMS = ("grid", "kappa", "viscosity", "velocity", "initial_flow", "field_seed", "mean_u", "mean_v",
                 "initial_density", "density_seed", "t_end", "n_snapshots", "horizon")


@functools.lru_cache(maxsize=4)
def _solve_cached(key: tuple) -> tuple[Tensor, Tensor, Tensor]:
    system = Charge(**dict(key))
    t = system.snapshot_times()
    rho, j, _ = system.fields(system.solve(t))
    return t, rho, j
