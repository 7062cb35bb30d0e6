"""Port-Hamiltonian neural network: dissipation by structure.

Learn an energy ``H_θ(q, p)`` and a dissipation ``R_θ(z) ⪰ 0``, and move along

    ż = (J − R_θ(z)) ∇H_θ(z),     R_θ = [[0, 0], [0, D_θ(z)]],   D_θ = s_R · L_θ L_θᵀ,

with ``L_θ(z)`` a lower-triangular ``dof × dof`` matrix read from a small network, its
diagonal through a softplus (positive: the unique Cholesky factor, so ``D_θ ≻ 0``). The
damping acts on the momenta only (``ṗ = −∂H/∂q − D ∂H/∂p``), as friction does in
mechanics. Then, for any weights and at any state,

    dH_θ/dt = ∇H_θᵀ (J − R_θ) ∇H_θ = −∇H_θᵀ R_θ ∇H_θ = −|L_θᵀ ∂H_θ/∂p|² s_R ≤ 0:

the learned energy can only fall, at a rate the model learns. ``R_θ = 0`` is the HNN. On a
damped pendulum this is the hard constraint that is *right*: the HNN cannot lose energy,
the baseline can gain it. The discrete-gradient rollout (:attr:`PortHamiltonianNN.gradient_form`)
keeps ``H_θ`` non-increasing in every step too.

References:
    van der Schaft, Jeltsema, "Port-Hamiltonian Systems Theory: An Introductory
    Overview", Found. Trends Syst. Control 1 (2014).
    Desai, Mattheakis, Sondak, Protopapas, Roberts, "Port-Hamiltonian neural networks
    for learning explicit time-dependent dynamical systems", Phys. Rev. E 104 (2021).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from conserv_core import integrators
from conserv_core.models import mlp
from conserv_core.models.base import Cost
from conserv_core.models.hamiltonian import HamiltonianNN

Tensor = torch.Tensor


class PortHamiltonianNN(HamiltonianNN):
    """``ż = (J − R_θ)∇H_θ`` with ``R_θ ⪰ 0`` by construction: ``(B, 2·dof) -> (B, 2·dof)``.

    The energy network and its scales are the HNN's (:class:`HamiltonianNN`); the
    dissipation network reads the same standardised state and gives the ``dof(dof+1)/2``
    entries of ``L_θ``. Its scale ``s_R`` (:meth:`set_scales`) is a tenth of
    ``σ(ṗ)/σ(q̇)``, the size of a damping that would explain all of ``ṗ``: an untrained
    model starts lightly damped and learns how much friction the data show.
    """

    kind: ClassVar[str] = "ode"
    coords: ClassVar[str] = "canonical"
    default_activation: ClassVar[str] = "tanh"
    #: an HNN's, less 'conserves_learned_energy': its energy may fall
    capabilities: ClassVar[frozenset[str]] = frozenset({"learned_energy", "gradient_form"})

    @classmethod
    def cost_per_state(cls, system) -> Cost:
        """The HNN's, plus a dissipation network with dof(dof+1)/2 outputs and the
        product ``R∇H = L(Lᵀ∇H)``: it grows with D². Measured (benchmarks/bench_budget.py,
        one core, width 128): rollout 5.2 units at D = 8, 6.0 at 32, 8.3 at 64; training
        3.6, 5.9, 13."""
        d = system.state_dim
        return Cost(rollout=5.1 + 7.7e-4 * d * d, train=3.6 + 2.3e-3 * d * d, why=f"state_dim={d}")

    def __init__(self, state_dim: int, width: int = 64, depth: int = 2, activation: str = "tanh"):
        super().__init__(state_dim, width=width, depth=depth, activation=activation)
        dof = state_dim // 2
        self.dof = dof
        self.diss_net = mlp.make_mlp(state_dim, dof * (dof + 1) // 2, max(4, width // 2), 1, activation)
        self.register_buffer("r_scale", torch.ones(()))
        rows, cols = torch.tril_indices(dof, dof)
        self.register_buffer("tril_rows", rows, persistent=False)
        self.register_buffer("tril_cols", cols, persistent=False)

    @torch.no_grad()
    def set_scales(self, x: Tensor, y: Tensor) -> None:
        """The HNN's scales, and ``s_R = 0.1 · mean σ(ṗ_i)/σ(q̇_i)``."""
        super().set_scales(x, y)
        sy = mlp.spread(y)
        ratio = (sy[self.dof:] / sy[: self.dof].clamp_min(1e-12)).mean()
        self.r_scale.copy_(0.1 * ratio)

    def damping(self, z: Tensor) -> Tensor:
        """``D_θ(z) = s_R L_θ L_θᵀ``, symmetric positive semi-definite: ``(B, 2·dof) -> (B, dof, dof)``."""
        entries = self.diss_net((z - self.x_mean) / self.x_std)  # (B, dof(dof+1)/2)
        # a positive diagonal (softplus): the unique Cholesky factor, so D_θ ≻ 0 everywhere.
        # With a free sign, L_θ could cross zero where the data cannot see D_θ (the turning
        # points, ∂H/∂p ≈ 0, where friction does no work) and training parks that zero set
        # there: a low swing, whose |p| is small all along, was then left nearly undamped.
        diag = self.tril_rows == self.tril_cols
        entries = torch.where(diag, torch.nn.functional.softplus(entries), entries)
        lower = entries.new_zeros(z.shape[0], self.dof, self.dof)
        lower[:, self.tril_rows, self.tril_cols] = entries
        return self.r_scale * (lower @ lower.mT)

    def dissipation(self, z: Tensor) -> Tensor:
        """The full ``R_θ(z) = [[0, 0], [0, D_θ(z)]]``, ``(B, 2·dof, 2·dof)``."""
        d = self.dof
        r = z.new_zeros(z.shape[0], 2 * d, 2 * d)
        r[:, d:, d:] = self.damping(z)
        return r

    @property
    def gradient_form(self) -> integrators.GradientForm:
        """The model as ``ż = (J − R_θ)∇H_θ``, for the discrete-gradient rollout."""
        return integrators.GradientForm(self.hamiltonian, self.dissipation)

    def dissipated_power(self, z: Tensor) -> Tensor:
        """``−dH_θ/dt = ∇H_θᵀ R_θ ∇H_θ ≥ 0`` at ``z``: ``(B, 2·dof) -> (B,)``."""
        dh_p = mlp.input_gradient(self.hamiltonian, z, False)[..., self.dof:]  # (B, dof)
        return (dh_p.unsqueeze(1) @ self.damping(z) @ dh_p.unsqueeze(-1)).reshape(-1)

    @mlp.escape_inference_mode
    def forward(self, z: Tensor, t=None) -> Tensor:
        """``z (B, 2·dof) -> (J − R_θ)∇H_θ(z)``; ``t`` is ignored (autonomous)."""
        d = self.dof
        dh = mlp.input_gradient(self.hamiltonian, z)  # (B, 2·dof) = [∂H/∂q, ∂H/∂p]
        dh_q, dh_p = dh[..., :d], dh[..., d:]
        friction = (self.damping(z) @ dh_p.unsqueeze(-1)).squeeze(-1)  # (B, dof)
        return torch.cat([dh_p, -dh_q - friction], -1)
