"""The ideal (optionally damped) pendulum.

State ``z = [q, p]`` of shape ``(B, 2)``: angle from the downward vertical and angular
momentum ``p = m l² q̇``.

    H(q, p) = p² / (2 m l²) + m g l (1 − cos q)
    dq/dt = p / (m l²),    dp/dt = −m g l sin q − b p

With damping ``b > 0`` energy decays (dE/dt = −b p²/(m l²) ≤ 0): a hard energy
constraint is then *wrong*, which is the point of offering it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import param
import torch

from conserv_core import integrators
from conserv_core.systems.base import ODESystem, Tensor


class Pendulum(ODESystem):
    """Ideal pendulum ``H = p²/(2ml²) + mgl(1 − cos q)``, optional linear damping."""

    key: ClassVar[str] = "pendulum"
    angle_coords: ClassVar[tuple[int, ...]] = (0,)
    title: ClassVar[str] = "Pendulum"
    equations: ClassVar[dict[str, str]] = {
        "Hamiltonian": r"H(q,p) = \frac{p^2}{2ml^2} + mgl\,(1-\cos q)",
        "Dynamics": r"\dot q = \frac{p}{ml^2},\qquad \dot p = -mgl\sin q - b\,p",
        "Energy balance": r"\frac{dH}{dt} = -\frac{b\,p^2}{ml^2} \le 0",
    }
    teaching_note: ClassVar[str] = (
        "Energy is the conserved quantity. An unconstrained network's orbits slowly spiral "
        "in or out in the phase portrait; a Hamiltonian network's stay closed. Turn on "
        "damping and the hard constraint becomes wrong: it cannot lose energy."
    )
    recommended: ClassVar[dict] = dict(steps=1500, lr=3e-3, width=64)
    demo: ClassVar[dict] = dict(steps=600, width=48, lr=5e-3)
    time_label: ClassVar[str] = "time t (s)"
    portrait_axes: ClassVar[tuple[str, str] | None] = ("angle q (rad)", "angular momentum p (kg·m²/s)")
    look_for: ClassVar[str] = (
        "Look at the energy-drift plot: the baseline's line climbs over time, the HNN stays close to "
        "the truth; in the phase portrait the baseline's orbits spiral while the HNN's stay closed."
    )
    controls: ClassVar[tuple[str, ...] | None] = ("mass", "length", "gravity", "damping")
    # RK4 at dt = 0.01 is accurate to ~1e-9 here; the data are sampled every 0.2
    reference_dt: ClassVar[float] = 1e-2

    mass = param.Number(softbounds=(0.1, 5.0), step=0.1, label="Bob mass m (kg)",
                        default=1.0, bounds=(1e-3, 1e3), inclusive_bounds=(True, True), doc="Bob mass m.")
    length = param.Number(softbounds=(0.2, 5.0), step=0.1, label="Rod length l (m)",
                          default=1.0, bounds=(1e-2, 1e2), doc="Rod length l.")
    gravity = param.Number(softbounds=(1.0, 25.0), step=0.1, label="Gravity g (m/s²)",
                           default=9.81, bounds=(1e-2, 1e3), doc="Gravitational acceleration g.")
    damping = param.Number(softbounds=(0.0, 1.0), step=0.01, label="Damping b (1/s)",
                           default=0.0, bounds=(0.0, 10.0),
                           doc="Linear damping b ≥ 0 on the momentum (0: energy is conserved).")
    noise = param.Number(default=0.05, bounds=(0.0, 10.0),
                         doc="Std of Gaussian noise added to training states (measurement noise).")
    dt = param.Number(default=0.1, bounds=(1e-5, 1.0), inclusive_bounds=(False, True),
                      doc="Evaluation rollout step (RK4 at 0.1 keeps the truth's own energy drift "
                          "near 2e-3 over the default horizon, well below any learned model's).")
    energy_band = param.Range(default=(0.1, 0.8), bounds=(0.0, 1.0),
                              doc="Training energies as a fraction of the separatrix energy 2mgl.")

    @property
    def dof(self) -> int:
        return 1

    @param.depends("mass", "length", "gravity", "damping", watch=True, on_init=True)
    def _cache_constants(self) -> None:
        # plain floats for the hot path: a param attribute read costs ~10 µs
        self._inertia = self.mass * self.length**2
        self._mgl = self.mass * self.gravity * self.length
        self._b = self.damping

    @property
    def inertia(self) -> float:
        return self._inertia

    def vector_field(self, z: Tensor, t=None) -> Tensor:
        q, p = z[..., :1], z[..., 1:]
        dq = p / self._inertia
        dp = -self._mgl * torch.sin(q) - self._b * p
        return torch.cat([dq, dp], -1)

    def energy(self, z: Tensor) -> Tensor:
        q, p = z[..., 0], z[..., 1]
        return p**2 / (2 * self._inertia) + self._mgl * (1 - torch.cos(q))

    def energy_gradient(self, z: Tensor) -> Tensor:
        q, p = z[..., :1], z[..., 1:]
        return torch.cat([self._mgl * torch.sin(q), p / self._inertia], -1)

    def potential_derivatives(self, q: Tensor, hessian: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """``V = mgl (1 − cos q)``, ``∇V = mgl sin q`` and ``∇²V = mgl cos q`` for
        ``q (B, 1)``: ``(B,)``, ``(B, 1)``, ``(B, 1, 1)`` (None unless ``hessian``)."""
        c = torch.cos(q)
        return (self._mgl * (1.0 - c[:, 0]), self._mgl * torch.sin(q),
                (self._mgl * c).unsqueeze(-1) if hessian else None)

    def separable_energy(self) -> integrators.SeparableEnergy:
        """``H = p²/(2ml²) + V(q)`` with the constant ``R_pp = b m l²``: the discrete
        gradient's Newton solve applies, damped or not."""
        r_pp = None if self._b == 0.0 else [[self._b * self._inertia]]
        return integrators.SeparableEnergy((1.0 / self._inertia,), self.potential_derivatives, r_pp)

    def dissipation(self, z: Tensor) -> Tensor | None:
        """``R = diag(0, b m l²)``: with ``∂H/∂p = p/(ml²)`` it gives the damping ``−b p``."""
        if self._b == 0.0:
            return None
        r = torch.zeros(z.shape[0], 2, 2, dtype=z.dtype, device=z.device)
        r[:, 1, 1] = self._b * self._inertia
        return r

    def is_conserved(self, name: str) -> bool:
        return self.damping == 0.0

    def invariant_scale(self, name: str, z0: Tensor) -> Tensor:
        # E(0) can be ~0 for a pendulum at rest; never divide by less than 1% of mgl.
        floor = 0.01 * max(self.mass * self.gravity * self.length, 1e-12)
        return self.energy(z0).abs().clamp_min(floor)

    def lagrangian(self, q: Tensor, qdot: Tensor) -> Tensor:
        # T − V with the same V as energy(), so that p q̇ − L is exactly H (not H − mgl)
        potential = self.mass * self.gravity * self.length * (1 - torch.cos(q))
        return (0.5 * self.inertia * qdot**2 - potential).sum(-1)

    def momentum(self, q: Tensor, qdot: Tensor) -> Tensor:
        return self.inertia * qdot

    def period(self, amplitude: float = 0.0) -> float:
        """Exact period for amplitude ``q_max`` (complete elliptic integral K(sin(q_max/2))).

        Only librating orbits have one: ``|amplitude| < π`` (at π the period is infinite).
        """
        if not abs(amplitude) < math.pi:
            raise ValueError(f"amplitude must be in (-π, π) for a periodic swing; got {amplitude!r}")
        k = math.sin(amplitude / 2)
        # arithmetic–geometric mean: K(k) = π / (2 AGM(1, sqrt(1 - k²)))
        a, b = 1.0, math.sqrt(1 - k * k)
        for _ in range(60):
            a, b = 0.5 * (a + b), math.sqrt(a * b)
        return 4 * math.sqrt(self.length / self.gravity) * math.pi / (2 * a)

    def sample_initial(self, n: int, seed: int = 0, scale: float = 1.0,
                       dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Energies uniform in ``energy_band × 2mgl × scale``; on each orbit the angle is
        uniform between the turning points (within ±0.999 π for a rotating orbit) and the
        sense of motion random.

        At ``scale = 1`` every orbit librates (below the separatrix). Large ``scale`` gives
        energies above ``2mgl``: the pendulum goes over the top, which no training orbit did.
        """
        g = torch.Generator().manual_seed(seed)
        mgl = self.mass * self.gravity * self.length
        lo, hi = self.energy_band
        e = (lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)) * 2 * mgl * scale
        # q on the level set: |q| <= turning angle (or any angle if the orbit rotates)
        cos_turn = (1 - e / max(mgl, 1e-300)).clamp(-1.0, 1.0)
        q_turn = torch.arccos(cos_turn)
        q = (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1) * q_turn * 0.999
        kinetic = (e - mgl * (1 - torch.cos(q))).clamp_min(0.0)
        sign = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
        p = sign * torch.sqrt(2 * self.inertia * kinetic)
        return torch.stack([q, p], -1).to(dtype=dtype, device=device)
