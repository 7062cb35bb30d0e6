"""The double pendulum with equal masses and equal lengths: chaotic, and the showcase of
the Lagrangian Neural Networks paper.

State ``z = [θ1, θ2, p1, p2]`` of shape ``(B, 4)``: both angles from the downward vertical
(``θ2`` absolute, not relative to the first rod) and their canonical momenta. With
``c = cos(θ1 − θ2)`` the mass matrix is ``M(θ) = m l² [[2, c], [c, 1]]`` and

    L = ½ θ̇ᵀ M(θ) θ̇ − V(θ),         V = m g l (3 − 2 cos θ1 − cos θ2)
    p = M(θ) θ̇,                      H = ½ pᵀ M(θ)⁻¹ p + V(θ)
    dθ/dt = M⁻¹ p
    dp1/dt = −m l² sin(θ1 − θ2) θ̇1 θ̇2 − 2 m g l sin θ1
    dp2/dt = +m l² sin(θ1 − θ2) θ̇1 θ̇2 − m g l sin θ2

(``dp/dt = ∂L/∂θ`` at the velocity ``θ̇ = M⁻¹p``.) ``V`` is zero at rest, so the energy is
never negative and runs up to ``6 m g l`` with both rods upright.

The kinetic energy depends on the angles, so the Hamiltonian is **not separable**:
leapfrog is not symplectic here (``separable = False``); RK4 or implicit midpoint are the
integrators to trust for the truth.

Reference:
    Cranmer, Greydanus, Hoyer, Battaglia, Spergel, Ho, "Lagrangian Neural Networks",
    ICLR 2020 workshop (arXiv:2003.04630), section 4 (m = l = 1, g = 9.8).
"""

from __future__ import annotations

import math
from typing import ClassVar

import param
import torch

from conserv_core.systems.base import ODESystem, Tensor


