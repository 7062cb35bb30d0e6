"""Two-dimensional incompressible flow on the periodic square ``[0, 2π)²``.

Truth is the Navier–Stokes equation in vorticity–stream-function form

    ∂ω/∂t + u·∇ω = ν ∇²ω,    u = (∂ψ/∂y, −∂ψ/∂x),    ∇²ψ = −ω,

solved pseudo-spectrally: Fourier in both directions (``torch.fft.rfft2``), the nonlinear
term formed on the grid and de-aliased by the 2/3 rule, the viscous term integrated
exactly by an integrating factor, and the rest by classical RK4 with a CFL step (the
"Lawson" or integrating-factor RK4). With the 2/3 rule the semi-discrete system is an
exact Fourier–Galerkin truncation, so at ν = 0 it conserves kinetic energy and enstrophy
exactly; only the RK4 time error (order dt⁴) remains.

The model learns the velocity ``u(x, y, t)`` from noisy samples of this solution.
"Mass" is measured by carrying fluid parcels through a velocity field (learned or
true): a parcel's volume factor ``J`` obeys ``d(log J)/dt = ∇·u`` along its path
(Liouville), so a patch of uniform-density dye has mass ``∫ J dA``, which must stay at
its initial value. The truth has ``J ≡ 1``.

Layout. Grid fields are indexed ``[..., iy, ix]`` (row = y, column = x, as an image),
with ``x_i = y_i = 2π i / n``. Velocity grids are ``(..., 2, n, n)`` with component 0
the x-velocity ``u`` and component 1 the y-velocity ``v``. Points are ``xy (B, 2)``.

References:
    Orszag, "On the elimination of aliasing in finite-difference schemes by filtering
    high-wavenumber components", J. Atmos. Sci. 28 (1971) (the 2/3 rule).
    Kassam & Trefethen, "Fourth-order time-stepping for stiff PDEs", SIAM J. Sci.
    Comput. 26 (2005) (integrating-factor RK4).
    Taylor & Green, Proc. R. Soc. A 158 (1937) (the exact decaying vortex).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import param
import torch

from conserv_core import integrators
from conserv_core.systems.base import FieldSystem, Tensor, split_indices

TWO_PI = 2.0 * math.pi
#: Courant number of the solver's step, ``dt = CFL · dx / max(|u| + |v|)``
CFL = 0.5
#: the solver re-reads the CFL limit from the field at least this often (in steps)
CFL_RECHECK = 16
#: the random initial field has energy spectrum ``E(k) ∝ k⁴ exp(−2 (k/k_p)²)``, cut at k_max
RANDOM_PEAK_K = 2.5
RANDOM_MAX_K = 8

PointField = Callable[[Tensor, float], Tensor]  # (xy (B, 2), t) -> (B, 2) or (B,)


def solved_span(t_end: float, snapshot_dt: float, horizon: float) -> float:
    """End of a solver's interval: ``t_end``, extended by whole snapshot steps to cover
    ``horizon`` (the flow's and the charge's snapshots share this)."""
    extra = max(0, math.ceil((horizon - t_end) / snapshot_dt - 1e-9))
    return t_end + extra * snapshot_dt


# -- spectral machinery -------------------------------------------------------------------
class SpectralGrid:
    """Wavenumbers, de-aliasing mask and the IF-RK4 step for an ``n × n`` periodic grid.

    Spectral fields are ``rfft2`` of grid fields: shape ``(..., n, n // 2 + 1)``, axis -2
    is ``k_y`` (all of ``fftfreq``), axis -1 is ``k_x ≥ 0``. The 2/3 rule keeps
    ``|k_x|, |k_y| ≤ k_max = (n - 1) // 3``, so a product of two kept fields aliases only
    onto discarded modes (``3 k_max < n``).
    """

    def __init__(self, n: int, device=None):
        self.n = n
        self.kmax = (n - 1) // 3
        f64 = dict(dtype=torch.float64, device=device)
        ky = torch.fft.fftfreq(n, 1.0 / n, **f64)[:, None]  # (n, 1)
        kx = torch.fft.rfftfreq(n, 1.0 / n, **f64)[None, :]  # (1, m)
        self.k2 = kx**2 + ky**2  # (n, m)
        self.inv_k2 = torch.where(self.k2 > 0, 1.0 / self.k2.clamp_min(1.0), 0.0)
        # derivative wavenumbers: the Nyquist mode has no sign, so its derivative is zero
        nyq = n // 2
        self.ikx = 1j * torch.where(kx.abs() == nyq, 0.0, kx)  # (1, m)
        self.iky = 1j * torch.where(ky.abs() == nyq, 0.0, ky)  # (n, 1)
        self.mask = ((kx.abs() <= self.kmax) & (ky.abs() <= self.kmax)).to(torch.float64)

    def forward(self, field: Tensor) -> Tensor:
        """Grid ``(..., n, n)`` -> spectrum ``(..., n, m)``."""
        return torch.fft.rfft2(field)

    def inverse(self, spec: Tensor) -> Tensor:
        """Spectrum ``(..., n, m)`` -> grid ``(..., n, n)``."""
        return torch.fft.irfft2(spec, s=(self.n, self.n))

    def velocity_hat(self, w_hat: Tensor) -> Tensor:
        """Vorticity spectrum ``(..., n, m)`` -> velocity spectrum ``(..., 2, n, m)``."""
        psi = w_hat * self.inv_k2
        return torch.stack([self.iky * psi, -self.ikx * psi], -3)

    def nonlinear(self, w_hat: Tensor) -> Tensor:
        """De-aliased ``−u·∇ω`` in spectral space, ``(..., n, m) -> (..., n, m)``."""
        psi = w_hat * self.inv_k2
        parts = torch.stack([self.iky * psi, -self.ikx * psi, self.ikx * w_hat, self.iky * w_hat])
        u, v, wx, wy = self.inverse(parts)  # 4 × (..., n, n)
        return -self.mask * self.forward(u * wx + v * wy)

    def step(self, w_hat: Tensor, dt: float, nu: float) -> Tensor:
        """One integrating-factor RK4 step of size ``dt``: the linear term ``−ν k² ω̂`` is
        integrated exactly (Taylor–Green decays exactly), the nonlinear one by RK4."""
        e_half = torch.exp(-0.5 * nu * dt * self.k2)
        e_full = e_half * e_half
        k1 = self.nonlinear(w_hat)
        k2 = self.nonlinear(e_half * (w_hat + 0.5 * dt * k1))
        k3 = self.nonlinear(e_half * w_hat + 0.5 * dt * k2)
        k4 = self.nonlinear(e_full * w_hat + dt * e_half * k3)
        return e_full * w_hat + (dt / 6.0) * (e_full * k1 + 2.0 * e_half * (k2 + k3) + k4)

    def max_dt(self, w_hat: Tensor, cfl: float = CFL) -> float:
        """The CFL step ``cfl · dx / max(|u| + |v|)`` for the current field (inf at rest)."""
        uv = self.inverse(self.velocity_hat(w_hat))
        speed = float(uv.abs().sum(-3).max())
        return math.inf if speed == 0.0 else cfl * (TWO_PI / self.n) / speed


@functools.lru_cache(maxsize=16)
def _grid(n: int, device: str) -> SpectralGrid:
    return SpectralGrid(n, device=device)


def spectral_grid(n: int, device=None) -> SpectralGrid:
    """The (cached) :class:`SpectralGrid` for an ``n × n`` grid on ``device``."""
    return _grid(n, str(torch.device("cpu") if device is None else torch.device(device)))


def series_coefficients(spec: Tensor, g: SpectralGrid) -> tuple[Tensor, Tensor, Tensor]:
    """Point-evaluation coefficients of ``rfft2`` spectra, truncated to the kept modes.

    Keeps ``|k_x|, |k_y| ≤ k_max`` (the 2/3 rule; the Nyquist mode is never kept) and folds
    in the rfft half-plane weights (1 for ``k_x = 0``, 2 otherwise) and ``1/n²``, so that
    ``f(x, y) = Re Σ C e^{i(k_x x + k_y y)}`` (see :func:`series_phases`, :func:`series_sum`).

    Args:
        spec: ``(..., n, m)`` spectra on ``g``'s grid.

    Returns:
        ``C (..., Ky, Kx)``, ``k_x (Kx,)`` and ``k_y (Ky,)`` (float64), on ``spec``'s device,
        with ``Kx = k_max + 1`` and ``Ky = 2 k_max + 1``.
    """
    k = g.kmax
    dev = spec.device
    rows = torch.cat([torch.arange(0, k + 1), torch.arange(g.n - k, g.n)]).to(dev)
    c = spec[..., rows, : k + 1]  # (..., Ky, Kx)
    weight = torch.full((k + 1,), 2.0, dtype=torch.float64, device=dev)
    weight[0] = 1.0
    c = c * weight / g.n**2
    ky = torch.fft.fftfreq(g.n, 1.0 / g.n, dtype=torch.float64, device=dev)[rows]
    kx = torch.arange(k + 1, dtype=torch.float64, device=dev)
    return c, kx, ky


def series_phases(xy: Tensor, kx: Tensor, ky: Tensor) -> tuple[Tensor, Tensor]:
    """The factors ``e^{i k_x x}`` ``(B, Kx)`` and ``e^{i k_y y}`` ``(B, Ky)`` at ``xy (B, 2)``,
    complex128 (positions are taken in float64, detached)."""
    p = xy.detach().double()
    # cos/sin of real phases is several times faster than exp of complex ones
    ax, ay = p[:, :1] * kx, p[:, 1:] * ky
    ex = torch.complex(torch.cos(ax), torch.sin(ax))  # (B, Kx)
    ey = torch.complex(torch.cos(ay), torch.sin(ay))  # (B, Ky)
    return ex, ey


def series_sum(ex: Tensor, ey: Tensor, coef: Tensor) -> Tensor:
    """``Re Σ C e^{i(k_x x + k_y y)}`` for ``C (c, Ky, Kx)`` at the points whose phases
    :func:`series_phases` gave: ``ex (b, Kx)``, ``ey (b, Ky)`` -> ``(b, c)`` float64."""
    n_c, n_ky, n_kx = coef.shape
    rows = ey @ coef.permute(1, 0, 2).reshape(n_ky, n_c * n_kx)  # (b, c*Kx)
    return (rows.view(-1, n_c, n_kx) * ex[:, None, :]).sum(-1).real


def _grid_of(field: Tensor) -> SpectralGrid:
    n = field.shape[-1]
    if field.shape[-2] != n:
        raise ValueError(f"expected a square grid (..., n, n); got shape {tuple(field.shape)}")
    return spectral_grid(n, field.device)


# -- grid diagnostics (any grid size; float64 inside, input dtype out) --------------------
def velocity_field(omega: Tensor) -> Tensor:
    """Velocity of a vorticity grid: ``omega (..., n, n) -> u (..., 2, n, n)``.

    Solves ``∇²ψ = −ω`` spectrally and takes ``u = (∂ψ/∂y, −∂ψ/∂x)``; the mean of
    ``ω`` (which no periodic velocity can carry) is dropped.
    """
    g = _grid_of(omega)
    return g.inverse(g.velocity_hat(g.forward(omega.double()))).to(omega.dtype)


def vorticity(u: Tensor) -> Tensor:
    """Spectral curl ``ω = ∂v/∂x − ∂u/∂y`` of a velocity grid: ``(..., 2, n, n) -> (..., n, n)``.

    Exact for periodic band-limited fields; on a non-periodic field (a learned one
    sampled on the grid) the edges ring, so use autograd there instead.
    """
    g = _grid_of(u)
    uh = g.forward(u.double())
    return g.inverse(g.ikx * uh[..., 1, :, :] - g.iky * uh[..., 0, :, :]).to(u.dtype)


def grid_divergence(u: Tensor) -> Tensor:
    """Spectral divergence ``∂u/∂x + ∂v/∂y``: ``(..., 2, n, n) -> (..., n, n)``."""
    g = _grid_of(u)
    uh = g.forward(u.double())
    return g.inverse(g.ikx * uh[..., 0, :, :] + g.iky * uh[..., 1, :, :]).to(u.dtype)


def kinetic_energy(u: Tensor) -> Tensor:
    """Domain-mean kinetic energy ``E = ½ ⟨|u|²⟩`` of a velocity grid ``(..., 2, n, n) -> (...)``.

    For a vorticity grid use ``kinetic_energy(velocity_field(omega))``.
    """
    return 0.5 * (u**2).sum(-3).mean((-2, -1))


def enstrophy(omega: Tensor) -> Tensor:
    """Domain-mean enstrophy ``Z = ½ ⟨ω²⟩`` of a vorticity grid ``(..., n, n) -> (...)``."""
    return 0.5 * (omega**2).mean((-2, -1))


# -- parcels ------------------------------------------------------------------------------
def carry(velocity: PointField, divergence: PointField, xy0: Tensor, t0: float = 0.0,
          horizon: float = 1.0, dt: float = 0.01, method: str = "rk4",
          wrap: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Carry parcels through any velocity field and track their volume factor.

    Integrates the augmented ODE ``d(x, y)/dt = u``, ``d(log J)/dt = ∇·u`` with
    :func:`conserv_core.integrators.rollout` on the state ``(B, 3) = [x, y, log J]``,
    using the largest uniform step ``≤ dt`` that lands on ``t0 + horizon``.

    Args:
        velocity: ``(xy (B, 2), t float) -> (B, 2)``.
        divergence: ``(xy (B, 2), t float) -> (B,)``, the divergence of ``velocity``.
        xy0: ``(B, 2)`` starting points.
        wrap: hand the callables positions folded into ``[0, 2π)²`` (a learned field only
            knows that square); the returned paths are unwrapped, so areas stay meaningful.
        method: ``rk4``, ``euler`` or ``implicit_midpoint`` (``leapfrog`` needs a
            ``[q, p]`` state and is refused).

    Returns:
        ``t (T,)``, ``xy (T, B, 2)``, ``log J (T, B)`` with ``T = n_steps + 1``; a field
        that blows up gives NaN from there on (see :func:`integrators.rollout`).
    """
    if method == "leapfrog":
        raise ValueError("carry needs a general ODE integrator: use rk4, euler or implicit_midpoint")
    if xy0.dim() != 2 or xy0.shape[-1] != 2:
        raise ValueError(f"xy0 must have shape (B, 2); got {tuple(xy0.shape)}")
    n_steps = max(1, math.ceil(horizon / dt - 1e-9))

    def f(z: Tensor, t: float) -> Tensor:  # (B, 3) -> (B, 3)
        xy = torch.remainder(z[:, :2], TWO_PI) if wrap else z[:, :2]
        return torch.cat([velocity(xy, t), divergence(xy, t)[:, None]], -1)

    z0 = torch.cat([xy0, xy0.new_zeros(xy0.shape[0], 1)], -1)
    t, z = integrators.rollout(f, z0, horizon / n_steps, n_steps, method=method, t0=t0)
    return t, z[..., :2], z[..., 2]


def mass(log_j: Tensor) -> Tensor:
    """Mass of a uniform-density patch relative to its start, ``log J (T, B) -> (T,)``.

    The parcels sample the patch uniformly, so ``∫ J dA / A ≈ mean_b J_b``.
    """
    m = log_j.exp().mean(-1)
    return m / m[0]


def patch_area(boundary: Tensor) -> Tensor:
    """Area enclosed by a closed polygon (shoelace), ``(..., M, 2) -> (...)``.

    An independent, geometric check of :func:`mass`: a divergence-free flow keeps the
    area of a carried boundary, up to the polygon's chord error as it stretches.
    """
    x, y = boundary[..., 0], boundary[..., 1]
    return 0.5 * (x * y.roll(-1, -1) - x.roll(-1, -1) * y).sum(-1).abs()


def sunflower(n: int, center: tuple[float, float], radius: float,
              dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """``n`` points covering a disc with uniform density (Vogel's sunflower lattice), ``(n, 2)``."""
    i = torch.arange(n, dtype=torch.float64)
    r = radius * torch.sqrt((i + 0.5) / n)
    theta = i * math.pi * (3.0 - math.sqrt(5.0))  # the golden angle
    xy = torch.stack([center[0] + r * torch.cos(theta), center[1] + r * torch.sin(theta)], -1)
    return xy.to(dtype=dtype, device=device)


# -- data ---------------------------------------------------------------------------------
@dataclass
class FieldDataset:
    """Supervised pairs for a field system.

    Attributes:
        xyt: ``(n, 3)`` inputs ``(x, y, t)``.
        u: ``(n, 2)`` velocity targets at those points (Gaussian noise of std ``noise``).
    """

    xyt: Tensor
    u: Tensor

    def __len__(self) -> int:
        return self.xyt.shape[0]

    def to(self, device=None, dtype=None) -> "FieldDataset":
        return FieldDataset(self.xyt.to(device=device, dtype=dtype), self.u.to(device=device, dtype=dtype))

    def split(self, frac: float, seed: int = 0) -> tuple["FieldDataset", "FieldDataset"]:
        """Random split into a ``frac`` part and the rest (:func:`~conserv_core.systems.base.split_indices`)."""
        a, b = (i.to(self.xyt.device) for i in split_indices(len(self), frac, torch.Generator().manual_seed(seed)))
        return FieldDataset(self.xyt[a], self.u[a]), FieldDataset(self.xyt[b], self.u[b])


# -- parameters that need more than bounds -----------------------------------------------
def _owner_name(p: param.Parameter) -> str:
    owner = p.owner
    cls = owner if isinstance(owner, type) or owner is None else type(owner)
    return f"{cls.__name__}.{p.name}" if cls is not None else str(p.name)


class _EvenInteger(param.Integer):
    """An integer in its bounds that must also be even (FFT grid sizes)."""

    def _validate(self, val):
        lo, hi = self.bounds
        if not (isinstance(val, int) and not isinstance(val, bool) and lo <= val <= hi and val % 2 == 0):
            raise ValueError(f"{_owner_name(self)} must be an even integer in [{lo}, {hi}]; got {val!r}")


class _DomainPoint(param.NumericTuple):
    """A finite point ``(x, y)`` of the periodic square ``[0, 2π]²``.

    ``bounds`` apply to each coordinate; they let :func:`base.describe_range` and
    :func:`base.build` name the range like any Number's.
    """

    bounds = (0.0, TWO_PI)
    inclusive_bounds = (True, True)

    def _validate(self, val):
        ok = (isinstance(val, tuple) and len(val) == 2
              and all(isinstance(c, (int, float)) and math.isfinite(c) and 0.0 <= c <= TWO_PI for c in val))
        if not ok:
            raise ValueError(f"{_owner_name(self)} must be a point (x, y) with both coordinates in "
                             f"[0, 2π] = [0.0, {TWO_PI}]; got {val!r}")


# -- the system ---------------------------------------------------------------------------
class Flow(FieldSystem):
    """2D incompressible Navier–Stokes on ``[0, 2π)²``, pseudo-spectral truth.

    The solution is computed once per parameter set and cached (per process, for the
    last few parameter sets): ``n_snapshots`` snapshots evenly spaced on ``[0, t_end]``,
    continued at the same spacing to ``t_span ≥ horizon`` if the parcels need more. Between
    snapshots the true velocity at any point is the Fourier series of the neighbouring
    snapshots, blended linearly in time: a blend of divergence-free fields is
    divergence-free, so the "true continuous field" keeps mass exactly. After
    ``t_span`` the field is frozen at its last snapshot.
    """

    key: ClassVar[str] = "flow"
    title: ClassVar[str] = "2D incompressible flow"
    equations: ClassVar[dict[str, str]] = {
        "Vorticity": r"\partial_t\omega + \mathbf u\cdot\nabla\omega = \nu\,\nabla^2\omega",
        "Stream function": r"\mathbf u = (\partial_y\psi,\,-\partial_x\psi),\qquad \nabla^2\psi = -\omega",
        "Incompressibility": r"\nabla\cdot\mathbf u = 0",
        "Parcel volume (Liouville)": r"\frac{d\log J}{dt} = \nabla\cdot\mathbf u,\qquad "
                                     r"M(t) = \frac{1}{|A|}\int_A J\,dA = 1",
        # two lines: on one, the pair ran out of the system card
        "Energy and enstrophy": r"E = \tfrac12\langle|\mathbf u|^2\rangle,\qquad Z = \tfrac12\langle\omega^2\rangle",
        "Their decay (zero when ν = 0)": r"\frac{dE}{dt} = -2\nu Z,\qquad "
                                         r"\frac{dZ}{dt} = -\nu\langle|\nabla\omega|^2\rangle",
    }
    teaching_note: ClassVar[str] = (
        "The network learns the velocity of an incompressible 2D flow. Follow the dye patch: a "
        "plain network's field has small sources and sinks, so the patch gains or loses mass; a "
        "stream-function network keeps it at exactly 1, even where its velocity is wrong. Energy "
        "and enstrophy are conserved only when the viscosity is 0."
    )
    recommended: ClassVar[dict] = dict(steps=1500, lr=3e-3, width=64, n_colloc=256)
    demo: ClassVar[dict] = dict(steps=500, width=48, lr=3e-3)
    time_label: ClassVar[str] = "time t (s, domain 2π × 2π)"
    look_for: ClassVar[str] = (
        "Look at the dye-mass plot: the div-free network stays at zero drift by construction; in the "
        "∇·u map the baseline shows sources (red) and sinks (blue) that the true flow does not have."
    )
    controls: ClassVar[tuple[str, ...] | None] = ("grid", "viscosity", "initial", "field_seed")

    grid = _EvenInteger(softbounds=(32, 128), step=16, label="Solver grid (points per side)",
                        default=64, bounds=(32, 256), doc="Solver grid points per side (even).")
    viscosity = param.Number(softbounds=(0.0, 0.1), step=0.001, label="Viscosity ν",
                             default=0.01, bounds=(0.0, 1.0),
                             doc="Kinematic viscosity ν ≥ 0 (0: inviscid, energy and enstrophy conserved).")
    initial = param.Selector(label="Initial field", default="random", objects=["taylor_green", "random"],
                             doc="Initial vorticity: the exact decaying Taylor–Green vortex, or a seeded random field.")
    field_seed = param.Integer(label="Initial-field seed",
                               default=0, bounds=(0, 2**31 - 1), doc="Seed of the random initial field.")
    t_end = param.Number(default=2.0, bounds=(0.05, 20.0), doc="Training data cover t in [0, t_end].")
    n_snapshots = param.Integer(default=41, bounds=(2, 1001),
                                doc="Solver snapshots on [0, t_end]; the field is interpolated linearly between them.")
    n_samples = param.Integer(default=4096, bounds=(16, 1_000_000), doc="Training points (x, y, t).")
    noise = param.Number(default=0.02, bounds=(0.0, 1.0),
                         doc="Std of Gaussian noise on the velocity targets (the field's rms speed is about 1).")
    horizon = param.Number(default=2.0, bounds=(0.01, 100.0), doc="Length of the parcel (dye) rollouts.")
    dt = param.Number(default=0.04, bounds=(1e-4, 0.5), inclusive_bounds=(False, True),
                      doc="Time step of the parcel rollouts.")
    patch_radius = param.Number(default=0.6, bounds=(0.01, 3.0), doc="Radius of the dye patch.")
    patch_center = _DomainPoint(default=(math.pi, math.pi), length=2, doc="Centre (x, y) of the dye patch.")
    n_parcels = param.Integer(default=500, bounds=(8, 100_000), doc="Parcels that sample the dye patch.")

    def __init__(self, **params):
        super().__init__(**params)
        self._coeff_cache: dict = {}  # point-evaluation coefficients, see _coefficients
        self._last_eval: tuple | None = None  # (xy, xy._version, t, (B, 3) values)

    # -- parameters derived ---------------------------------------------------------------
    @property
    def spectral(self) -> SpectralGrid:
        """The solver's :class:`SpectralGrid` (CPU)."""
        return spectral_grid(self.grid)

    @property
    def snapshot_dt(self) -> float:
        return self.t_end / (self.n_snapshots - 1)

    @property
    def t_span(self) -> float:
        """End of the solved interval: ``t_end``, extended (same spacing) to cover ``horizon``."""
        return solved_span(self.t_end, self.snapshot_dt, self.horizon)

    def grid_xy(self, dtype: torch.dtype = torch.float64, device=None) -> tuple[Tensor, Tensor]:
        """Grid coordinates ``x (n,)``, ``y (n,)``; a field ``f[iy, ix]`` lives at ``(x[ix], y[iy])``."""
        x = torch.arange(self.grid, dtype=dtype, device=device) * (TWO_PI / self.grid)
        return x, x.clone()

    def grid_points(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """All grid points as ``xy (n*n, 2)`` in field order: ``f(xy).T.reshape(2, n, n)``
        is a velocity grid."""
        x, y = self.grid_xy(dtype, device)
        yy, xx = torch.meshgrid(y, x, indexing="ij")
        return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)

    # -- truth ----------------------------------------------------------------------------
    def initial_vorticity(self) -> Tensor:
        """``ω(x, y, 0)`` on the grid, ``(n, n)`` float64.

        ``taylor_green``: ``u = (sin x cos y, −cos x sin y)``, ``ω = 2 sin x sin y``; the
        nonlinear term vanishes and the field decays as ``exp(−2νt)``.
        ``random``: modes ``|k| ≤ 8`` with spectrum ``E(k) ∝ k⁴ exp(−2(k/2.5)²)`` and
        seeded Gaussian amplitudes, scaled to ``E = ½⟨|u|²⟩ = ½`` (rms speed 1). The modes
        are drawn independently of the grid, so a seed is the same flow at every ``grid``.
        """
        n = self.grid
        if self.initial == "taylor_green":
            x, y = self.grid_xy()
            return 2.0 * torch.sin(x)[None, :] * torch.sin(y)[:, None]
        k = torch.arange(-RANDOM_MAX_K, RANDOM_MAX_K + 1, dtype=torch.float64)
        ky, kx = torch.meshgrid(k, k, indexing="ij")  # (2K+1, 2K+1)
        kk = torch.sqrt(kx**2 + ky**2)
        # in 2D, E(k) ∝ k |û_k|² over a shell and |ω̂_k| = k |û_k|, so |ω̂_k| ∝ sqrt(k E(k))
        amp = kk**2.5 * torch.exp(-((kk / RANDOM_PEAK_K) ** 2))
        amp = torch.where((kk > 0) & (kk <= RANDOM_MAX_K), amp, 0.0)
        g = torch.Generator().manual_seed(self.field_seed)
        c = amp * torch.complex(torch.randn(kk.shape, generator=g, dtype=torch.float64),
                                torch.randn(kk.shape, generator=g, dtype=torch.float64))
        full = torch.zeros(n, n, dtype=torch.complex128)
        full[ky.long() % n, kx.long() % n] = c * n * n
        omega = torch.fft.ifft2(full).real  # Re Σ c_k exp(i k·x)
        energy = kinetic_energy(velocity_field(omega))
        return omega * math.sqrt(0.5 / float(energy))

    def solve(self, t: Tensor, omega0: Tensor | None = None) -> Tensor:
        """Vorticity at the increasing times ``t (T,)`` (``t ≥ 0``), ``(T, n, n)`` float64.

        Starts from ``omega0 (n, n)`` at ``t = 0`` (default :meth:`initial_vorticity`).
        Towards each requested time it takes the fewest equal IF-RK4 steps within the CFL
        limit, re-reading the limit from the field every ``CFL_RECHECK`` steps.

        Raises :class:`conserv_core.integrators.Stopped` within one step once the stop
        check set by :func:`conserv_core.integrators.stopping` says so (a 256² solve takes
        minutes, and it runs inside the first velocity lookup, where no argument reaches).
        """
        g = self.spectral
        w = omega0 if omega0 is not None else self.initial_vorticity()
        w_hat = g.mask * g.forward(w.double().cpu())
        out, now = [], 0.0
        for target in t.detach().double().cpu().tolist():
            if target < now - 1e-12:
                raise ValueError(f"solve needs increasing times >= 0; got {target} after {now}")
            while target > now:
                n_sub = max(1, math.ceil((target - now) / g.max_dt(w_hat)))
                h = (target - now) / n_sub
                for _ in range(min(n_sub, CFL_RECHECK)):
                    integrators.check_stop()
                    w_hat = g.step(w_hat, h, self.viscosity)
                now = target if n_sub <= CFL_RECHECK else now + CFL_RECHECK * h
            out.append(g.inverse(w_hat))
        return torch.stack(out)

    def snapshot_times(self) -> Tensor:
        """``(T,)`` float64: ``0, Δ, 2Δ, …, t_span`` with ``Δ = t_end / (n_snapshots − 1)``."""
        n = round(self.t_span / self.snapshot_dt) + 1
        return torch.arange(n, dtype=torch.float64) * self.snapshot_dt

    def snapshot_vorticity(self) -> tuple[Tensor, Tensor]:
        """Cached solution: ``t (T,)`` and ``omega (T, n, n)``, float64 on CPU (do not modify)."""
        return _solve_cached(self._solve_key())

    def snapshots(self) -> tuple[Tensor, Tensor]:
        """Cached solution as velocities: ``t (T,)`` and ``u (T, 2, n, n)``, float64 on CPU."""
        t, omega = self.snapshot_vorticity()
        return t, velocity_field(omega)

    def _solve_key(self) -> tuple:
        return (self.grid, float(self.viscosity), self.initial, self.field_seed,
                float(self.t_end), self.n_snapshots, float(self.horizon))

    def _coefficients(self, device: torch.device) -> Tensor:
        """Fourier coefficients of ``(u, v, ∇·u)`` for point evaluation, truncated to the
        kept modes, ``(T, 3, Ky, Kx)`` complex128, with the rfft half-plane weights and
        ``1/n²`` folded in so that ``f(x, y) = Re Σ C e^{i(k_x x + k_y y)}``."""
        key = (self._solve_key(), str(device))
        if self._coeff_cache.get("key") != key:
            g = self.spectral
            _, omega = self.snapshot_vorticity()
            uv = g.velocity_hat(g.forward(omega))  # (T, 2, n, m)
            div = g.ikx * uv[:, 0] + g.iky * uv[:, 1]  # (T, n, m): round-off
            c = torch.cat([uv, div[:, None]], 1)  # (T, 3, n, m)
            c, kx, ky = series_coefficients(c, g)  # (T, 3, Ky, Kx)
            self._coeff_cache = {"key": key, "c": c.to(device), "kx": kx.to(device), "ky": ky.to(device)}
            self._last_eval = None
        return self._coeff_cache["c"]

    def _evaluate(self, xy: Tensor, t: Tensor | float) -> Tensor:
        """``(u, v, ∇·u)`` at points: ``xy (B, 2)``, ``t`` float or ``(B,)`` -> ``(B, 3)`` float64.

        :func:`carry` asks for the velocity and then the divergence at the same points and
        time, so the last result is kept and reused when both match (same tensor object,
        unmodified, same float time).
        """
        if xy.dim() != 2 or xy.shape[-1] != 2:
            raise ValueError(f"xy must have shape (B, 2); got {tuple(xy.shape)}")
        c = self._coefficients(xy.device)  # (T, 3, Ky, Kx)
        last = self._last_eval
        if last is not None and last[0] is xy and last[1] == xy._version and isinstance(t, float) and last[2] == t:
            return last[3]
        out = self._series(xy, t, c)
        self._last_eval = (xy, xy._version, t, out) if isinstance(t, float) else None
        return out

    def _series(self, xy: Tensor, t: Tensor | float, c: Tensor) -> Tensor:
        n_t, n_c = c.shape[:2]
        ex, ey = series_phases(xy, self._coeff_cache["kx"], self._coeff_cache["ky"])

        def series(coef: Tensor, sel=slice(None)) -> Tensor:  # coef (c, Ky, Kx) -> (b, c)
            return series_sum(ex[sel], ey[sel], coef)

        scaled = torch.as_tensor(t, dtype=torch.float64, device=xy.device) / self.snapshot_dt
        s = scaled.clamp(0.0, n_t - 1)
        i = s.floor().clamp(max=max(n_t - 2, 0)).long()
        a = s - i
        if s.dim() == 0:
            i0, a0 = int(i), float(a)
            return series((1 - a0) * c[i0] + a0 * c[i0 + 1])
        if s.shape != (xy.shape[0],):
            raise ValueError(f"t must be a float or have shape (B,) = ({xy.shape[0]},); got {tuple(s.shape)}")
        out = torch.empty(xy.shape[0], n_c, dtype=torch.float64, device=xy.device)
        for j in torch.unique(i).tolist():
            sel = (i == j).nonzero().squeeze(-1)
            w = a[sel, None]
            out[sel] = (1 - w) * series(c[j], sel) + w * series(c[j + 1], sel)
        return out

    def velocity(self, xy: Tensor, t: Tensor | float) -> Tensor:
        """The true velocity at arbitrary points: ``xy (B, 2)``, ``t`` float or ``(B,)`` -> ``(B, 2)``.

        Evaluated as the Fourier series of the (de-aliased) snapshots and blended linearly
        in time; returns the dtype and device of ``xy``.
        """
        return self._evaluate(xy, t)[:, :2].to(xy.dtype)

    def divergence(self, xy: Tensor, t: Tensor | float) -> Tensor:
        """``∇·u`` of the true field at points, ``(B, 2) -> (B,)``, evaluated spectrally
        (round-off: the solver's velocity is the curl of a stream function)."""
        return self._evaluate(xy, t)[:, 2].to(xy.dtype)

    def divergence_scale(self) -> float:
        """A scale for ``|∇·u|``: the rms vorticity at ``t = 0`` (equal to the rms of the
        velocity gradient ``⟨|∇u|²⟩^{1/2}`` for an incompressible periodic field)."""
        _, omega = self.snapshot_vorticity()
        return float(omega[0].pow(2).mean().sqrt())

    # -- invariants -----------------------------------------------------------------------
    def invariant_names(self) -> tuple[str, ...]:
        return ("mass", "divergence", "kinetic_energy", "enstrophy")

    def is_conserved(self, name: str) -> bool:
        if name not in self.invariant_names():
            raise ValueError(f"Flow has no invariant {name!r}; valid: {', '.join(self.invariant_names())}")
        return name in ("mass", "divergence") or self.viscosity == 0.0

    def grid_invariants(self, u: Tensor) -> dict[str, Tensor]:
        """Grid-based invariants of velocity grids ``u (..., 2, n, n)``, each ``(...)``:
        rms spectral divergence, kinetic energy, enstrophy (``mass`` needs parcels:
        :meth:`carry`)."""
        return {
            "divergence": grid_divergence(u).pow(2).mean((-2, -1)).sqrt(),
            "kinetic_energy": kinetic_energy(u),
            "enstrophy": enstrophy(vorticity(u)),
        }

    # -- parcels --------------------------------------------------------------------------
    def dye_patch(self, n: int | None = None, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """``n`` (default ``n_parcels``) parcels covering the dye disc uniformly, ``(n, 2)``."""
        return sunflower(self.n_parcels if n is None else n, self.patch_center, self.patch_radius, dtype, device)

    def dye_boundary(self, m: int = 512, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """``m`` points on the dye disc's edge, counter-clockwise, ``(m, 2)``."""
        th = torch.arange(m, dtype=torch.float64) * (TWO_PI / m)
        cx, cy = self.patch_center
        xy = torch.stack([cx + self.patch_radius * torch.cos(th), cy + self.patch_radius * torch.sin(th)], -1)
        return xy.to(dtype=dtype, device=device)

    def carry(self, velocity: PointField | None = None, divergence: PointField | None = None,
              xy0: Tensor | None = None, t0: float = 0.0, horizon: float | None = None,
              dt: float | None = None, method: str = "rk4") -> tuple[Tensor, Tensor, Tensor]:
        """:func:`carry` with this system's defaults: the true field, the dye patch,
        ``horizon`` and ``dt``. Returns ``t (T,)``, ``xy (T, B, 2)``, ``log J (T, B)``."""
        return carry(self.velocity if velocity is None else velocity,
                     self.divergence if divergence is None else divergence,
                     self.dye_patch() if xy0 is None else xy0, t0,
                     self.horizon if horizon is None else horizon, self.dt if dt is None else dt, method)

    mass = staticmethod(mass)
    patch_area = staticmethod(patch_area)
    velocity_field = staticmethod(velocity_field)
    kinetic_energy = staticmethod(kinetic_energy)
    enstrophy = staticmethod(enstrophy)
    grid_divergence = staticmethod(grid_divergence)

    # -- data -----------------------------------------------------------------------------
    def sample_data(self, seed: int = 0, dtype: torch.dtype = torch.float32, device=None,
                    n: int | None = None) -> FieldDataset:
        """Seeded training data: ``n`` (default ``n_samples``) points uniform in
        ``[0, 2π)² × [0, t_end]`` with the true velocity plus Gaussian noise of std ``noise``."""
        n = self.n_samples if n is None else n
        g = torch.Generator().manual_seed(seed)
        xy = TWO_PI * torch.rand(n, 2, generator=g, dtype=torch.float64)
        t = self.t_end * torch.rand(n, generator=g, dtype=torch.float64)
        u = self.velocity(xy, t)
        if self.noise > 0:
            u = u + self.noise * torch.randn(u.shape, generator=g, dtype=torch.float64)
        return FieldDataset(torch.cat([xy, t[:, None]], -1), u).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=4)  # a dashboard flips between a few settings; 256² runs are large
def _solve_cached(key: tuple) -> tuple[Tensor, Tensor]:
    names = ("grid", "viscosity", "initial", "field_seed", "t_end", "n_snapshots", "horizon")
    flow = Flow(**dict(zip(names, key)))
    t = flow.snapshot_times()
    return t, flow.solve(t)
