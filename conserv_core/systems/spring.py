"""The ideal mass-spring (harmonic oscillator): the simplest conservative system, and
task 1 of the Hamiltonian Neural Networks paper.

State ``z = [q, p]`` of shape ``(B, 2)``: displacement and momentum ``p = m q̇``.

    H(q, p) = p² / (2m) + k q² / 2
    dq/dt = p / m,    dp/dt = −k q

The flow is a rotation in the plane of the normalised coordinates ``Q = q √(k/2)``,
``P = p / √(2m)``, where ``H = Q² + P²``; the solution is known in closed form
(:meth:`Spring.exact_solution`), so the reference rollouts here are exact.

``k = 2, m = 1/2`` gives the paper's ``H = q² + p²`` (its public code; the text says
``k = m = 1``, i.e. half that Hamiltonian, which has the same orbits at half the speed).

Reference:
    Greydanus, Dzamba, Yosinski, "Hamiltonian Neural Networks", NeurIPS 2019, task 1.
"""

from __future__ import annotations

import math
from typing import ClassVar

import param
import torch

from conserv_core.systems.base import ODESystem, Tensor


class Spring(ODESystem):
    """Ideal mass-spring ``H = p²/(2m) + k q²/2``."""

    key: ClassVar[str] = "spring"
    title: ClassVar[str] = "Mass-spring"
    equations: ClassVar[dict[str, str]] = {
        "Hamiltonian": r"H(q,p) = \frac{p^2}{2m} + \frac{k\,q^2}{2}",
        "Dynamics": r"\dot q = \frac{p}{m},\qquad \dot p = -k\,q",
        "Exact solution": (r"q(t) = q_0\cos\omega t + \frac{p_0}{m\omega}\sin\omega t,"
                           r"\qquad \omega = \sqrt{k/m}"),
    }
    teaching_note: ClassVar[str] = (
        "The simplest conservation law: orbits are ellipses of constant energy. Even here "
        "an unconstrained network's orbits spiral slowly in or out over long rollouts, "
        "while a Hamiltonian network's stay closed (HNN paper, task 1)."
    )
    time_label: ClassVar[str] = "time t (s)"
    portrait_axes: ClassVar[tuple[str, str] | None] = ("displacement q (m)", "momentum p (kg·m/s)")

    mass = param.Number(default=1.0, bounds=(1e-3, 1e3), doc="Mass m.")
    k = param.Number(default=1.0, bounds=(1e-3, 1e3), doc="Spring constant k.")
    radius_band = param.Range(default=(0.1, 1.0), bounds=(0.0, 10.0), doc=(
        "Training orbits: radius r = sqrt(H) uniform in this band (H = r², i.e. the radius "
        "of the orbit's circle in the normalised plane q·sqrt(k/2), p/sqrt(2m); with k = 2, "
        "m = 1/2 that is the (q, p) plane itself, as in the HNN paper)."))

    @property
    def dof(self) -> int:
        return 1

    @property
    def omega(self) -> float:
        """Angular frequency ``sqrt(k/m)``."""
        return math.sqrt(self.k / self.mass)

    def vector_field(self, z: Tensor, t=None) -> Tensor:
        q, p = z[..., :1], z[..., 1:]
        return torch.cat([p / self.mass, -self.k * q], -1)

    def energy(self, z: Tensor) -> Tensor:
        q, p = z[..., 0], z[..., 1]
        return p**2 / (2 * self.mass) + 0.5 * self.k * q**2

    def invariant_scale(self, name: str, z0: Tensor) -> Tensor:
        # an orbit near the origin has E(0) ≈ 0: never divide by less than 1% of the
        # energy at the band's outer radius
        floor = 0.01 * max(self.radius_band[1], 1e-6) ** 2
        return self.energy(z0).abs().clamp_min(floor)

    def lagrangian(self, q: Tensor, qdot: Tensor) -> Tensor:
        return (0.5 * self.mass * qdot**2 - 0.5 * self.k * q**2).sum(-1)

    def momentum(self, q: Tensor, qdot: Tensor) -> Tensor:
        return self.mass * qdot

    def velocity(self, z: Tensor) -> Tensor:
        return z[..., 1:] / self.mass

    def exact_solution(self, z0: Tensor, t: Tensor) -> Tensor:
        """Closed-form trajectories at the times ``t (T,)``: ``z0 (B, 2) -> (T, B, 2)``."""
        w = self.omega
        wt = (w * t.to(z0.dtype)).reshape(-1, 1)  # (T, 1)
        c, s = torch.cos(wt), torch.sin(wt)
        q0, p0 = z0[:, 0], z0[:, 1]  # (B,)
        q = q0 * c + p0 / (self.mass * w) * s
        p = p0 * c - self.mass * w * q0 * s
        return torch.stack([q, p], -1)

    def reference_rollout(self, z0: Tensor, t: Tensor) -> Tensor:
        """Exact (closed form), see :meth:`exact_solution`."""
        return self.exact_solution(z0, t.to(device=z0.device))

    def sample_initial(self, n: int, seed: int = 0, scale: float = 1.0,
                       dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Radii ``r = sqrt(H)`` uniform in ``radius_band × scale``, phase uniform on the
        orbit. ``scale > 1`` gives larger orbits than any training one (energies × scale²).
        """
        g = torch.Generator().manual_seed(seed)
        lo, hi = self.radius_band
        r = (lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)) * scale
        phase = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
        q = r * torch.cos(phase) * math.sqrt(2 / self.k)
        p = r * torch.sin(phase) * math.sqrt(2 * self.mass)
        return torch.stack([q, p], -1).to(dtype=dtype, device=device)