class DoublePendulum(ODESystem):
    """Double pendulum, equal masses ``m`` and lengths ``l``; canonical state ``[θ, p]``."""

    key: ClassVar[str] = "double_pendulum"
    angle_coords: ClassVar[tuple[int, ...]] = (0, 1)
    title: ClassVar[str] = "Double pendulum (chaotic)"
    separable: ClassVar[bool] = False
    equations: ClassVar[dict[str, str]] = {
        # aligned over two lines: one line is wider than the dashboard's card
        "Lagrangian": (r"\begin{aligned} L &= m l^2\left(\dot\theta_1^2 + \tfrac12\dot\theta_2^2"
                       r" + \dot\theta_1\dot\theta_2\cos(\theta_1-\theta_2)\right) \\"
                       r" &\quad - m g l\,(3 - 2\cos\theta_1 - \cos\theta_2) \end{aligned}"),
        "Momenta": (r"p = M(\theta)\,\dot\theta,\qquad M = m l^2"
                    r"\begin{pmatrix} 2 & \cos(\theta_1-\theta_2) \\ \cos(\theta_1-\theta_2) & 1 \end{pmatrix}"),
        "Hamiltonian": r"H = \tfrac12\, p^\top M(\theta)^{-1} p + m g l\,(3 - 2\cos\theta_1 - \cos\theta_2)",
        "Dynamics": r"\dot\theta = M(\theta)^{-1}p",
        "Dynamics, momenta": (r"\dot p_{1,2} = \mp m l^2 \sin(\theta_1-\theta_2)"
                              r"\,\dot\theta_1\dot\theta_2 - m g l\,(2\sin\theta_1,\ \sin\theta_2)"),
    }
    teaching_note: ClassVar[str] = (
        "Chaotic: two nearby starts part exponentially fast, so no model can follow the true "
        "path for long. Energy is still conserved, and that is what a Lagrangian or "
        "Hamiltonian network can keep while an unconstrained one drifts."
    )
    # the generic LNN learns this chaotic system too slowly for a live run (and its
    # velocity Hessian can turn singular); the mechanical form learns it in ~1 000 steps
    recommended: ClassVar[dict] = dict(lnn_form="mechanical", activation="gelu", batch_size=256)
    time_label: ClassVar[str] = "time t (s)"
    portrait_axes: ClassVar[tuple[str, str] | None] = ("angle of the first rod q1 (rad)",
                                                        "angle of the second rod q2 (rad)")
    # RK4 at 4e-3 keeps the energy to 2e-7 relative per time unit at the default training
    # energies (worst of 400 starts; the typical start 1e-9), far below any model's error,
    # and generates the default data in ~0.2 s (tests/test_double_pendulum.py fits the order)
    reference_dt: ClassVar[float] = 4e-3

    mass = param.Number(default=1.0, bounds=(1e-3, 1e3), doc="Mass m of each bob.")
    length = param.Number(default=1.0, bounds=(1e-2, 1e2), doc="Length l of each rod.")
    gravity = param.Number(default=9.8, bounds=(1e-2, 1e3), doc="Gravitational acceleration g (9.8 as in the LNN paper).")
    max_angle = param.Number(default=math.pi / 2, bounds=(0.0, math.pi), doc=(
        "Training starts: both angles uniform in [−max_angle, max_angle] (π: any angle, as in "
        "the LNN paper's test set)."))
    max_speed = param.Number(default=0.5, bounds=(0.0, 50.0), doc=(
        "Training starts: both angular velocities uniform in [−max_speed, max_speed] (rad per "
        "time unit)."))

    n_traj = param.Integer(default=24, bounds=(1, 10_000), doc="Training trajectories.")
    t_span = param.Number(default=3.0, bounds=(0.1, 1000.0), doc="Length of each training trajectory.")
    n_points = param.Integer(default=30, bounds=(2, 10_000), doc="Samples per training trajectory.")
    dt = param.Number(default=0.01, bounds=(1e-5, 1.0), inclusive_bounds=(False, True),
                      doc="Rollout time step used for evaluation and reference trajectories.")
    horizon = param.Number(default=10.0, bounds=(0.1, 10_000.0), doc="Evaluation rollout length (time units).")

    @property
    def dof(self) -> int:
        return 2

    @param.depends("mass", "length", "gravity", watch=True, on_init=True)
    def _cache_constants(self) -> None:
        # plain floats for the hot path (a param attribute read costs ~10 µs)
        self._ml2 = self.mass * self.length**2
        self._mgl = self.mass * self.gravity * self.length

    # -- physics ------------------------------------------------------------------------
    def velocity(self, z: Tensor) -> Tensor:
        """``θ̇ = M(θ)⁻¹ p``: ``(B, 4) -> (B, 2)``."""
        c = torch.cos(z[..., 0] - z[..., 1])
        p1, p2 = z[..., 2], z[..., 3]
        det = self._ml2 * (2 - c * c)  # (B,), ≥ m l² since c² ≤ 1
        return torch.stack([(p1 - c * p2) / det, (2 * p2 - c * p1) / det], -1)

    def momentum(self, q: Tensor, qdot: Tensor) -> Tensor:
        """``p = M(θ) θ̇``: ``(B, 2), (B, 2) -> (B, 2)``."""
        c = torch.cos(q[..., 0] - q[..., 1])
        w1, w2 = qdot[..., 0], qdot[..., 1]
        return self._ml2 * torch.stack([2 * w1 + c * w2, c * w1 + w2], -1)

    def vector_field(self, z: Tensor, t=None) -> Tensor:
        # written out (not via velocity()) to keep the op count, hence the per-call
        # overhead that dominates small batches, low: this is the reference solver's hot path
        d = z[..., 0] - z[..., 1]
        c, s = torch.cos(d), torch.sin(d)
        p1, p2 = z[..., 2], z[..., 3]
        inv = 1 / (self._ml2 * (2 - c * c))
        w1, w2 = (p1 - c * p2) * inv, (2 * p2 - c * p1) * inv
        coupling = self._ml2 * s * w1 * w2
        sin_th = torch.sin(z[..., :2])
        return torch.stack([w1, w2, -coupling - 2 * self._mgl * sin_th[..., 0],
                            coupling - self._mgl * sin_th[..., 1]], -1)

    def acceleration(self, q: Tensor, qdot: Tensor) -> Tensor:
        """``θ̈`` from the Euler–Lagrange equations in closed form: ``(B, 2), (B, 2) -> (B, 2)``.

        ``M θ̈ = f`` with ``f = (−s θ̇2² − 2 (g/l) sin θ1, s θ̇1² − (g/l) sin θ2)``,
        ``s = sin(θ1 − θ2)``, solved with ``det [[2, c], [c, 1]] = 2 − c²``.
        """
        d = q[..., 0] - q[..., 1]
        c, s = torch.cos(d), torch.sin(d)
        w1, w2 = qdot[..., 0], qdot[..., 1]
        g_l = self.gravity / self.length
        f1 = -s * w2 * w2 - 2 * g_l * torch.sin(q[..., 0])
        f2 = s * w1 * w1 - g_l * torch.sin(q[..., 1])
        det = 2 - c * c
        return torch.stack([(f1 - c * f2) / det, (2 * f2 - c * f1) / det], -1)

    def potential(self, q: Tensor) -> Tensor:
        """``V(θ) = m g l (3 − 2 cos θ1 − cos θ2)``, zero at rest: ``(B, 2) -> (B,)``."""
        return self._mgl * (3 - 2 * torch.cos(q[..., 0]) - torch.cos(q[..., 1]))

    def energy(self, z: Tensor) -> Tensor:
        c = torch.cos(z[..., 0] - z[..., 1])
        p1, p2 = z[..., 2], z[..., 3]
        kinetic = (p1 * p1 - 2 * c * p1 * p2 + 2 * p2 * p2) / (2 * self._ml2 * (2 - c * c))
        return kinetic + self.potential(z[..., :2])

    def invariant_scale(self, name: str, z0: Tensor) -> Tensor:
        # E(0) ≈ 0 for a start near rest at the bottom: never divide by less than 1% of
        # 3 m g l (the largest |V| with the pivot as reference, the LNN paper's scale)
        return self.energy(z0).abs().clamp_min(0.03 * max(self._mgl, 1e-12))

    def lagrangian(self, q: Tensor, qdot: Tensor) -> Tensor:
        c = torch.cos(q[..., 0] - q[..., 1])
        w1, w2 = qdot[..., 0], qdot[..., 1]
        kinetic = self._ml2 * (w1 * w1 + 0.5 * w2 * w2 + c * w1 * w2)
        return kinetic - self.potential(q)

    # -- data ---------------------------------------------------------------------------
    def sample_initial(self, n: int, seed: int = 0, scale: float = 1.0,
                       dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Angles uniform in ``±min(max_angle·scale, π)``, angular velocities uniform in
        ``±max_speed·scale``, converted to momenta.

        ``scale > 1`` means wider swings and faster starts: higher energies, up to rods
        that go over the top, which no training trajectory did.
        """
        g = torch.Generator().manual_seed(seed)
        a = min(self.max_angle * scale, math.pi)
        theta = a * (2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1)
        omega = self.max_speed * scale * (2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1)
        z = torch.cat([theta, self.momentum(theta, omega)], -1)
        return z.to(dtype=dtype, device=device)
